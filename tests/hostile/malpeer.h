// malpeer's private header: the hostile peer's side of the link (MalPeer, over shm or a
// VerbsSide), its helpers and the attacks' entry points, shared by the malpeer*.cpp files
// of the one program (malpeer.cpp says what it does).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/handshake.h"
#include "core/local_address.h"
#include "core/wire/cdc.h"
#include "core/wire/clc.h"
#include "core/wire/cursor.h"
#include "core/wire/llc.h"
#include "core/wire/llc_v2.h"
#include "rdma/shm/memory.h"
#include "rdma/shm/ring.h"
#include "rdma/shm/state.h"
#include "rdma/shm/wire.h"

namespace malpeer {

using namespace smcpre;
using namespace smcpre::rdma::shm;
namespace clc = smcpre::core::clc;
namespace cdc = smcpre::core::cdc;
namespace llc = smcpre::core::llc;

constexpr uint32_t kRingDepth = 64;
constexpr uint32_t kRingPayload = 64;
constexpr uint32_t kRmbSize = 64 * 1024;
constexpr uint64_t kHugeRegion = kMaxRegionBytes;  // the largest a victim accepts

// ---- helpers (malpeer_util.cpp) -------------------------------------------------------------

// "error: ..." on stderr and exit status 1: the attack could not be carried out.
[[noreturn]] void die(const char* fmt, ...);
// When the attack began (0: not yet): what the victim does after it is said with the
// milliseconds it took.
extern int64_t g_attack_ns;
// One line on stdout, flushed at once: the test matches these as they come.
void say(const char* fmt, ...);
uint32_t random32();
void pause_us(long us);
// Reads exactly n bytes from a TCP socket within timeout_ms; false on EOF, error or time.
bool read_exact(int fd, uint8_t* out, size_t n, int timeout_ms);
// Sends all n bytes on a TCP socket or dies.
void send_all(int fd, const void* data, size_t n);
// " after 1.234 ms" once the attack has begun.
std::string since_attack();

// ---- the verbs side (malpeer_verbs.cpp) ------------------------------------------------------

// The attacker on a verbs device (Soft-RoCE in scripts/rxe-vm), through the engine's own
// device layer: a real RC queue pair, our RMB and receive buffers registered, WRITEs into
// the victim's RMB by rkey. Only the protocol-level attacks apply there; the shm-only
// ones write shared memory that verbs does not have.
class VerbsSide {
 public:
  void open(const std::string& name);
  // Our GID, MAC, queue pair and RMB, for the Proposal and the Confirm.
  void fill(clc::LocalInfo* local, clc::AcceptConfirm* confirm) const;
  // Connects the queue pair to the victim's and registers the staging memory for WRITEs.
  void connect(const clc::AcceptConfirm& accept, uint32_t victim_rmb_size);
  // Received messages to `take`; false once the QP is in error (the victim's side went).
  bool poll(const std::function<void(const uint8_t*, uint32_t)>& take);
  bool send(const uint8_t* msg, uint32_t length);
  // An RDMA WRITE of `n` bytes at `offset` of the victim's RMB (rkey as the victim gave it).
  void write(uint64_t offset, const uint8_t* data, size_t n);
  const uint8_t* own_rmb() const { return static_cast<const uint8_t*>(rmb_->addr()); }

 private:
  uint8_t* buffer(uint32_t index);
  void post(uint32_t index);
  void reap_sends();

  std::unique_ptr<rdma::Device> device_;
  std::unique_ptr<rdma::ProtectionDomain> pd_;
  std::unique_ptr<rdma::MemoryRegion> rmb_;
  std::unique_ptr<rdma::MemoryRegion> recv_;
  std::unique_ptr<rdma::MemoryRegion> stage_;
  std::unique_ptr<rdma::QueuePair> qp_;
  uint64_t victim_addr_ = 0;
  uint32_t victim_rkey_ = 0;
  bool broken_ = false;
};

// A region of the victim's protection domain, mapped here.
struct VictimRegion {
  uint64_t addr = 0;
  uint64_t length = 0;
  SharedMemory memory;
};

class MalPeer {
 public:
  // The CLC handshake up to and including Confirm, with `tamper` applied to the Confirm
  // (bad rkeys, offsets, sizes). Returns false if the victim declined (its code in
  // *declined).
  bool handshake(const char* host, int port, const std::function<void(clc::AcceptConfirm&)>& tamper,
                 uint32_t* declined);
  // Speaks over this verbs device instead of shm, from the TCP source address `bind`.
  void use_verbs(const std::string& device, const char* bind) {
    verbs_ = std::make_unique<VerbsSide>();
    verbs_->open(device);
    bind_ = bind;
  }
  bool verbs() const { return verbs_ != nullptr; }
  // Over verbs the victim's link group is SMC-Rv2, whose LLC is version 2.
  llc::Version llc_version() const { return verbs_ ? llc::Version::kV2 : llc::Version::kV1; }
  llc::Type llc_type(uint8_t first_byte) const {
    return verbs_ ? llc::classify_message(first_byte).type : llc::classify(first_byte);
  }
  // After Confirm: the rendezvous reply, the victim's regions and CONFIRM LINK.
  void bring_up();

  // Messages in the victim's receive ring.
  bool send_raw(const uint8_t* msg, uint32_t length);
  void send_cdc(const cdc::Message& m);
  cdc::Message cdc_now() const;
  void send_update();
  // Data into the victim's RMB, as much as its consumer cursor allows, announced by a
  // CDC. Returns the bytes written.
  size_t write_data(const uint8_t* data, size_t n);
  // Takes in what the victim sent for up to `ms` (or until `until` holds).
  void pump(int ms, const std::function<bool()>& until = {});
  // Sends `n` bytes and reads the echo back; false if it did not come in time.
  bool echo(size_t n, int timeout_ms = 5000);
  void close_orderly();

  // What the victim did.
  bool victim_aborted = false;
  bool victim_closed = false;
  bool link_down = false;

  // The raw shared structures, for the attacks that write them directly.
  RingHeader* victim_ring_header() { return static_cast<RingHeader*>(peer_ring_.addr()); }
  uint8_t* victim_slot(uint32_t index) {
    return static_cast<uint8_t*>(peer_ring_.addr()) + sizeof(RingHeader) +
           size_t{index} * peer_geometry_.slot_stride();
  }
  uint32_t victim_ring_depth() const { return peer_geometry_.depth; }
  RingHeader* own_ring_header() { return static_cast<RingHeader*>(ring_.addr()); }
  uint64_t delivered_to_victim() const { return sent_messages_; }
  uint32_t victim_rmb_size() const { return victim_rmb_size_; }
  uint32_t own_rmb_size() const { return kRmbSize; }
  uint64_t tx_prod() const { return tx_prod_; }
  uint64_t rx_cons() const { return rx_cons_; }
  uint32_t victim_token() const { return victim_token_; }
  void stop_receiving() { stop_receiving_ = true; }
  // Noise over the victim's whole RMB, no CDC: the producer cursor does not move.
  void scribble_victim_rmb() {
    std::vector<uint8_t> junk(victim_rmb_size_);
    random_bytes(junk.data(), junk.size());
    if (verbs_) {
      verbs_->write(0, junk.data(), junk.size());
    } else {
      std::memcpy(victim_rmb_, junk.data(), junk.size());
    }
  }
  void notify_victim() {
    const uint64_t one = 1;
    (void)!::write(peer_event_.get(), &one, sizeof one);
  }
  int tcp() const { return tcp_.get(); }
  int rendezvous() const { return rv_.get(); }
  bool announce_region(uint32_t rkey, uint64_t addr, uint64_t length, uint64_t offset, int fd);
  void rendezvous(uint64_t victim_instance);
  bool await_link(uint32_t* declined);

 private:
  void handle(const uint8_t* msg, uint32_t length);
  void drain_rendezvous();
  // The victim's messages to `take`, their buffers posted again.
  int take_messages(const std::function<void(const uint8_t*, uint32_t)>& take);
  const uint8_t* own_rmb() const {
    return verbs_ ? verbs_->own_rmb() : static_cast<const uint8_t*>(rmb_.addr());
  }

  std::unique_ptr<VerbsSide> verbs_;
  const char* bind_ = nullptr;
  std::vector<std::vector<uint8_t>> early_;  // verbs: messages read while waiting for the link

  UniqueFd tcp_;
  UniqueFd rv_;
  uint64_t instance_ = 0;
  uint32_t qp_num_ = 0;
  uint32_t psn_ = 0;
  clc::AcceptConfirm accept_{};
  clc::LocalInfo local_{};

  SharedMemory ring_;
  RingReceiver rx_;
  UniqueFd event_;
  uint8_t buffers_[kRingDepth][kRingPayload]{};
  bool stop_receiving_ = false;

  SharedMemory peer_ring_;
  RingGeometry peer_geometry_{};
  RingSender tx_;
  UniqueFd peer_event_;
  uint64_t sent_messages_ = 0;

  SharedMemory rmb_;
  uint32_t rmb_rkey_ = 0;
  std::map<uint32_t, VictimRegion> regions_;
  uint8_t* victim_rmb_ = nullptr;
  uint32_t victim_rmb_size_ = 0;
  uint32_t victim_token_ = 0;
  uint32_t own_token_ = 0;

  uint16_t tx_seq_ = 0;
  uint64_t tx_prod_ = 0;  // bytes we wrote into the victim's RMB
  uint64_t tx_cons_ = 0;  // of those, consumed by the victim (its consumer cursor)
  uint64_t rx_prod_ = 0;  // bytes the victim wrote into ours
  uint64_t rx_cons_ = 0;  // of those, consumed here
};

// ---- the attacks (malpeer_attacks.cpp) -------------------------------------------------------

// The attacks on the handshake: what they change in our Confirm (empty for the others).
std::function<void(clc::AcceptConfirm&)> confirm_tamper(const std::string& attack);
// After a tampered Confirm the victim accepted (verbs only): its first WRITE must fail.
int run_tampered(MalPeer& peer, const std::string& attack, bool hold_after);
// Dies if `attack` writes shm structures and the peer speaks verbs.
void check_device(const MalPeer& peer, const std::string& attack);
// The attack itself, on a working connection; the exit status.
int run_attack(MalPeer& peer, const std::string& attack, bool hold_after);

// malpeer.cpp
void usage();

}  // namespace malpeer
