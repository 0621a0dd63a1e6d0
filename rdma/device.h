// The one device interface the SMC engine is written against. It is shaped like
// libibverbs (memory regions, RC queue pairs, completion queues with a pollable
// notification fd) so that the same engine code runs over real RDMA (`verbs`) and over
// the same-host shared-memory device (`shm`), which emulates RC semantics including a
// bounded receive queue and RNR.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace smcpre::rdma {

using Gid = std::array<uint8_t, 16>;
using Mac = std::array<uint8_t, 6>;

// IB path MTU enumeration, as carried in the low nibble of CLC Accept/Confirm.
enum class PathMtu : uint8_t { k256 = 1, k512 = 2, k1024 = 3, k2048 = 4, k4096 = 5 };
// The largest path MTU not above `bytes` (256 at least).
inline PathMtu path_mtu_at_most(uint32_t bytes) {
  if (bytes >= 4096) return PathMtu::k4096;
  if (bytes >= 2048) return PathMtu::k2048;
  if (bytes >= 1024) return PathMtu::k1024;
  if (bytes >= 512) return PathMtu::k512;
  return PathMtu::k256;
}

enum class WcStatus : uint8_t {
  kSuccess,
  kLocalLengthError,
  kLocalProtectionError,
  kFlushError,         // the QP went to error; outstanding work is flushed
  kRemoteAccessError,  // bad rkey / out-of-range RDMA WRITE
  kRetryExceeded,      // transport retry count exceeded (peer gone)
  kRnrRetryExceeded,   // receiver not ready, retry count exceeded
  kGeneralError,
};
inline constexpr size_t kWcStatusCount = 8;
const char* to_string(WcStatus status);

enum class WcOpcode : uint8_t { kSend, kRdmaWrite, kRecv };

struct WorkCompletion {
  uint64_t wr_id = 0;
  WcStatus status = WcStatus::kSuccess;
  WcOpcode opcode = WcOpcode::kSend;
  uint32_t byte_len = 0;  // bytes received, for kRecv
};

// What one side tells the other (in CLC Accept/Confirm) so the QPs can be connected.
struct QpEndpoint {
  Gid gid{};
  Mac mac{};
  uint32_t qp_num = 0;  // 24 bits
  uint32_t psn = 0;     // 24 bits, initial packet sequence number
  PathMtu mtu = PathMtu::k1024;
};

// A peer's memory region as learned from CLC: the target of RDMA WRITEs.
struct RemoteRegion {
  uint64_t addr = 0;
  uint32_t rkey = 0;
  uint32_t length = 0;
};

// Memory registered with a protection domain. The device allocates it (page-aligned,
// zeroed, MADV_DONTFORK) so that both devices can share or pin it; destroying the
// object deregisters and frees it.
class MemoryRegion {
 public:
  virtual ~MemoryRegion() = default;
  void* addr() const { return addr_; }
  size_t length() const { return length_; }
  uint32_t lkey() const { return lkey_; }
  uint32_t rkey() const { return rkey_; }
  // The address the peer names in RDMA WRITEs (the registering process's virtual
  // address, as with verbs).
  uint64_t remote_addr() const { return reinterpret_cast<uint64_t>(addr_); }

 protected:
  void* addr_ = nullptr;
  size_t length_ = 0;
  uint32_t lkey_ = 0;
  uint32_t rkey_ = 0;
};

struct QpConfig {
  uint32_t send_depth = 256;  // work requests the send queue holds
  uint32_t recv_depth = 64;   // receive buffers the receive queue holds
  uint32_t max_inline = 64;   // bytes a SEND may carry inline
  uint8_t rnr_retry = 7;      // 7 = retry forever (IB semantics)
  uint8_t min_rnr_timer = 5;  // IB code: 5 = 0.06 ms
  uint8_t retry_count = 7;
  uint8_t timeout = 15;  // IB local ACK timeout code
  PathMtu mtu = PathMtu::k1024;
};

enum class Role : uint8_t { kClient, kServer };

struct QpCounters {
  std::atomic<uint64_t> rnr_events{0};   // our SENDs that met an empty peer receive queue
  std::atomic<uint64_t> rnr_retries{0};  // retries made after an RNR
  std::atomic<uint64_t> sends{0};
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> write_bytes{0};
  std::atomic<uint64_t> recvs{0};
};

// A reliable-connected queue pair with its own send and receive completion queues.
// Thread safety: post_send/post_write may be called from several threads only under the
// caller's send lock; post_recv/poll_recv from one thread at a time; poll_send likewise.
class QueuePair {
 public:
  virtual ~QueuePair() = default;

  virtual QpEndpoint local_endpoint() const = 0;

  // INIT -> RTR -> RTS towards `remote`. The client calls this after CLC Accept (before
  // sending Confirm), the server after CLC Confirm. Must not wait for the peer's own
  // connect call beyond what the device needs; bounded by timeout_ms.
  virtual bool connect(const QpEndpoint& remote, Role role, int timeout_ms, std::string* error) = 0;

  // Makes a peer region usable as a WRITE target (shm: maps it; verbs: nothing to do).
  // Validates that the range is one the peer registered.
  virtual bool prepare_remote_region(const RemoteRegion& region, int timeout_ms,
                                     std::string* error) = 0;

  // Posting returns 0, EAGAIN when the send queue is full (poll_send, then retry), or
  // another errno when the QP is in error. Unsignaled work produces a completion only
  // on error. RC ordering holds: a SEND posted after a WRITE is delivered after it.
  virtual int post_write(const void* local, uint32_t length, uint32_t lkey, uint64_t remote_addr,
                         uint32_t rkey, uint64_t wr_id, bool signaled) = 0;
  virtual int post_send_inline(const void* data, uint32_t length, uint64_t wr_id,
                               bool signaled) = 0;
  virtual int post_recv(void* buffer, uint32_t length, uint32_t lkey, uint64_t wr_id) = 0;
  // A message longer than its receive buffer (SMC-Rv2's LLC messages reach 8 KiB, CDC and
  // LLC v1 are 44 bytes) continues in one shared overflow region: every receive posted
  // after this call scatters its bytes past `length` there, and byte_len counts them all.
  // As in the kernel (one v2 receive buffer per link), the region holds one long message
  // at a time: the peer's LLC flow control sends one long request or reply, then waits.
  // false: the device cannot (the caller keeps receives of one buffer).
  virtual bool set_recv_overflow(void* region, uint32_t length, uint32_t lkey) = 0;

  // Reap up to out.size() completions; returns how many (0 when none). For the shm
  // device these calls also drive the emulated HCA (RNR retries that fell due).
  virtual int poll_send(std::span<WorkCompletion> out) = 0;
  virtual int poll_recv(std::span<WorkCompletion> out) = 0;

  // A pollable fd that turns readable after arm_recv_notify() once a receive completion
  // or a signaled send completion is available or the QP went to error (an engine that
  // waits for send completions to reuse its send buffers sleeps on it too).
  // consume_notify() resets it.
  virtual int notify_fd() const = 0;
  virtual void arm_recv_notify() = 0;
  virtual void consume_notify() = 0;

  // CLOCK_MONOTONIC nanoseconds by which poll_send must be called again to make
  // progress (an RNR retry), or -1 if nothing is pending.
  virtual int64_t next_deadline_ns() const = 0;

  virtual bool in_error() const = 0;
  virtual const QpCounters& counters() const = 0;
  // Receive buffers currently posted and not yet consumed.
  virtual uint32_t posted_recvs() const = 0;
};

class ProtectionDomain {
 public:
  virtual ~ProtectionDomain() = default;
  virtual std::unique_ptr<MemoryRegion> register_memory(size_t length, std::string* error) = 0;
  // Registers memory the caller owns (it must outlive the region) for local access only:
  // receive buffers, which the device fills and no peer may address. Several protection
  // domains may register the same memory (the process-wide receive buffer pool).
  virtual std::unique_ptr<MemoryRegion> register_local(void* addr, size_t length,
                                                       std::string* error) = 0;
  virtual std::unique_ptr<QueuePair> create_qp(const QpConfig& config, std::string* error) = 0;
};

// What a device is, for what it shows users (smcpre-stat's path and device columns).
enum class DeviceKind : uint8_t { kShm, kVerbs };

struct DeviceCaps {
  DeviceKind kind = DeviceKind::kVerbs;
  // Each SEND that met an empty receive queue at the peer is counted in the QP's stats
  // (shm emulates RNR in software); an RDMA adapter retries RNR in hardware, uncounted.
  bool reports_rnr = false;
  // WRITE sources need no registration and are consumed by the time post_write returns
  // (shm): the engine may then write straight from the application's buffer.
  bool write_from_any_memory = false;
  uint32_t max_inline = 0;
  // The peer process's exit takes the link down at once (shm: the rendezvous socket
  // hangs up), so a connection needs no watch on its TCP socket to learn of it.
  bool link_notices_peer_exit = false;
  // The device's GID is a RoCE v2 one (routable, IPv4-mapped for IPv4): SMC-R version 2,
  // which carries it in its own CLC field. Version 1 is for RoCE v1 GIDs, and for shm.
  bool roce_v2_gid = false;
};

class Device {
 public:
  virtual ~Device() = default;
  virtual std::string name() const = 0;
  virtual DeviceCaps caps() const = 0;
  virtual Gid gid() const = 0;
  virtual Mac mac() const = 0;
  virtual std::unique_ptr<ProtectionDomain> alloc_pd(std::string* error) = 0;
  // Device-level (affiliated and unaffiliated) asynchronous events: a pollable fd, -1 if
  // the device has none, and the handler the progress thread calls when it is readable.
  // The handler logs each event by name, counts it, and puts the QP of a fatal QP event
  // into error (its links then go down through their flushed completions).
  virtual int async_fd() const { return -1; }
  virtual void handle_async_events() {}
};

struct ShmOptions {
  // uids besides our own and root's whose processes may attach (SO_PEERCRED check), or
  // any uid at all.
  std::span<const uint32_t> allowed_uids;
  bool any_uid = false;
  // How long a client's rendezvous hello waits for a server QP to claim it: the CLC
  // handshake timeout, after which no server can claim it any more. 0: 30 s.
  int handshake_timeout_ms = 0;
  // Report write_from_any_memory = false, as a verbs device does, so that the engine's
  // registered-send-buffer path can be tested without RDMA hardware.
  bool staged_writes = false;
};

// The same-host shared-memory device. One per process.
std::unique_ptr<Device> open_shm_device(const ShmOptions& options, std::string* error);

// In a fork child, before anything else touches a device: the process-wide state the
// parent's threads may have been changing at the fork (the shm device's memory keys) starts
// afresh, so the child's first device does not wait on a lock nobody here will release.
void reset_devices_after_fork();

// rdma-core device `name` (empty: first active port), port 0 = first active, gid_index
// -1 = the port's RoCEv2 IPv4 GID if any, else its first valid GID.
std::unique_ptr<Device> open_verbs_device(const std::string& name, int port, int gid_index,
                                          std::string* error);

}  // namespace smcpre::rdma
