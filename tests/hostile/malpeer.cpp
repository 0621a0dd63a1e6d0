// malpeer: a hostile SMC-R peer on the shm device, for tests/integration/test_malpeer.py.
//
// It connects to a preloaded server the way an smcpre client would and does every step
// itself, with the engine's codecs and ring classes but none of its logic: the CLC
// Proposal and Confirm, the shm rendezvous (hello with its own ring memfd and eventfd,
// its RMB announced as a region), the victim's ring, regions and RMB mapped as a peer
// maps them, CONFIRM LINK answered. The victim is an unmodified program under the
// preload (tcpapp server --mode echo --raw). Then it misbehaves as --attack says.
//
//   malpeer --port P [--host H] --attack NAME [--hold] [--verbs DEVICE --bind ADDR]
//
// --verbs: over that verbs device (rxe0 in scripts/rxe-vm) instead of shm, from the TCP
// source address ADDR; the attacks on the CLC fields, CDCs and LLC messages only.
//
// Output on stdout, one word per line, for the test to match: "established" once the
// link is up; "victim-abort" (the victim sent a CDC with peer_conn_abort), "link-down"
// (the victim's queue pair hung up the rendezvous), "echo-ok", "declined 0x...",
// "tcp-echo-ok", "closed"; "attacked" after the attack, then with --hold it waits for
// stdin to close before it goes on (the test measures the victim's CPU meanwhile).
// "error: ..." on stderr and exit status 1 when the attack could not be carried out.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/handshake.h"
#include "core/local_address.h"
#include "core/wire/cdc.h"
#include "core/wire/clc.h"
#include "core/wire/cursor.h"
#include "core/wire/llc.h"
#include "rdma/shm/memory.h"
#include "rdma/shm/ring.h"
#include "rdma/shm/state.h"
#include "rdma/shm/wire.h"

namespace {

using namespace smcpre;
using namespace smcpre::rdma::shm;
namespace clc = smcpre::core::clc;
namespace cdc = smcpre::core::cdc;
namespace llc = smcpre::core::llc;

constexpr uint32_t kRingDepth = 64;
constexpr uint32_t kRingPayload = 64;
constexpr uint32_t kRmbSize = 64 * 1024;
constexpr uint64_t kHugeRegion = kMaxRegionBytes;  // the largest a victim accepts

[[noreturn]] void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("error: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::exit(1);
}

// When the attack began (0: not yet): what the victim does after it is said with the
// milliseconds it took.
int64_t g_attack_ns = 0;

void say(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vprintf(fmt, ap);
  std::putchar('\n');
  std::fflush(stdout);
  va_end(ap);
}

uint32_t random32() {
  uint32_t v = 0;
  if (!random_bytes(&v, sizeof v)) die("getrandom");
  return v;
}

void pause_us(long us) {
  timespec ts{us / 1'000'000, (us % 1'000'000) * 1000};
  nanosleep(&ts, nullptr);
}

bool read_exact(int fd, uint8_t* out, size_t n, int timeout_ms) {
  const int64_t deadline = deadline_after_ms(timeout_ms);
  size_t done = 0;
  while (done < n) {
    if (!wait_fd(fd, POLLIN, deadline)) return false;
    const ssize_t r = ::recv(fd, out + done, n - done, 0);
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}

void send_all(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r <= 0) die("tcp send: %s", std::strerror(errno));
    p += r;
    n -= static_cast<size_t>(r);
  }
}

// " after 1.234 ms" once the attack has begun.
std::string since_attack() {
  if (g_attack_ns == 0) return "";
  char text[64];
  std::snprintf(text, sizeof text, " after %.3f ms",
                static_cast<double>(now_ns() - g_attack_ns) / 1e6);
  return text;
}

// The attacker on a verbs device (Soft-RoCE in scripts/rxe-vm), through the engine's own
// device layer: a real RC queue pair, our RMB and receive buffers registered, WRITEs into
// the victim's RMB by rkey. Only the protocol-level attacks apply there; the shm-only
// ones write shared memory that verbs does not have.
class VerbsSide {
 public:
  void open(const std::string& name) {
    std::string error;
    device_ = rdma::open_verbs_device(name, 0, -1, &error);
    if (!device_) die("verbs device %s: %s", name.c_str(), error.c_str());
    pd_ = device_->alloc_pd(&error);
    if (!pd_) die("verbs PD: %s", error.c_str());
    rmb_ = pd_->register_memory(kRmbSize, &error);
    recv_ = pd_->register_memory(size_t{kRingDepth} * kRingPayload, &error);
    if (!rmb_ || !recv_) die("verbs memory: %s", error.c_str());
    rdma::QpConfig config;
    config.send_depth = 256;
    config.recv_depth = kRingDepth;
    config.max_inline = kRingPayload;
    qp_ = pd_->create_qp(config, &error);
    if (!qp_) die("verbs QP: %s", error.c_str());
    for (uint32_t i = 0; i < kRingDepth; ++i) post(i);
  }
  void fill(clc::LocalInfo* local, clc::AcceptConfirm* confirm) const {
    local->gid = device_->gid();
    local->mac = device_->mac();
    const rdma::QpEndpoint ep = qp_->local_endpoint();
    confirm->qp_num = ep.qp_num;
    confirm->psn = ep.psn;
    confirm->qp_mtu = static_cast<uint8_t>(ep.mtu);
    confirm->rmb_rkey = rmb_->rkey();
    confirm->rmb_vaddr = rmb_->remote_addr();
  }
  void connect(const clc::AcceptConfirm& accept, uint32_t victim_rmb_size) {
    std::string error;
    if (!qp_->connect(core::endpoint_of(accept), rdma::Role::kClient, 5000, &error)) {
      die("verbs connect: %s", error.c_str());
    }
    stage_ = pd_->register_memory(victim_rmb_size, &error);
    if (!stage_) die("verbs staging memory: %s", error.c_str());
    victim_addr_ = accept.rmb_vaddr;
    victim_rkey_ = accept.rmb_rkey;
  }
  // Received messages to `take`; false once the QP is in error (the victim's side went).
  bool poll(const std::function<void(const uint8_t*, uint32_t)>& take) {
    rdma::WorkCompletion wc[16];
    int n;
    while ((n = qp_->poll_recv(wc)) > 0) {
      for (int i = 0; i < n; ++i) {
        if (wc[i].status != rdma::WcStatus::kSuccess) {
          broken_ = true;
          continue;
        }
        take(buffer(static_cast<uint32_t>(wc[i].wr_id)), wc[i].byte_len);
        post(static_cast<uint32_t>(wc[i].wr_id));
      }
    }
    reap_sends();
    return !broken_ && !qp_->in_error();
  }
  bool send(const uint8_t* msg, uint32_t length) {
    for (int attempt = 0; attempt < 2000; ++attempt) {
      const int rc = qp_->post_send_inline(msg, length, 0, true);
      if (rc == 0) return true;
      if (rc != EAGAIN) return false;
      reap_sends();
      pause_us(500);
    }
    return false;
  }
  // An RDMA WRITE of `n` bytes at `offset` of the victim's RMB (rkey as the victim gave it).
  void write(uint64_t offset, const uint8_t* data, size_t n) {
    auto* stage = static_cast<uint8_t*>(stage_->addr()) + offset;
    std::memcpy(stage, data, n);
    while (qp_->post_write(stage, static_cast<uint32_t>(n), stage_->lkey(), victim_addr_ + offset,
                           victim_rkey_, 0, false) == EAGAIN) {
      reap_sends();
      pause_us(100);
    }
  }
  const uint8_t* own_rmb() const { return static_cast<const uint8_t*>(rmb_->addr()); }

 private:
  uint8_t* buffer(uint32_t index) {
    return static_cast<uint8_t*>(recv_->addr()) + size_t{index} * kRingPayload;
  }
  void post(uint32_t index) { qp_->post_recv(buffer(index), kRingPayload, recv_->lkey(), index); }
  void reap_sends() {
    rdma::WorkCompletion wc[16];
    int n;
    while ((n = qp_->poll_send(wc)) > 0) {
      for (int i = 0; i < n; ++i) broken_ |= wc[i].status != rdma::WcStatus::kSuccess;
    }
  }

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

bool MalPeer::handshake(const char* host, int port,
                        const std::function<void(clc::AcceptConfirm&)>& tamper,
                        uint32_t* declined) {
  std::string error;
  const RingGeometry geometry{kRingDepth, kRingPayload};
  if (!ring_.create("malpeer-ring", geometry.bytes(), &error)) die("ring: %s", error.c_str());
  rx_.init(ring_.addr(), geometry);
  for (uint32_t i = 0; i < kRingDepth; ++i) rx_.post(buffers_[i], kRingPayload, i);
  event_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!rmb_.create("malpeer-rmb", kRmbSize, &error)) die("rmb: %s", error.c_str());
  rmb_rkey_ = random_nonzero(32);
  own_token_ = random32() | 1;
  instance_ = (uint64_t{random32()} << 32) | random32() | 1;
  qp_num_ = random_nonzero(24);
  psn_ = random_nonzero(24);

  tcp_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (bind_ != nullptr) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (::inet_pton(AF_INET, bind_, &local.sin_addr) != 1 ||
        ::bind(tcp_.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
      die("bind %s: %s", bind_, std::strerror(errno));
    }
  }
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host, &sin.sin_addr) != 1) die("bad host %s", host);
  if (::connect(tcp_.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    die("connect: %s", std::strerror(errno));
  }
  core::LocalSubnets subnets;
  if (!core::local_subnets(tcp_.get(), &subnets)) die("no local subnet");
  local_.gid = gid_for_instance(instance_);
  local_.mac = {0x02, 0x6d, 0x61, 0x6c, 0x70, 0x72};
  clc::AcceptConfirm verbs_confirm{};
  if (verbs_) {
    verbs_->fill(&local_, &verbs_confirm);
    qp_num_ = verbs_confirm.qp_num;
    psn_ = verbs_confirm.psn;
  }
  random_bytes(local_.peer_id.data(), 2);
  std::copy(local_.mac.begin(), local_.mac.end(), local_.peer_id.begin() + 2);
  clc::Proposal proposal;
  proposal.local = local_;
  proposal.ipv4_subnet_be = subnets.ipv4_subnet_be;
  proposal.ipv4_prefix_len = subnets.ipv4_prefix_len;
  const auto proposal_bytes = clc::encode(proposal);
  send_all(tcp_.get(), proposal_bytes.data(), proposal_bytes.size());

  uint8_t header[clc::kHeaderSize];
  if (!read_exact(tcp_.get(), header, sizeof header, 5000)) die("no CLC answer");
  clc::Header h;
  if (clc::parse_header(header, &h) != clc::HeaderResult::kOk) die("answer is not CLC");
  std::vector<uint8_t> msg(header, header + sizeof header);
  msg.resize(h.length);
  if (!read_exact(tcp_.get(), msg.data() + sizeof header, h.length - sizeof header, 5000)) {
    die("short CLC answer");
  }
  if (h.type == clc::Type::kDecline) die("victim declined the Proposal");
  if (!clc::parse_accept(msg, &accept_, &error)) die("bad Accept: %s", error.c_str());
  if (!accept_.first_contact) die("Accept is not a first contact");
  victim_rmb_size_ = clc::rmbe_size_bytes(accept_.rmbe_size_code);
  victim_token_ = accept_.rmbe_alert_token;
  uint64_t victim_instance = 0;
  if (verbs_) {
    verbs_->connect(accept_, victim_rmb_size_);
  } else if (!instance_from_gid(accept_.local.gid, &victim_instance)) {
    die("victim GID is not shm");
  }

  // The rendezvous: hello with our ring and eventfd, then our RMB as a region.
  if (!verbs_) rendezvous(victim_instance);

  clc::AcceptConfirm confirm{};
  confirm.first_contact = true;
  confirm.local = local_;
  confirm.qp_num = qp_num_;
  confirm.psn = psn_;
  confirm.rmb_rkey = rmb_rkey_;
  confirm.conn_idx = 1;
  confirm.rmbe_alert_token = own_token_;
  confirm.rmbe_size_code = clc::rmbe_size_code(kRmbSize);
  confirm.qp_mtu = accept_.qp_mtu;
  confirm.rmb_vaddr = reinterpret_cast<uint64_t>(rmb_.addr());
  if (verbs_) {
    confirm.qp_mtu = verbs_confirm.qp_mtu;
    confirm.rmb_rkey = verbs_confirm.rmb_rkey;
    confirm.rmb_vaddr = verbs_confirm.rmb_vaddr;
  }
  if (tamper) tamper(confirm);
  const auto confirm_bytes = clc::encode_confirm(confirm);
  send_all(tcp_.get(), confirm_bytes.data(), confirm_bytes.size());
  return await_link(declined);
}

void MalPeer::rendezvous(uint64_t victim_instance) {
  std::string error;
  rv_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr;
  const socklen_t len = rendezvous_address(victim_instance, &addr);
  if (::connect(rv_.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    die("rendezvous connect: %s", std::strerror(errno));
  }
  EndpointMsg hello{};
  hello.header = MsgHeader{kWireMagic, kWireVersion, static_cast<uint16_t>(MsgType::kHello)};
  hello.from_qp_num = qp_num_;
  hello.from_psn = psn_;
  hello.to_qp_num = accept_.qp_num;
  hello.to_psn = accept_.psn;
  hello.pid = static_cast<uint32_t>(::getpid());
  hello.ring_depth = kRingDepth;
  hello.ring_payload = kRingPayload;
  hello.min_rnr_timer = 5;
  const int hello_fds[2] = {ring_.fd(), event_.get()};
  if (!send_message(rv_.get(), &hello, sizeof hello, hello_fds, deadline_after_ms(5000), &error)) {
    die("hello: %s", error.c_str());
  }
  if (!announce_region(rmb_rkey_, reinterpret_cast<uint64_t>(rmb_.addr()), kRmbSize, 0,
                       rmb_.fd())) {
    die("cannot announce our RMB");
  }
}

bool MalPeer::await_link(uint32_t* declined) {
  std::string error;
  clc::Header h;
  // A Decline may come instead of the link: look for one while waiting for the reply.
  const int64_t deadline = deadline_after_ms(8000);
  bool have_reply = false;
  while (now_ns() < deadline) {
    pollfd p[2] = {{tcp_.get(), POLLIN, 0}, {rv_.get(), POLLIN, 0}};
    ::poll(p, verbs_ ? 1 : 2, 10);
    if (verbs_) {
      verbs_->poll(
          [&](const uint8_t* msg, uint32_t length) { early_.emplace_back(msg, msg + length); });
      if (!early_.empty()) return true;
      if (!(p[0].revents & POLLIN)) continue;
    }
    if (p[0].revents & POLLIN) {
      uint8_t d[clc::kDeclineV2Size];
      if (read_exact(tcp_.get(), d, clc::kHeaderSize, 1000) &&
          clc::parse_header(std::span<const uint8_t>(d, clc::kHeaderSize), &h) ==
              clc::HeaderResult::kOk &&
          h.type == clc::Type::kDecline && h.length <= sizeof d &&
          read_exact(tcp_.get(), d + clc::kHeaderSize, h.length - clc::kHeaderSize, 1000)) {
        clc::Decline decline;
        if (clc::parse_decline(std::span<const uint8_t>(d, h.length), &decline, &error)) {
          *declined = decline.diagnosis;
          return false;
        }
      }
      die("unexpected bytes on TCP during the handshake");
    }
    if (!have_reply && (p[1].revents & (POLLIN | POLLHUP))) {
      ReceivedMsg m;
      const RecvStatus s = recv_message(rv_.get(), &m, &error);
      if (s == RecvStatus::kWouldBlock) continue;
      if (s != RecvStatus::kMessage || m.msg.header.type != uint16_t(MsgType::kReply)) {
        // The victim gave up on the link; its Decline is on the way.
        pause_us(100'000);
        continue;
      }
      const EndpointMsg& r = m.msg.endpoint;
      peer_geometry_ = RingGeometry{r.ring_depth, r.ring_payload};
      if (!peer_ring_.map_peer(std::move(m.fds[0]), peer_geometry_.bytes(), &error)) {
        die("victim ring: %s", error.c_str());
      }
      tx_.init(peer_ring_.addr(), peer_geometry_);
      peer_event_ = std::move(m.fds[1]);
      have_reply = true;
    }
    // The link is ours once the victim's first message (CONFIRM LINK) is in our ring;
    // until then it may still decline (an RMB it cannot use).
    auto* first = static_cast<SlotHeader*>(
        static_cast<void*>(static_cast<uint8_t*>(ring_.addr()) + sizeof(RingHeader)));
    if (have_reply && std::atomic_ref<uint64_t>(first->seq).load() == 1) return true;
  }
  die("no CONFIRM LINK and no Decline");
}

bool MalPeer::announce_region(uint32_t rkey, uint64_t addr, uint64_t length, uint64_t offset,
                              int fd) {
  RegionMsg region{};
  region.header = MsgHeader{kWireMagic, kWireVersion, static_cast<uint16_t>(MsgType::kRegion)};
  region.rkey = rkey;
  region.addr = addr;
  region.length = length;
  region.offset_pages = static_cast<uint32_t>(offset / page_size());
  std::string error;
  const int fds[1] = {fd};
  return send_message(rv_.get(), &region, sizeof region, fds, deadline_after_ms(2000), &error);
}

int MalPeer::take_messages(const std::function<void(const uint8_t*, uint32_t)>& take) {
  if (stop_receiving_) return 0;
  int n = 0;
  if (verbs_) {
    if (!verbs_->poll([&](const uint8_t* msg, uint32_t length) {
          ++n;
          take(msg, length);
        }) &&
        !link_down) {
      link_down = true;
      say("link-down%s", since_attack().c_str());
    }
    return n;
  }
  rdma::WorkCompletion wc[16];
  const char* violation = nullptr;
  n = rx_.poll(wc, &violation);
  for (int i = 0; i < n; ++i) {
    if (wc[i].status == rdma::WcStatus::kSuccess) take(buffers_[wc[i].wr_id], wc[i].byte_len);
    rx_.post(buffers_[wc[i].wr_id], kRingPayload, wc[i].wr_id);
  }
  return n;
}

void MalPeer::drain_rendezvous() {
  if (verbs_) return;  // the QP's error says it: take_messages
  while (!link_down) {
    ReceivedMsg m;
    std::string error;
    const RecvStatus s = recv_message(rv_.get(), &m, &error);
    if (s == RecvStatus::kWouldBlock) return;
    if (s != RecvStatus::kMessage) {
      link_down = true;
      say("link-down%s", since_attack().c_str());
      return;
    }
    if (m.msg.header.type != uint16_t(MsgType::kRegion)) continue;
    const RegionMsg& r = m.msg.region;
    VictimRegion region;
    region.addr = r.addr;
    region.length = r.length;
    if (!region.memory.map_peer(std::move(m.fds[0]), r.length, &error,
                                uint64_t{r.offset_pages} * page_size())) {
      die("victim region: %s", error.c_str());
    }
    if (r.rkey == accept_.rmb_rkey && accept_.rmb_vaddr >= r.addr &&
        accept_.rmb_vaddr - r.addr + victim_rmb_size_ <= r.length) {
      victim_rmb_ = static_cast<uint8_t*>(region.memory.addr()) + (accept_.rmb_vaddr - r.addr);
    }
    regions_[r.rkey] = std::move(region);
  }
}

void MalPeer::bring_up() {
  const int64_t deadline = deadline_after_ms(8000);
  bool confirmed = false;
  auto answer = [&](const uint8_t* msg, uint32_t length) {
    if (llc::classify(msg[0]) == llc::Type::kConfirmLink) {
      llc::ConfirmLink request;
      std::string error;
      if (!llc::decode(std::span<const uint8_t>(msg, length), &request, &error)) {
        die("bad CONFIRM LINK: %s", error.c_str());
      }
      llc::ConfirmLink reply{};
      reply.response = true;
      reply.mac = local_.mac;
      reply.gid = local_.gid;
      reply.qp_num = qp_num_;
      reply.link_num = request.link_num;
      reply.link_uid = request.link_uid;
      reply.max_links = 1;
      uint8_t out[llc::kSize];
      llc::encode(reply, std::span<uint8_t, llc::kSize>(out));
      if (!send_raw(out, sizeof out)) die("cannot answer CONFIRM LINK");
      confirmed = true;
    }
  };
  for (const auto& msg : early_) answer(msg.data(), static_cast<uint32_t>(msg.size()));
  early_.clear();
  while (now_ns() < deadline && (!confirmed || (!verbs_ && victim_rmb_ == nullptr))) {
    drain_rendezvous();
    if (take_messages(answer) == 0) pause_us(200);
  }
  if (!confirmed) die("no CONFIRM LINK from the victim");
  if (!verbs_ && victim_rmb_ == nullptr) die("the victim never announced its RMB");
  say("established");
}

bool MalPeer::send_raw(const uint8_t* msg, uint32_t length) {
  if (verbs_) {
    if (!verbs_->send(msg, length)) return false;
    ++sent_messages_;
    return true;
  }
  for (int attempt = 0; attempt < 2000; ++attempt) {
    bool notify = false;
    switch (tx_.send(msg, length, &notify)) {
      case RingSender::Result::kDelivered:
        ++sent_messages_;
        if (notify) notify_victim();
        return true;
      case RingSender::Result::kViolation:
        die("the victim posts more receives than its ring holds");
      case RingSender::Result::kNoReceive:
        pause_us(500);
        break;
    }
  }
  std::fprintf(stderr, "send_raw: no receive posted (victim posted %llu, sent %llu)\n",
               (unsigned long long)victim_ring_header()->posted,
               (unsigned long long)sent_messages_);
  return false;  // the victim stopped posting receives (its link is down)
}

cdc::Message MalPeer::cdc_now() const {
  cdc::Message m;
  m.seq = static_cast<uint16_t>(tx_seq_ + 1);
  m.token = victim_token_;
  m.prod = core::to_wire(tx_prod_, victim_rmb_size_);
  m.cons = core::to_wire(rx_cons_, kRmbSize);
  return m;
}

void MalPeer::send_cdc(const cdc::Message& m) {
  uint8_t out[cdc::kSize];
  cdc::encode(m, std::span<uint8_t, cdc::kSize>(out));
  tx_seq_ = m.seq;
  send_raw(out, sizeof out);
}

void MalPeer::send_update() {
  send_cdc(cdc_now());
}

size_t MalPeer::write_data(const uint8_t* data, size_t n) {
  n = std::min<size_t>(n, victim_rmb_size_ - (tx_prod_ - tx_cons_));
  const size_t written = n;
  while (n > 0) {
    const uint32_t offset = static_cast<uint32_t>(tx_prod_ % victim_rmb_size_);
    const size_t piece = std::min<size_t>(n, victim_rmb_size_ - offset);
    if (verbs_) {
      verbs_->write(offset, data, piece);
    } else {
      std::memcpy(victim_rmb_ + offset, data, piece);
    }
    tx_prod_ += piece;
    data += piece;
    n -= piece;
  }
  send_update();
  return written;
}

void MalPeer::handle(const uint8_t* msg, uint32_t length) {
  const std::span<const uint8_t> bytes(msg, length);
  std::string error;
  if (msg[0] == cdc::kType) {
    cdc::Message m;
    if (!cdc::decode(bytes, &m, &error)) return;
    if (const auto prod = core::from_wire(m.prod, rx_prod_, kRmbSize); prod && *prod > rx_prod_) {
      rx_prod_ = *prod;
    }
    if (const auto cons = core::from_wire(m.cons, tx_cons_, victim_rmb_size_);
        cons && *cons > tx_cons_ && *cons <= tx_prod_) {
      tx_cons_ = *cons;
    }
    if (m.peer_conn_abort && !victim_aborted) {
      victim_aborted = true;
      say("victim-abort%s", since_attack().c_str());
    }
    if (m.peer_conn_closed) victim_closed = true;
    return;
  }
  if (llc::classify(msg[0]) == llc::Type::kTestLink) {
    llc::TestLink t;
    if (llc::decode(bytes, &t, &error) && !t.response) {
      t.response = true;
      uint8_t out[llc::kSize];
      llc::encode(t, std::span<uint8_t, llc::kSize>(out));
      send_raw(out, sizeof out);
    }
  }
}

void MalPeer::pump(int ms, const std::function<bool()>& until) {
  const int64_t deadline = deadline_after_ms(ms);
  while (now_ns() < deadline) {
    if (until && until()) return;
    drain_rendezvous();
    const int n =
        take_messages([this](const uint8_t* msg, uint32_t length) { handle(msg, length); });
    if (n == 0) pause_us(300);
  }
}

bool MalPeer::echo(size_t n, int timeout_ms) {
  std::vector<uint8_t> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<uint8_t>(i * 7 + (tx_prod_ & 0xff));
  const uint64_t expect = rx_cons_ + n;
  size_t sent = 0;
  std::vector<uint8_t> got;
  const int64_t deadline = deadline_after_ms(timeout_ms);
  while (got.size() < n && now_ns() < deadline && !victim_aborted && !link_down) {
    // Never more in flight than either ring holds.
    if (sent < n && tx_prod_ - rx_prod_ < victim_rmb_size_ / 2 && rx_prod_ - rx_cons_ == 0) {
      sent += write_data(data.data() + sent, std::min<size_t>(n - sent, victim_rmb_size_ / 4));
    }
    pump(20, [&] { return rx_prod_ > rx_cons_; });
    while (rx_cons_ < rx_prod_) {
      got.push_back(own_rmb()[rx_cons_ % kRmbSize]);
      ++rx_cons_;
    }
    send_update();
  }
  if (rx_cons_ != expect || got != data) {
    std::fprintf(stderr,
                 "echo: sent %zu of %zu, tx_prod %llu tx_cons %llu rx_prod %llu rx_cons %llu got "
                 "%zu, messages %llu\n",
                 sent, n, (unsigned long long)tx_prod_, (unsigned long long)tx_cons_,
                 (unsigned long long)rx_prod_, (unsigned long long)rx_cons_, got.size(),
                 (unsigned long long)sent_messages_);
    return false;
  }
  return true;
}

void MalPeer::close_orderly() {
  cdc::Message m = cdc_now();
  m.peer_done_writing = true;
  m.peer_conn_closed = true;
  send_cdc(m);
  pump(5000, [&] { return victim_closed || victim_aborted || link_down; });
  if (victim_closed) say("closed");
}

void usage() {
  std::fprintf(stderr,
               "usage: malpeer --port P [--host H] --attack NAME [--hold] [--verbs DEVICE "
               "--bind ADDR]\n");
  std::exit(2);
}

// Waits for the test to close our stdin (it measures the victim meanwhile); the link is
// kept up, the victim's messages answered.
void hold(MalPeer& peer, bool enabled) {
  say("attacked");
  if (!enabled) return;
  for (;;) {
    pollfd p{0, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      char c;
      if (::read(0, &c, 1) <= 0) return;
    }
    peer.pump(50);
  }
}

// Fills `n` bytes of a victim ring slot with noise.
void noise(uint8_t* p, size_t n) {
  random_bytes(p, n);
}

}  // namespace

int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  int port = 0;
  std::string attack;
  bool hold_after = false;
  std::string verbs_device;
  const char* bind = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--host" && i + 1 < argc) {
      host = argv[++i];
    } else if (a == "--port" && i + 1 < argc) {
      port = std::atoi(argv[++i]);
    } else if (a == "--attack" && i + 1 < argc) {
      attack = argv[++i];
    } else if (a == "--hold") {
      hold_after = true;
    } else if (a == "--verbs" && i + 1 < argc) {
      verbs_device = argv[++i];
    } else if (a == "--bind" && i + 1 < argc) {
      bind = argv[++i];
    } else {
      usage();
    }
  }
  if (port <= 0 || attack.empty()) usage();

  MalPeer peer;
  if (!verbs_device.empty()) peer.use_verbs(verbs_device, bind);
  uint32_t declined = 0;
  // Attacks on the handshake: the Confirm names memory we never registered.
  std::function<void(clc::AcceptConfirm&)> tamper;
  if (attack == "confirm-unknown-rkey") {
    tamper = [](clc::AcceptConfirm& c) { c.rmb_rkey ^= 0x5a5a5a5a; };
  } else if (attack == "confirm-outside-region") {
    tamper = [](clc::AcceptConfirm& c) { c.rmb_vaddr += 4096; };
  } else if (attack == "confirm-huge-rmb") {
    tamper = [](clc::AcceptConfirm& c) { c.rmbe_size_code = clc::kMaxRmbeSizeCode; };
  }
  if (!peer.handshake(host, port, tamper, &declined)) {
    say("declined %#010x", declined);
    // The connection goes on over TCP: a plain echo through the victim.
    static const char kLine[] = "hello over TCP after a decline\n";
    send_all(peer.tcp(), kLine, sizeof kLine - 1);
    char back[sizeof kLine - 1];
    if (read_exact(peer.tcp(), reinterpret_cast<uint8_t*>(back), sizeof back, 5000) &&
        std::memcmp(back, kLine, sizeof back) == 0) {
      say("tcp-echo-ok");
    }
    ::shutdown(peer.tcp(), SHUT_WR);
    return 0;
  }
  peer.bring_up();
  if (tamper) {
    // The shm device checks the Confirm's RMB against the regions the peer announced; a
    // verbs device cannot, and the victim learns at its first WRITE (remote access error).
    if (!peer.verbs()) die("the victim accepted a Confirm with attack %s", attack.c_str());
    g_attack_ns = now_ns();
    if (peer.echo(1000)) die("the victim wrote into an RMB it was never given");
    peer.pump(3000, [&] { return peer.victim_aborted || peer.link_down; });
    hold(peer, hold_after);
    return 0;
  }
  static const char* const kShmOnly[] = {"slot-too-long",    "slot-bad-seq",    "posted-overflow",
                                         "region-not-memfd", "region-unsealed", "region-short",
                                         "region-flood"};
  for (const char* name : kShmOnly) {
    if (peer.verbs() && attack == name) die("attack %s is for the shm device only", name);
  }

  // Every attack starts from a working connection.
  if (!peer.echo(1000)) die("the echo before the attack failed");
  say("echo-ok");

  const uint32_t victim_ring = peer.victim_rmb_size();
  g_attack_ns = now_ns();
  if (attack == "none") {
    hold(peer, hold_after);
    if (peer.echo(100 * 1024)) say("echo-ok");
    peer.close_orderly();
    return 0;
  } else if (attack == "prod-outside-ring") {
    cdc::Message m = peer.cdc_now();
    m.prod = core::WireCursor{0, victim_ring};
    peer.send_cdc(m);
  } else if (attack == "prod-count-huge") {
    cdc::Message m = peer.cdc_now();
    m.prod = core::WireCursor{0, 0xffffffffu};
    peer.send_cdc(m);
  } else if (attack == "prod-ahead") {
    cdc::Message m = peer.cdc_now();
    m.prod = core::to_wire(peer.tx_prod() + victim_ring + 1, victim_ring);
    peer.send_cdc(m);
  } else if (attack == "prod-backwards") {
    cdc::Message m = peer.cdc_now();
    m.prod = core::to_wire(peer.tx_prod() - 500, victim_ring);
    peer.send_cdc(m);
  } else if (attack == "prod-wrap-backwards") {
    // Past one whole ring first, then the same offset one wrap earlier.
    if (!peer.echo(victim_ring + victim_ring / 2)) die("the long echo failed");
    g_attack_ns = now_ns();
    cdc::Message m = peer.cdc_now();
    m.prod = core::to_wire(peer.tx_prod() - victim_ring, victim_ring);
    peer.send_cdc(m);
  } else if (attack == "cons-outside-ring") {
    cdc::Message m = peer.cdc_now();
    m.cons = core::WireCursor{0, peer.own_rmb_size()};
    peer.send_cdc(m);
  } else if (attack == "cons-ahead") {
    cdc::Message m = peer.cdc_now();
    m.cons = core::to_wire(peer.rx_cons() + 5000, peer.own_rmb_size());
    peer.send_cdc(m);
  } else if (attack == "cons-backwards") {
    cdc::Message m = peer.cdc_now();
    m.cons = core::to_wire(peer.rx_cons() - 500, peer.own_rmb_size());
    peer.send_cdc(m);
  } else if (attack == "unknown-token") {
    // Aborts and absurd cursors for connections that do not exist (or no longer do):
    // dropped, the real connection goes on.
    for (int i = 0; i < 2000; ++i) {
      cdc::Message m = peer.cdc_now();
      m.token = i % 2 ? random32() : peer.victim_token() + 0x10000;  // an older generation
      m.prod = core::WireCursor{static_cast<uint16_t>(random32()), random32()};
      m.cons = core::WireCursor{static_cast<uint16_t>(random32()), random32()};
      m.peer_conn_abort = true;
      peer.send_cdc(m);
      if (i % 32 == 0) peer.pump(1);
    }
    hold(peer, hold_after);
    if (peer.echo(10000)) say("echo-ok");
    peer.close_orderly();
    return 0;
  } else if (attack == "garbage-cdc") {
    // CDC type byte, wrong length byte or nonsense: malformed, dropped like the kernel
    // does; the connection goes on.
    for (int i = 0; i < 2000; ++i) {
      uint8_t m[cdc::kSize];
      noise(m, sizeof m);
      m[0] = cdc::kType;
      if (m[1] == cdc::kSize) m[1] = 0;
      peer.send_raw(m, i % 3 == 0 ? 20 : sizeof m);
      if (i % 32 == 0) peer.pump(1);
    }
    hold(peer, hold_after);
    if (peer.echo(10000)) say("echo-ok");
    peer.close_orderly();
    return 0;
  } else if (attack == "garbage-llc") {
    // A message of no LLC type the protocol knows: a protocol violation.
    uint8_t m[llc::kSize];
    noise(m, sizeof m);
    m[0] = 0x77;
    m[1] = llc::kSize;
    peer.send_raw(m, sizeof m);
  } else if (attack == "malformed-llc") {
    // A known type with a wrong length byte.
    uint8_t m[llc::kSize];
    noise(m, sizeof m);
    m[0] = static_cast<uint8_t>(llc::Type::kConfirmLink);
    m[1] = 3;
    peer.send_raw(m, sizeof m);
  } else if (attack == "slot-too-long") {
    // The next slot of the victim's ring claims more bytes than a receive buffer holds.
    const uint64_t next = peer.delivered_to_victim();
    auto* slot = reinterpret_cast<SlotHeader*>(peer.victim_slot(next % peer.victim_ring_depth()));
    slot->length = 0xfffffff0u;
    std::atomic_ref<uint64_t>(slot->seq).store(next + 1, std::memory_order_release);
    std::atomic_ref<uint64_t>(peer.victim_ring_header()->filled).store(next + 1);
    peer.notify_victim();
  } else if (attack == "slot-bad-seq") {
    // Every slot gets a wrong message number and noise, and the shared `filled` word
    // claims a message waiting: nothing may be read, and nothing may spin. Only once
    // the victim has taken every message we sent (else we would garble our own).
    const uint64_t taken = peer.victim_ring_depth() + peer.delivered_to_victim();
    peer.pump(2000, [&] {
      return std::atomic_ref<uint64_t>(peer.victim_ring_header()->posted).load() == taken;
    });
    for (uint32_t i = 0; i < peer.victim_ring_depth(); ++i) {
      uint8_t* slot = peer.victim_slot(i);
      auto* header = reinterpret_cast<SlotHeader*>(slot);
      noise(slot + sizeof(SlotHeader), 32);
      header->length = 44;
      std::atomic_ref<uint64_t>(header->seq).store(uint64_t{random32()} << 20 | 7);
    }
    std::atomic_ref<uint64_t>(peer.victim_ring_header()->filled)
        .store(peer.delivered_to_victim() + 12345);
    peer.notify_victim();
    hold(peer, hold_after);
    std::atomic_ref<uint64_t>(peer.victim_ring_header()->filled).store(peer.delivered_to_victim());
    if (peer.echo(10000)) {
      say("echo-ok");
    } else {
      std::fprintf(
          stderr, "echo failed: victim ring posted %llu filled %llu armed %u, delivered %llu\n",
          (unsigned long long)peer.victim_ring_header()->posted,
          (unsigned long long)peer.victim_ring_header()->filled, peer.victim_ring_header()->armed,
          (unsigned long long)peer.delivered_to_victim());
    }
    peer.close_orderly();
    return 0;
  } else if (attack == "posted-overflow") {
    // Our own ring claims more receive buffers than it has: the victim, as sender, must
    // not believe it (it would overwrite slots we have not read).
    auto posted = std::atomic_ref<uint64_t>(peer.own_ring_header()->posted);
    posted.store(posted.load() + 10 * kRingDepth);
    peer.stop_receiving();
    // Enough one-byte echoes that the victim uses up the slots it knew of and reads
    // `posted` again.
    for (uint32_t i = 0; i < 4 * kRingDepth; ++i) {
      const uint8_t byte = static_cast<uint8_t>(i);
      peer.write_data(&byte, 1);
      pause_us(300);
    }
  } else if (attack == "rmb-garbage") {
    // Noise over the victim's whole RMB, outside any cursor: never read by the victim.
    // Then what the cursors do cover is echoed as written last.
    peer.scribble_victim_rmb();
    peer.pump(10);
    hold(peer, hold_after);
    if (peer.echo(30000)) say("echo-ok");
    peer.close_orderly();
    return 0;
  } else if (attack == "region-not-memfd") {
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) die("pipe");
    peer.announce_region(random_nonzero(32), 0x10000, 4096, 0, pipe_fds[0]);
  } else if (attack == "region-unsealed") {
    UniqueFd fd(::memfd_create("malpeer-unsealed", MFD_CLOEXEC));
    if (::ftruncate(fd.get(), 1 << 20) != 0) die("ftruncate");
    peer.announce_region(random_nonzero(32), 0x10000, 1 << 20, 0, fd.get());
  } else if (attack == "region-short") {
    UniqueFd fd(::memfd_create("malpeer-short", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (::ftruncate(fd.get(), 4096) != 0) die("ftruncate");
    ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    peer.announce_region(random_nonzero(32), 0x10000, 1 << 20, 0, fd.get());
  } else if (attack == "region-flood") {
    // Regions of the largest size a victim maps, as many as it takes: the victim's
    // address space (128 TiB) holds about 2000 of them, its map count 65530 mappings.
    UniqueFd fd(::memfd_create("malpeer-huge", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (::ftruncate(fd.get(), static_cast<off_t>(kHugeRegion)) != 0) die("ftruncate");
    ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    int sent = 0;
    for (int i = 0; i < 4096 && !peer.link_down; ++i) {
      if (!peer.announce_region(random_nonzero(32), uint64_t{1} << 48, kHugeRegion, 0, fd.get())) {
        break;
      }
      ++sent;
      if (i % 16 == 0) peer.pump(1);
    }
    say("regions %d", sent);
    peer.pump(2000, [&] { return peer.link_down; });
    if (!peer.link_down && peer.echo(10000)) say("echo-ok");
  } else if (attack == "stop-receiving") {
    // We post no more receive buffers and keep sending: every CDC of the victim's echo
    // meets RNR, for good.
    peer.stop_receiving();
    std::vector<uint8_t> data(1);
    for (int i = 0; i < 2000; ++i) {
      data[0] = static_cast<uint8_t>(i);
      peer.write_data(data.data(), data.size());
      pause_us(200);
    }
  } else if (attack == "stop-cons-updates") {
    // We read the victim's CDCs but never announce what we consumed: its writes stop when
    // our ring is full, as a TCP writer's would on a zero window.
    std::vector<uint8_t> data(8000);
    size_t written = 0;
    for (int i = 0; i < 100; ++i) {
      written += peer.write_data(data.data(), data.size());
      peer.pump(20);
    }
    say("written %zu", written);
  } else {
    usage();
  }
  peer.pump(3000, [&] { return peer.victim_aborted || peer.link_down; });
  hold(peer, hold_after);
  peer.pump(200);
  return 0;
}
