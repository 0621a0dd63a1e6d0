// The shm device's rendezvous protocol: fixed-size messages over an abstract unix
// SOCK_SEQPACKET socket, each carrying its fds with SCM_RIGHTS. SEQPACKET keeps every
// message and its fds together, so a reader never sees half a message.
//
//   client -> server  hello  {client qp/psn, server qp/psn from CLC Accept, ring geometry}
//                             + [ring memfd, eventfd]
//   server -> client  reply  {server qp/psn, client qp/psn, ring geometry}
//                             + [ring memfd, eventfd]
//   either direction  region {rkey, addr, length, offset} + [memfd], once per region of
//                             the PD (regions are slices of a few memfds: arena.h)
//
// Both ends are the same host and build: host byte order, no padding surprises (checked
// below). Every field is validated by the receiver.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "config/high_fd.h"
#include "config/sys.h"
#include "rdma/shm/memory.h"

namespace smcpre::rdma::shm {

inline constexpr uint32_t kWireMagic = 0x53484d52;  // "SHMR"
// 2: regions carry their offset in the memfd (version 1 peers would map offset 0).
inline constexpr uint16_t kWireVersion = 2;

enum class MsgType : uint16_t { kHello = 1, kReply = 2, kRegion = 3 };

struct MsgHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t type;
};

// Hello (client -> server) and reply (server -> client).
struct EndpointMsg {
  MsgHeader header;
  uint32_t from_qp_num;
  uint32_t from_psn;
  uint32_t to_qp_num;
  uint32_t to_psn;  // the psn the sender learned through CLC: the rendezvous nonce
  uint32_t pid;     // for log lines only
  uint32_t ring_depth;
  uint32_t ring_payload;
  uint8_t min_rnr_timer;  // the receiver's RNR timer, which its peer's retries wait
  uint8_t reserved[3];
};
static_assert(sizeof(EndpointMsg) == 40);

struct RegionMsg {
  MsgHeader header;
  uint32_t rkey;
  uint32_t offset_pages;  // where the region starts in the memfd, in pages
  uint64_t addr;          // the owner's virtual address, as named in RDMA WRITEs
  uint64_t length;
};
static_assert(sizeof(RegionMsg) == 32);

union AnyMsg {
  MsgHeader header;
  EndpointMsg endpoint;
  RegionMsg region;
};

inline constexpr size_t kMaxMsgFds = 2;

struct ReceivedMsg {
  AnyMsg msg{};
  UniqueFd fds[kMaxMsgFds];
};

enum class RecvStatus { kMessage, kWouldBlock, kEof, kInvalid };

inline int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

inline int64_t deadline_after_ms(int timeout_ms) {
  return now_ns() + int64_t{std::max(timeout_ms, 0)} * 1'000'000;
}

// Milliseconds left until `deadline_ns`, rounded up, for poll().
inline int ms_until(int64_t deadline_ns) {
  const int64_t left = deadline_ns - now_ns();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<int64_t>((left + 999'999) / 1'000'000, 1 << 30));
}

// Waits until `fd` reports `events` (or an error/hangup) or the deadline passes.
inline bool wait_fd(int fd, short events, int64_t deadline_ns) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int timeout = ms_until(deadline_ns);
    const int n = sys::poll(&p, 1, timeout);
    if (n > 0) return true;
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 && timeout > 0) continue;  // woke early by rounding: look at the clock again
    return false;
  }
}

inline size_t expected_size(MsgType type) {
  return type == MsgType::kRegion ? sizeof(RegionMsg) : sizeof(EndpointMsg);
}
inline size_t expected_fds(MsgType type) {
  return type == MsgType::kRegion ? 1 : 2;
}

// Reads one message without blocking. Fds that arrive are always taken (CLOEXEC) and
// owned by `out`, so nothing leaks whatever the peer sends; a malformed message yields
// kInvalid with the reason in *why.
inline RecvStatus recv_message(int sock, ReceivedMsg* out, std::string* why) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxMsgFds)];
  for (;;) {
    std::memset(&out->msg, 0, sizeof out->msg);
    iovec iov{&out->msg, sizeof out->msg};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    const ssize_t n = sys::recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return RecvStatus::kWouldBlock;
      if (errno == ECONNRESET) return RecvStatus::kEof;
      *why = errno_text("recvmsg", errno);
      return RecvStatus::kInvalid;
    }
    size_t nfds = 0;
    bool extra_fds = false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        if (nfds < kMaxMsgFds) {
          out->fds[nfds++].reset(sys::move_fd_high(fd));
        } else {
          sys::close(fd);
          extra_fds = true;
        }
      }
    }
    if (n == 0) return RecvStatus::kEof;
    if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || extra_fds) {
      *why = "oversized rendezvous message or too many fds";
      return RecvStatus::kInvalid;
    }
    const MsgHeader& h = out->msg.header;
    if (static_cast<size_t>(n) < sizeof(MsgHeader) || h.magic != kWireMagic ||
        h.version != kWireVersion) {
      *why = "not an smcpre shm rendezvous message (bad magic or version)";
      return RecvStatus::kInvalid;
    }
    const auto type = static_cast<MsgType>(h.type);
    if (type != MsgType::kHello && type != MsgType::kReply && type != MsgType::kRegion) {
      *why = "unknown rendezvous message type " + std::to_string(h.type);
      return RecvStatus::kInvalid;
    }
    if (static_cast<size_t>(n) != expected_size(type) || nfds != expected_fds(type)) {
      *why = "rendezvous message of type " + std::to_string(h.type) + " has " + std::to_string(n) +
             " bytes and " + std::to_string(nfds) + " fds";
      return RecvStatus::kInvalid;
    }
    return RecvStatus::kMessage;
  }
}

// Sends one message with its fds, waiting (until the deadline) while the peer's receive
// queue is full. Never raises SIGPIPE.
inline bool send_message(int sock, const void* msg, size_t size, std::span<const int> fds,
                         int64_t deadline_ns, std::string* error) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxMsgFds)] = {};
  iovec iov{const_cast<void*>(msg), size};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (!fds.empty()) {
    const size_t count = std::min(fds.size(), kMaxMsgFds);
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * count);
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * count);
  }
  for (;;) {
    const ssize_t n = sys::sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(size)) return true;
    if (n >= 0) {
      *error = "short rendezvous send";
      return false;
    }
    if (errno == EINTR) continue;
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(sock, POLLOUT, deadline_ns)) continue;
    *error = errno == EAGAIN ? std::string("rendezvous send timed out (peer not reading)")
                             : errno_text("rendezvous send", errno);
    return false;
  }
}

// The device's rendezvous address: "\0smcpre-shm-<16 hex digits of the instance id>".
inline socklen_t rendezvous_address(uint64_t instance_id, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  static constexpr char kHex[] = "0123456789abcdef";
  static constexpr char kPrefix[] = "smcpre-shm-";
  char* p = addr->sun_path + 1;  // leading NUL: abstract namespace
  std::memcpy(p, kPrefix, sizeof kPrefix - 1);
  p += sizeof kPrefix - 1;
  for (int shift = 60; shift >= 0; shift -= 4) *p++ = kHex[(instance_id >> shift) & 0xf];
  return static_cast<socklen_t>(p - reinterpret_cast<char*>(addr));
}

}  // namespace smcpre::rdma::shm
