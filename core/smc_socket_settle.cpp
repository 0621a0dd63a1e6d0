// How an SMC socket settles (core/smc_socket_impl.h): the first data calls on an
// undecided server socket run the server's side of the CLC handshake in steps that never
// wait for the client longer than the call itself may wait (doc/design.md §2.3), and the
// progress thread ends a step whose deadline passes with no call to notice; a partial CLC
// message at the start of the stream is parked until it completes or its time is up
// (§2.2); after a fallback, the peer's late CLC messages are swallowed. Kept apart from
// smc_socket.cpp because none of it runs once a socket is decided.
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "config/high_fd.h"
#include "config/log.h"
#include "config/sys.h"
#include "core/connection.h"
#include "core/datapath/progress.h"
#include "core/datapath/wait.h"
#include "core/engine_state.h"
#include "core/handshake.h"
#include "core/low_water.h"
#include "core/smc_socket_impl.h"
#include "core/stats/connection_counters.h"
#include "core/wire/clc.h"
#include "core/wire/decline.h"

namespace smcpre::core {

void SmcSocket::finish_tcp(uint32_t reason, bool swallow) {
  if (stats_) stats_->on_fallback(reason);
  state_.store(swallow ? State::kTcpSwallow : State::kTcp, std::memory_order_seq_cst);
}

Path SmcSocket::settle(int fd, bool sending, int flags) {
  std::lock_guard lock(mutex_);
  if (reopen_stats_ && current()) {
    reopen_stats_ = false;
    set_stats(ConnectionStats::open(fd, role_));
  }
  const bool wait = !(flags & MSG_DONTWAIT) && !nonblocking_.load();
  const int64_t timeout = sending ? snd_timeout_ns_.load() : rcv_timeout_ns_.load();
  const int64_t wait_until = !wait ? 0 : timeout > 0 ? now_ns() + timeout : -1;
  if (state_.load() == State::kServerUndecided) {
    if (!decide_server(fd, sending, wait_until)) return Path::kSmc;  // deferred error
  }
  if (state_.load() == State::kTcpSwallow && !sending) {
    if (!swallow(fd, wait_until)) return Path::kSmc;  // deferred error
  }
  switch (state_.load()) {
    case State::kSmc:
      return Path::kSmc;
    case State::kTcpSwallow:
      if (sending) return Path::kKernel;  // only what arrives is swallowed
      [[fallthrough]];
    case State::kServerUndecided:
      // Nothing for the application yet. With nothing at all in the socket and no
      // wait made, the kernel's own answer (EAGAIN, an error) is the one TCP gives.
      if (wait || pending_ || partial_since_ns_ >= 0 || turn_park_) {
        t_deferred_errno = EAGAIN;
        return Path::kSmc;
      }
      return Path::kKernel;
    default:
      return Path::kKernel;
  }
}

int64_t SmcSocket::handshake_timeout_ns() const {
  EngineState* engine = EngineState::get();
  return int64_t{engine ? engine->config().handshake_timeout_ms : 2000} * 1'000'000;
}

ClcRead SmcSocket::next_clc(int fd, int64_t wait_until, int64_t phase_deadline,
                            std::vector<uint8_t>* message, clc::Header* header, bool consume) {
  while (true) {
    size_t needed = 0;
    const ClcRead read = read_clc(fd, -1, false, message, header, 0, &needed, consume);
    const int64_t now = now_ns();
    if (read == ClcRead::kNeedMore && needed > 0) {
      if (partial_since_ns_ < 0) partial_since_ns_ = now;
      if (now - partial_since_ns_ >= handshake_timeout_ns()) {
        SMC_LOG_INFO("incomplete CLC message within {} ms: application data",
                     handshake_timeout_ns() / 1'000'000);
        unpark();
        return ClcRead::kNotClc;
      }
      park(fd, needed);
    } else if (read != ClcRead::kNeedMore) {
      unpark();
      if (read == ClcRead::kNotClc && partial_since_ns_ >= 0) {
        SMC_LOG_INFO("incomplete CLC message, then the peer's EOF: application data");
      }
      partial_since_ns_ = -1;
      return read;
    }
    // The wait ends at the caller's time, the phase's deadline or the partial
    // message's, whichever comes first (-1: none of them).
    int64_t until = wait_until;
    if (until == 0 || (until > 0 && now >= until)) return ClcRead::kNeedMore;
    for (const int64_t d : {phase_deadline, own_deadline()}) {
      if (d < 0) continue;
      if (now >= d) return ClcRead::kNeedMore;
      if (until < 0 || d < until) until = d;
    }
    const int64_t left = until < 0 ? -1 : (until - now + 999'999) / 1'000'000;
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    if (sys::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, INT32_MAX))) < 0 &&
        errno == EINTR) {
      return ClcRead::kInterrupted;
    }
  }
}

void SmcSocket::take_off(int fd, size_t length) {
  uint8_t buf[clc::kMaxMessageSize];
  sys::recv(fd, buf, std::min(length, sizeof buf), MSG_DONTWAIT);
}

int64_t SmcSocket::own_deadline() const {
  return partial_since_ns_ < 0 ? -1 : partial_since_ns_ + handshake_timeout_ns();
}

void SmcSocket::park(int fd, size_t needed) {
  if (!hold_fd(fd)) return;
  if (!parked_.hold(held_fd_, static_cast<int>(needed))) return;
  watch_deadline(own_deadline());
}

bool SmcSocket::hold_fd(int fd) {
  if (held_fd_ < 0) held_fd_ = sys::dup_high(fd);
  return held_fd_ >= 0;
}

void SmcSocket::drop_held_fd() {
  if (pending_ || partial_since_ns_ >= 0 || turn_park_) return;
  unpark();
  if (held_fd_ >= 0) sys::close(held_fd_);
  held_fd_ = -1;
}

void SmcSocket::watch_deadline(int64_t deadline) {
  if (deadline < 0 || watched_deadline_ns_ == deadline) return;
  watched_deadline_ns_ = deadline;
  progress_thread().watch_deadline(weak_from_this(), deadline);
}

int64_t SmcSocket::on_deadline(int64_t now) {
  std::unique_lock lock(mutex_, std::try_to_lock);
  if (!lock) return now + 1'000'000;  // in a call right now: look again soon
  watched_deadline_ns_ = -1;
  if (held_fd_ < 0 || !current()) return -1;
  EngineState* engine = EngineState::get();
  if (pending_ && engine && now >= pending_deadline_ns(*pending_)) {
    adopt(server_confirm_missing(held_fd_, *engine, *pending_));
  }
  if (partial_since_ns_ >= 0 && now >= own_deadline()) {
    SMC_LOG_INFO("incomplete CLC message within {} ms: application data",
                 handshake_timeout_ns() / 1'000'000);
    partial_since_ns_ = -1;
    unpark();
    if (state_.load() == State::kServerUndecided && !pending_) {
      finish_tcp(static_cast<uint32_t>(DeclineCode::kProtocol), false);
    } else if (state_.load() == State::kTcpSwallow) {
      state_.store(State::kTcp, std::memory_order_seq_cst);
    }
  }
  if (turn_park_ && now >= turn_park_deadline_ns_) {
    // The other first contact outlived its own deadline's reach: the application
    // looks again (and makes a group of its own if it still may not wait).
    turn_park_->end();
    turn_park_.reset();
  }
  int64_t next = own_deadline();
  if (turn_park_ && (next < 0 || turn_park_deadline_ns_ < next)) next = turn_park_deadline_ns_;
  if (pending_) {
    const int64_t d = pending_deadline_ns(*pending_);
    if (next < 0 || d < next) next = d;
  }
  drop_held_fd();
  if (next >= 0) watched_deadline_ns_ = next;
  return next;
}

bool SmcSocket::decide_server(int fd, bool sending, int64_t wait_until) {
  EngineState* engine = EngineState::get();
  if (!engine) {
    finish_tcp(static_cast<uint32_t>(DeclineCode::kDisabled), false);
    return true;
  }
  std::vector<uint8_t> message;
  clc::Header header;
  if (!pending_) {
    // Parked for another connection's first contact (see below): look again now.
    if (turn_park_) {
      turn_park_->end();
      turn_park_.reset();
    }
    // A Proposal is not waited for by a send (rule 2: the server that speaks first
    // stays on TCP), only by a receive. It stays in the socket until it is answered.
    const ClcRead read =
        next_clc(fd, sending ? 0 : wait_until, -1, &message, &header, /*consume=*/false);
    switch (read) {
      case ClcRead::kInterrupted:
        t_deferred_errno = EINTR;
        return false;
      case ClcRead::kNeedMore:
        if (sending) {
          SMC_LOG_DEBUG("server: application spoke first: TCP");
          finish_tcp(static_cast<uint32_t>(DeclineCode::kLateProposal), true);
        }
        return true;
      case ClcRead::kMessage:
        if (header.type != clc::Type::kProposal || policy_tcp_) take_off(fd, message.size());
        break;
      default:  // not CLC (a plain client, or a message that never completed), EOF, error
        finish_tcp(static_cast<uint32_t>(partial_since_ns_ >= 0 ? DeclineCode::kProtocol
                                                                : DeclineCode::kPeerNoSmc),
                   false);
        return true;
    }
    if (header.type != clc::Type::kProposal) {
      // A Decline (the client gave up waiting) or garbage in CLC clothing.
      if (header.type != clc::Type::kDecline) {
        send_decline(fd, *engine, static_cast<uint32_t>(DeclineCode::kProtocol));
      }
      finish_tcp(static_cast<uint32_t>(DeclineCode::kPeerDecl), true);
      return true;
    }
    if (policy_tcp_) {
      // A client that proposes anyway (its SMCPRE_PEERS or policy says smc) learns why.
      SMC_LOG_INFO("server: Proposal declined: policy says tcp");
      send_decline(fd, *engine, static_cast<uint32_t>(DeclineCode::kPolicy));
      finish_tcp(static_cast<uint32_t>(DeclineCode::kPolicy), true);
      return true;
    }
    // A call that may not wait, when another connection is making this client's first
    // link group, parks the socket with the Proposal in it (not readable) until that
    // one ends: then the kernel wakes whoever waits on the socket, and the call that
    // follows answers the Proposal on the new group.
    std::shared_ptr<SharedLowWater> park;
    std::function<void()> on_turn_free;
    if (wait_until == 0) {
      park = std::make_shared<SharedLowWater>();
      on_turn_free = [park] { park->end(); };
    }
    HandshakeResult r;
    bool wait_for_turn = false;
    pending_ = server_accept(fd, *engine, message, on_turn_free, &wait_for_turn, &r);
    if (wait_for_turn) {
      park->hold(fd, static_cast<int>(message.size()) + 1);
      turn_park_ = std::move(park);
      turn_park_deadline_ns_ = now_ns() + handshake_timeout_ns();
      if (hold_fd(fd)) watch_deadline(turn_park_deadline_ns_);
      return true;
    }
    take_off(fd, message.size());
    if (!pending_) return adopt(r);
    if (hold_fd(fd)) watch_deadline(pending_deadline_ns(*pending_));
  }
  // Accept sent: the client's Confirm (or Decline), usually a round trip away.
  const ClcRead read = next_clc(fd, wait_until, pending_deadline_ns(*pending_), &message, &header);
  switch (read) {
    case ClcRead::kInterrupted:
      t_deferred_errno = EINTR;
      return false;
    case ClcRead::kNeedMore:
      if (now_ns() >= pending_deadline_ns(*pending_)) {
        return adopt(server_confirm_missing(fd, *engine, *pending_));
      }
      return true;
    case ClcRead::kMessage:
      return adopt(server_confirm(fd, *engine, *pending_, message, header));
    default:
      return adopt(HandshakeResult{nullptr, static_cast<uint32_t>(DeclineCode::kPeerNoSmc)});
  }
}

bool SmcSocket::adopt(const HandshakeResult& r) {
  pending_.reset();
  turn_park_.reset();
  if (r.connection) {
    connection_ = r.connection;
    publish_smc();
    state_.store(State::kSmc, std::memory_order_seq_cst);
    SMC_LOG_INFO("connection SMC established (token {:#x})", connection_->local_token());
  } else {
    finish_tcp(r.reason, r.swallow);
  }
  drop_held_fd();
  return true;
}

bool SmcSocket::swallow(int fd, int64_t wait_until) {
  while (true) {
    std::vector<uint8_t> message;
    clc::Header header;
    const ClcRead read = next_clc(fd, wait_until, -1, &message, &header);
    if (read == ClcRead::kInterrupted) {
      t_deferred_errno = EINTR;
      return false;
    }
    if (read == ClcRead::kNeedMore) {
      drop_held_fd();
      return true;  // nothing (more) yet
    }
    if (read != ClcRead::kMessage) {
      state_.store(State::kTcp, std::memory_order_release);
      drop_held_fd();
      return true;
    }
    SMC_LOG_DEBUG("swallowed a late CLC message (type {})", static_cast<int>(header.type));
  }
}

}  // namespace smcpre::core
