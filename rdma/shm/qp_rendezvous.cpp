// The shm queue pair's rendezvous: connecting to the peer's QP over the device's
// rendezvous socket, adopting the peer's receive ring and eventfd, and mapping the memory
// regions the peer announces (and announcing ours). See rdma/shm/qp.h for the model and the
// threading rules; the data path is in qp.cpp.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "config/high_fd.h"
#include "config/log.h"
#include "config/sys.h"
#include "rdma/shm/qp.h"

namespace smcpre::rdma::shm {
namespace {

constexpr size_t kMaxPeerRegions = 1u << 16;
constexpr uint32_t kMax24Bits = 0xffffff;

// A peer's notification fd must be an eventfd, and non-blocking so that notifying can
// never stall our send path.
bool adopt_eventfd(int fd, std::string* why) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  char target[64];
  const ssize_t n = ::readlink(path, target, sizeof target - 1);
  if (n >= 0) {
    target[n] = '\0';
    if (std::strcmp(target, "anon_inode:[eventfd]") != 0) {
      *why = std::string("peer passed a notification fd that is not an eventfd (") + target + ")";
      return false;
    }
  }  // without /proc the type cannot be checked; non-blocking is what protects us
  const int flags = sys::fcntl(fd, F_GETFL);
  if (flags < 0 || sys::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    *why = errno_text("peer eventfd", errno);
    return false;
  }
  return true;
}

}  // namespace

bool ShmQp::connect(const QpEndpoint& remote, Role role, int timeout_ms, std::string* error) {
  if (connect_called_.exchange(true)) {
    *error = "connect() called twice on one QP";
    return false;
  }
  if (remote.qp_num == 0 || remote.qp_num > kMax24Bits || remote.psn > kMax24Bits) {
    *error = fmt::format("invalid peer QP number {:#x} or PSN {:#x}", remote.qp_num, remote.psn);
    return false;
  }
  remote_ = remote;
  role_ = role;
  timeout_ms_ = std::max(timeout_ms, 1);
  const int64_t deadline = deadline_after_ms(timeout_ms_);
  const bool ok =
      role == Role::kClient ? connect_client(deadline, error) : connect_server(deadline, error);
  if (ok) {
    SMC_LOG_DEBUG("shm: QP {:#x} connected to QP {:#x} as {}", qp_num_, remote.qp_num,
                  role == Role::kClient ? "client" : "server");
  } else {
    SMC_LOG_INFO("shm: QP {:#x} rendezvous with QP {:#x} failed: {}", qp_num_, remote.qp_num,
                 *error);
  }
  return ok;
}

EndpointMsg ShmQp::endpoint_message(MsgType type) const {
  EndpointMsg m{};
  m.header = MsgHeader{kWireMagic, kWireVersion, static_cast<uint16_t>(type)};
  m.from_qp_num = qp_num_;
  m.from_psn = psn_;
  m.to_qp_num = remote_.qp_num;
  m.to_psn = remote_.psn;
  m.pid = static_cast<uint32_t>(::getpid());
  m.ring_depth = config_.recv_depth;
  m.ring_payload = config_.max_inline;
  m.min_rnr_timer = config_.min_rnr_timer;
  return m;
}

// Client: after CLC Accept, before Confirm. Sends the hello and returns; the server
// answers only once it has read Confirm, so the reply is read lazily (wait_for_peer).
bool ShmQp::connect_client(int64_t deadline, std::string* error) {
  uint64_t instance = 0;
  if (!instance_from_gid(remote_.gid, &instance)) {
    *error = "peer GID is not an shm device GID";
    return false;
  }
  UniqueFd sock(
      sys::move_fd_high(sys::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)));
  if (!sock.valid()) {
    *error = errno_text("rendezvous socket", errno);
    return false;
  }
  sockaddr_un addr;
  const socklen_t len = rendezvous_address(instance, &addr);
  while (sys::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN && now_ns() < deadline) {  // the listener's backlog is full
      const timespec pause{0, 1'000'000};
      ::nanosleep(&pause, nullptr);
      continue;
    }
    *error = errno == ECONNREFUSED
                 ? fmt::format("no shm device {:016x} on this host (peer process gone?)", instance)
                 : errno_text("rendezvous connect", errno);
    return false;
  }
  ucred cred{};
  socklen_t cred_len = sizeof cred;
  if (sys::getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0) {
    *error = errno_text("SO_PEERCRED", errno);
    return false;
  }
  if (!device_->uid_allowed(cred.uid)) {
    *error = fmt::format("peer credentials rejected (uid {})", cred.uid);
    return false;
  }
  const EndpointMsg hello = endpoint_message(MsgType::kHello);
  const int fds[2] = {ring_.fd(), event_fd_.get()};
  if (!send_message(sock.get(), &hello, sizeof hello, fds, deadline, error)) return false;
  return finish_connect(std::move(sock), error);
}

// Server: after CLC Confirm. The client's hello is normally waiting already.
bool ShmQp::connect_server(int64_t deadline, std::string* error) {
  PendingRendezvous p;
  if (!device_->take_rendezvous(qp_num_, psn_, deadline, &p, error)) return false;
  if (!device_->uid_allowed(p.uid)) {
    *error = fmt::format("peer credentials rejected (uid {})", p.uid);
    return false;
  }
  // The hello named our QP number and PSN (the nonce only our CLC peer read in Accept);
  // it must also come from the QP that our CLC peer named in Confirm.
  if (p.hello.from_qp_num != remote_.qp_num || p.hello.from_psn != remote_.psn) {
    *error = fmt::format(
        "rendezvous hello from QP {:#x} PSN {:#x} (pid {}) does not match the "
        "CLC peer QP {:#x} PSN {:#x}",
        p.hello.from_qp_num, p.hello.from_psn, p.pid, remote_.qp_num, remote_.psn);
    return false;
  }
  if (!adopt_peer_ring(p.hello, std::move(p.ring_fd), std::move(p.event_fd), error)) return false;
  const EndpointMsg reply = endpoint_message(MsgType::kReply);
  const int fds[2] = {ring_.fd(), event_fd_.get()};
  if (!send_message(p.sock.get(), &reply, sizeof reply, fds, deadline, error)) return false;
  return finish_connect(std::move(p.sock), error);
}

bool ShmQp::finish_connect(UniqueFd sock, std::string* error) {
  sock_ = std::move(sock);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  if (sys::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, sock_.get(), &ev) != 0) {
    *error = errno_text("epoll_ctl", errno);
    return false;
  }
  connected_.store(true, std::memory_order_release);
  // Our regions follow the hello or reply on the socket, so the peer knows the ring first.
  if (!pd_->attach(this, error)) {
    enter_error(*error);
    return false;
  }
  return true;
}

bool ShmQp::adopt_peer_ring(const EndpointMsg& msg, UniqueFd ring_fd, UniqueFd event_fd,
                            std::string* why) {
  if (!RingGeometry::valid(msg.ring_depth, msg.ring_payload) || msg.min_rnr_timer > 31) {
    *why = fmt::format(
        "peer receive queue parameters out of range (depth {}, payload {}, rnr "
        "timer {})",
        msg.ring_depth, msg.ring_payload, msg.min_rnr_timer);
    return false;
  }
  const RingGeometry geometry{msg.ring_depth, msg.ring_payload};
  if (!peer_ring_.map_peer(std::move(ring_fd), geometry.bytes(), why)) return false;
  if (!adopt_eventfd(event_fd.get(), why)) return false;
  tx_.init(peer_ring_.addr(), geometry);
  peer_event_fd_ = std::move(event_fd);
  peer_rnr_timer_ns_ = rnr_timer_ns(msg.min_rnr_timer);
  max_send_inline_ = std::min(config_.max_inline, geometry.payload);
  peer_ready_.store(true, std::memory_order_release);
  SMC_LOG_DEBUG("shm: QP {:#x} mapped the receive queue of QP {:#x} (pid {}, depth {})", qp_num_,
                msg.from_qp_num, msg.pid, msg.ring_depth);
  return true;
}

// Client only: blocks until the server's reply is in (bounded by the connect timeout).
bool ShmQp::wait_for_peer() {
  if (role_ == Role::kClient &&
      read_socket_until([this] { return peer_ready_.load(std::memory_order_acquire); },
                        deadline_after_ms(timeout_ms_))) {
    return true;
  }
  enter_error(fmt::format("the peer did not complete the rendezvous within {} ms", timeout_ms_));
  return false;
}

// Reads socket messages until done() or the deadline. The lock is held only while
// reading (never while waiting), so the poller's consume_notify() is never stalled.
template <typename Pred>
bool ShmQp::read_socket_until(Pred done, int64_t deadline_ns) {
  for (;;) {
    {
      std::lock_guard lock(sock_mutex_);
      if (done()) return true;
      drain_socket_locked();
      if (done()) return true;
    }
    if (error_.load(std::memory_order_acquire)) return false;
    if (!wait_fd(sock_.get(), POLLIN, deadline_ns)) return false;
  }
}

void ShmQp::drain_socket_locked() {
  while (!error_.load(std::memory_order_acquire)) {
    ReceivedMsg m;
    std::string why;
    switch (recv_message(sock_.get(), &m, &why)) {
      case RecvStatus::kWouldBlock:
        return;
      case RecvStatus::kEof:
        // A peer process ending is ordinary; the engine says what it costs.
        enter_error("peer closed the rendezvous socket (its process exited or its QP is gone)",
                    /*ordinary=*/true);
        return;
      case RecvStatus::kInvalid:
        enter_error("bad rendezvous message from the peer: " + why);
        return;
      case RecvStatus::kMessage:
        if (!handle_message_locked(m, &why)) {
          enter_error(why);
          return;
        }
        break;
    }
  }
}

bool ShmQp::handle_message_locked(ReceivedMsg& m, std::string* why) {
  switch (static_cast<MsgType>(m.msg.header.type)) {
    case MsgType::kRegion:
      return map_region_locked(m.msg.region, std::move(m.fds[0]), why);
    case MsgType::kReply: {
      const EndpointMsg& r = m.msg.endpoint;
      if (role_ != Role::kClient || peer_ready_.load(std::memory_order_relaxed)) {
        *why = "unexpected rendezvous reply";
        return false;
      }
      if (r.from_qp_num != remote_.qp_num || r.from_psn != remote_.psn || r.to_qp_num != qp_num_ ||
          r.to_psn != psn_) {
        *why = fmt::format("rendezvous reply names QP {:#x}/{:#x}, expected {:#x}/{:#x}",
                           r.from_qp_num, r.to_qp_num, remote_.qp_num, qp_num_);
        return false;
      }
      return adopt_peer_ring(r, std::move(m.fds[0]), std::move(m.fds[1]), why);
    }
    case MsgType::kHello:
      break;
  }
  *why = "unexpected hello on an established rendezvous";
  return false;
}

bool ShmQp::map_region_locked(const RegionMsg& msg, UniqueFd fd, std::string* why) {
  if (msg.rkey == 0 || msg.length == 0 || msg.length > kMaxRegionBytes ||
      msg.addr > UINT64_MAX - msg.length) {
    *why = fmt::format("peer announced an invalid region (rkey {:#x}, addr {:#x}, length {})",
                       msg.rkey, msg.addr, msg.length);
    return false;
  }
  if (regions_.find(msg.rkey) != nullptr) {
    *why = fmt::format("peer announced rkey {:#x} twice", msg.rkey);
    return false;
  }
  if (regions_.size() >= kMaxPeerRegions) {
    *why = "peer announced too many regions";
    return false;
  }
  SharedMemory memory;
  if (!memory.map_peer(std::move(fd), msg.length, why, uint64_t{msg.offset_pages} * page_size())) {
    return false;
  }
  regions_.insert(msg.rkey, static_cast<uint8_t*>(memory.addr()), msg.addr, msg.length);
  region_maps_.push_back(std::move(memory));
  SMC_LOG_DEBUG("shm: QP {:#x} mapped peer region rkey {:#x} ({} bytes)", qp_num_, msg.rkey,
                msg.length);
  return true;
}

const PeerRegionTable::Entry* ShmQp::find_region(uint32_t rkey) {
  if (const auto* entry = regions_.find(rkey)) return entry;
  // A region is announced before its owner hands out the rkey (CLC, LLC), so an
  // announcement we have not read yet is already in the socket.
  {
    std::lock_guard lock(sock_mutex_);
    drain_socket_locked();
  }
  return regions_.find(rkey);
}

bool ShmQp::prepare_remote_region(const RemoteRegion& region, int timeout_ms, std::string* error) {
  if (!connected_.load(std::memory_order_acquire)) {
    *error = "QP is not connected";
    return false;
  }
  const PeerRegionTable::Entry* entry = nullptr;
  read_socket_until(
      [&] {
        entry = regions_.find(region.rkey);
        return entry != nullptr;
      },
      deadline_after_ms(timeout_ms));
  if (entry == nullptr) {
    *error = in_error() ? "QP is in error"
                        : fmt::format("peer did not announce a region with rkey {:#x} within {} ms",
                                      region.rkey, timeout_ms);
    return false;
  }
  const uint64_t offset = region.addr - entry->addr;
  if (region.addr < entry->addr || offset > entry->length ||
      region.length > entry->length - offset) {
    *error = fmt::format("region {:#x}+{} is outside the peer's region rkey {:#x} ({:#x}+{})",
                         region.addr, region.length, region.rkey, entry->addr, entry->length);
    return false;
  }
  return true;
}

bool ShmQp::announce_region(const AnnouncedRegion& region, int timeout_ms) {
  if (error_.load(std::memory_order_acquire)) return false;
  RegionMsg m{};
  m.header = MsgHeader{kWireMagic, kWireVersion, static_cast<uint16_t>(MsgType::kRegion)};
  m.rkey = region.rkey;
  m.addr = region.addr;
  m.length = region.length;
  m.offset_pages = static_cast<uint32_t>(region.offset / page_size());
  const int fd = region.fd;
  std::string why;
  if (!send_message(sock_.get(), &m, sizeof m, std::span<const int>(&fd, 1),
                    deadline_after_ms(timeout_ms), &why)) {
    enter_error("cannot announce a memory region to the peer: " + why);
    return false;
  }
  return true;
}

}  // namespace smcpre::rdma::shm
