// The engine's entry points (core/engine.h): a listener is published, a destination
// judged eligible, a connection made, accepted or inherited, and listeners renewed across
// fork. Fork and exit of the process objects: core/process_objects.cpp. The sockets
// themselves are smc_socket.cpp's. The waits' entry points at the end only forward, so that
// preload/ sees neither the connection nor the progress headers.
#include "core/engine.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "config/listener_lookup.h"
#include "config/log.h"
#include "config/option_map.h"
#include "config/peer_rules.h"
#include "config/policy.h"
#include "config/registry.h"
#include "config/runtime_dir.h"
#include "core/connection.h"
#include "core/datapath/readiness_mirror.h"
#include "core/engine_state.h"
#include "core/handshake.h"
#include "core/local_address.h"
#include "core/readiness_wait.h"
#include "core/smc_socket.h"
#include "core/stats/segment.h"
#include "core/stream_start.h"
#include "core/wire/decline.h"

namespace smcpre::core {

class Listener {
 public:
  Listener(std::optional<registry::ListenerRegistration> registration, bool policy_tcp,
           bool option_armed)
      : registration_(std::move(registration)),
        policy_tcp_(policy_tcp),
        option_armed_(option_armed) {}

  // A policy rule says tcp for this listener: it is not published, and its accepted
  // connections decline a Proposal with POLICY.
  bool policy_tcp() const { return policy_tcp_; }
  // The option program listens with this socket (doc/design.md §2.9): its accepted
  // connections have a record of their SYN.
  bool option_armed() const { return option_armed_; }

  // In a fork child: the listening socket is the child's too (pre-fork servers accept
  // there), so the child holds the registration's lock with a descriptor of its own.
  // The port then stays published until the last process holding the socket closes it,
  // even if the parent closes its copy first.
  // In the parent after fork(): see ListenerRegistration::renew_in_parent_after_fork.
  void after_fork_in_parent() {
    if (!registration_) return;
    std::string error;
    if (!registration_->renew_in_parent_after_fork(&error)) {
      SMC_LOG_WARN("listener registration not renewed in the parent after fork: {}", error);
    }
  }

  void after_fork_in_child() {
    if (!registration_) return;
    std::string error;
    if (!registration_->renew_after_fork(&error)) {
      SMC_LOG_WARN("listener registration not renewed after fork: {}", error);
    }
  }

 private:
  std::optional<registry::ListenerRegistration> registration_;
  const bool policy_tcp_;
  const bool option_armed_;
};

namespace {
// Every listener of this process, for after_fork_in_child().
std::mutex g_listeners_mutex;
// Heap-allocated and never freed, like every object engine threads may touch at exit.
std::vector<std::weak_ptr<Listener>>& g_listeners = *new std::vector<std::weak_ptr<Listener>>;
}  // namespace

namespace {

std::string runtime_dir(const config::Config& config) {
  return config.runtime_dir.empty() ? runtime_dir::default_path() : config.runtime_dir;
}

uint16_t port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
}

// A TCP destination connect() can take: AF_INET or AF_INET6, long enough.
bool inet_destination(const sockaddr* addr, socklen_t len) {
  if (addr == nullptr) return false;
  if (addr->sa_family == AF_INET) return len >= sizeof(sockaddr_in);
  return addr->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6);
}

// The policy's verdict for a listening or accepted socket, from its local address.
bool policy_says_tcp(const config::Config& config, int fd) {
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  return getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
         config::policy_decide(config, config::PolicyRole::kServer,
                               reinterpret_cast<const sockaddr*>(&local)) ==
             config::PolicyAction::kTcp;
}

// Marks `fd` for the option program if it is active in this process, and publishes
// whether it is.
bool mark_for_option(const config::Config& config, int fd, option::Role role) {
  const bool marked = option::mark(config.bpf_dir, fd, role);
  stats::set(stats::segment().process.option_program,
             option::active(config.bpf_dir) ? stats::kOptionActive : stats::kOptionInactive);
  return marked;
}

// What the option program recorded about the handshake of `fd`, counted.
option::Seen option_record(int fd, option::Role role) {
  const option::Seen seen = option::read(fd, role);
  if (seen == option::Seen::kPeerSmc || seen == option::Seen::kPeerNone) {
    stats::ProcessCounters& p = stats::segment().process;
    stats::add(p.option_handshakes);
    if (seen == option::Seen::kPeerSmc) stats::add(p.option_peer_smc);
  }
  return seen;
}

// The rules that need no option program (doc/design.md §2.1): may this connection
// propose SMC (plan->eligible), or is it a same-host listener the program armed
// (plan->option_only)? If neither, plan->reason says why.
void judge_destination(int fd, const sockaddr* addr, socklen_t len, ConnectPlan* plan) {
  uint32_t* reason = &plan->reason;
  *reason = static_cast<uint32_t>(DeclineCode::kPeerUnknown);
  EngineState* engine = EngineState::get();
  if (!engine) *reason = static_cast<uint32_t>(DeclineCode::kDisabled);
  if (!engine || !inet_destination(addr, len)) return;
  const config::Config& config = engine->config();
  const sockaddr_storage dest = normalized(addr, len);
  const uint16_t port = port_of(dest);
  const auto* dest_addr = reinterpret_cast<const sockaddr*>(&dest);
  if (config::port_excluded(config.exclude_ports, port)) {
    *reason = static_cast<uint32_t>(DeclineCode::kExcluded);
  } else if (port != 0) {
    // The policy's first matching rule decides; without one, positive knowledge: the
    // registry first (the kernel's listener for this address in fd's network namespace,
    // then one or two lstat()s), the interface list only for a published listener.
    switch (config::policy_decide(config, config::PolicyRole::kClient, dest_addr)) {
      case config::PolicyAction::kTcp:
        *reason = static_cast<uint32_t>(DeclineCode::kPolicy);
        break;
      case config::PolicyAction::kSmc:
        plan->eligible = true;
        break;
      case config::PolicyAction::kNone: {
        // Without sock_diag the registry reads /proc (up to milliseconds): the interface
        // list goes first then, so that a remote destination never pays for it.
        registry::Entry entry = registry::Entry::kNone;
        if (!registry::lookups_read_proc()) {
          entry = registry::destination_entry(runtime_dir(config), fd, dest);
          if (entry != registry::Entry::kNone && !is_local_address(dest)) {
            entry = registry::Entry::kNone;
          }
        } else if (is_local_address(dest)) {
          entry = registry::destination_entry(runtime_dir(config), fd, dest);
        }
        // An armed listener hears CLC only after a SYN that announced SMC: its entry
        // outweighs SMCPRE_PEERS.
        plan->option_only = entry == registry::Entry::kOption;
        plan->eligible = entry == registry::Entry::kClc ||
                         (!plan->option_only && config::peer_rules_match(config.peers, dest_addr));
        break;
      }
    }
  }
}

}  // namespace

void Engine::before_listen(int fd) {
  EngineState* engine = EngineState::get();
  if (!engine) return;
  const int saved_errno = errno;
  if (!policy_says_tcp(engine->config(), fd)) {
    mark_for_option(engine->config(), fd, option::Role::kListener);
  }
  errno = saved_errno;
}

std::shared_ptr<Listener> Engine::on_listen(int fd) {
  EngineState* engine = EngineState::get();
  if (!engine) return nullptr;
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return nullptr;
  if (local.ss_family != AF_INET && local.ss_family != AF_INET6) return nullptr;
  std::string error;
  const bool policy_tcp = policy_says_tcp(engine->config(), fd);
  // Armed by the option program (its listen callback ran for the mark before_listen made):
  // it expects CLC only after a SYN that announced SMC. Its registry entry says so, so
  // that a same-host client proposes only when its SYN-ACK announces SMC, never when the
  // program does not see it (another cgroup, no permission).
  const bool armed =
      !policy_tcp && option::read(fd, option::Role::kListener) == option::Seen::kArmed;
  std::optional<registry::ListenerRegistration> registration;
  if (policy_tcp) {
    SMC_LOG_INFO("listener on port {}: policy says tcp: not published", port_of(local));
  } else {
    registration =
        registry::ListenerRegistration::publish(runtime_dir(engine->config()), fd, &error, armed);
    if (!registration) {
      SMC_LOG_WARN("listener on port {} not published ({}): clients will use TCP", port_of(local),
                   error);
    } else {
      SMC_LOG_DEBUG("listener on port {} published{}", port_of(local),
                    armed ? " as armed by the option program" : "");
    }
  }
  // A process with a listener uses smcpre: it is listed from now on.
  stats::segment();
  // Tracked either way: accepted connections still answer a client's Proposal.
  auto listener = std::make_shared<Listener>(std::move(registration), policy_tcp, armed);
  std::lock_guard lock(g_listeners_mutex);
  std::erase_if(g_listeners, [](const std::weak_ptr<Listener>& l) { return l.expired(); });
  g_listeners.push_back(listener);
  return listener;
}

ConnectPlan Engine::plan_connect(int fd, const sockaddr* addr, socklen_t len, bool nonblocking) {
  const int saved_errno = errno;
  ConnectPlan plan;
  judge_destination(fd, addr, len, &plan);
  // Not when the configuration rules the destination out (EXCLUDED, POLICY, DISABLED),
  // and a non-blocking connect only to a destination known to run smcpre (it waits for
  // the connection then: one round trip on this host, or to an SMCPRE_PEERS server).
  const bool may_mark =
      plan.eligible || plan.option_only ||
      (!nonblocking && plan.reason == static_cast<uint32_t>(DeclineCode::kPeerUnknown));
  EngineState* engine = EngineState::get();
  if (engine && may_mark && inet_destination(addr, len) && port_of(normalized(addr, len)) != 0) {
    plan.marked = mark_for_option(engine->config(), fd, option::Role::kClient);
  }
  errno = saved_errno;
  return plan;
}

void Engine::on_not_proposed(uint32_t reason) {
  // Counted only where smcpre runs: a disabled process publishes nothing.
  if (reason == static_cast<uint32_t>(DeclineCode::kDisabled) || !EngineState::get()) return;
  stats::count_fallback(reason);
}

void Engine::on_connect_abandoned(int fd, const ConnectPlan& plan) {
  if (!plan.marked) return;
  const int saved_errno = errno;
  option::withdraw(fd);
  errno = saved_errno;
}

std::shared_ptr<Socket> Engine::on_connected(int fd, const ConnectPlan& plan) {
  EngineState* engine = EngineState::get();
  if (!engine) return nullptr;
  const int saved_errno = errno;
  bool propose = plan.eligible;
  bool peer_announced = false;
  if (plan.marked) {
    // The option program saw the handshake: the server's SYN-ACK decides, as it does for
    // the kernel's SMC. Else (this process's cgroup has no program) the rules above did.
    switch (option_record(fd, option::Role::kClient)) {
      case option::Seen::kPeerSmc:
        propose = peer_announced = true;
        break;
      case option::Seen::kPeerNone: {
        const auto reason = static_cast<uint32_t>(DeclineCode::kPeerNoSmc);
        SMC_LOG_INFO("connection falls back to TCP: {} (the SYN-ACK did not announce SMC)",
                     decline_name(reason));
        stats::count_fallback(reason);
        errno = saved_errno;
        return nullptr;
      }
      default:
        break;
    }
  }
  if (!propose) {
    on_not_proposed(plan.reason);
    errno = saved_errno;
    return nullptr;
  }
  std::shared_ptr<Socket> socket;
  {
    HandshakeResult r = client_handshake(fd, *engine, peer_announced);
    socket = make_client_socket(fd, r);
  }
  errno = saved_errno;
  return socket;
}

std::shared_ptr<Socket> Engine::on_accepted(int fd, const std::shared_ptr<Listener>& listener) {
  if (!listener || !EngineState::get()) return nullptr;
  const int saved_errno = errno;
  // An armed listener's connection whose SYN did not announce SMC: no CLC will come (a
  // client that proposes waits for the option in the SYN-ACK, which it did not get).
  const bool clc_expected = !listener->option_armed() ||
                            option_record(fd, option::Role::kListener) != option::Seen::kPeerNone;
  auto socket = make_server_socket(fd, listener->policy_tcp(), false, clc_expected);
  errno = saved_errno;
  return socket;
}

std::shared_ptr<Socket> Engine::on_inherited(int fd) {
  const int saved_errno = errno;
  std::shared_ptr<Socket> socket;
  if (at_stream_start(fd)) {
    if (EngineState* engine = EngineState::get()) {
      // Accepted by another process on an armed listener: the record came along.
      const bool clc_expected =
          !option::active(engine->config().bpf_dir) ||
          option_record(fd, option::Role::kListener) != option::Seen::kPeerNone;
      socket = make_server_socket(fd, policy_says_tcp(engine->config(), fd), true, clc_expected);
      SMC_LOG_DEBUG("fd {}: an untouched TCP connection from another process: decided here", fd);
    }
  }
  errno = saved_errno;
  return socket;
}

void Engine::note_other_process() {
  EngineState::note_fork();
}

void Engine::renew_listeners_in_fork_child() {
  // A parent thread may have held the lock at fork: the child starts with a fresh one.
  new (&g_listeners_mutex) std::mutex();
  for (auto& weak : g_listeners) {
    if (auto listener = weak.lock()) listener->after_fork_in_child();
  }
}

void Engine::after_fork_in_parent() {
  // First of all: from here on, resetting a mirror made before the fork shuts its engine
  // end down, since the child may hold a copy of it.
  ReadinessMirror::note_fork();
  note_other_process();
  std::lock_guard lock(g_listeners_mutex);
  for (auto& weak : g_listeners) {
    if (auto listener = weak.lock()) listener->after_fork_in_parent();
  }
}

void Engine::flush_stale_mirrors() {
  core::flush_stale_mirrors();
}

int Engine::wait_ready(int64_t deadline_ns, ReadinessSet& set) {
  return wait_ready_adaptive(deadline_ns, set);
}

void Engine::mirrors_watched_unseen() {
  ReadinessMirror::watched_unseen();
  core::flush_stale_mirrors();  // what was only noted before shows now
}

}  // namespace smcpre::core
