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
  Listener(std::optional<registry::ListenerRegistration> registration, bool policy_tcp)
      : registration_(std::move(registration)), policy_tcp_(policy_tcp) {}

  // A policy rule says tcp for this listener: it is not published, and its accepted
  // connections decline a Proposal with POLICY.
  bool policy_tcp() const { return policy_tcp_; }

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

}  // namespace

std::shared_ptr<Listener> Engine::on_listen(int fd) {
  EngineState* engine = EngineState::get();
  if (!engine) return nullptr;
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return nullptr;
  if (local.ss_family != AF_INET && local.ss_family != AF_INET6) return nullptr;
  std::string error;
  const bool policy_tcp = config::policy_decide(engine->config(), config::PolicyRole::kServer,
                                                reinterpret_cast<const sockaddr*>(&local)) ==
                          config::PolicyAction::kTcp;
  std::optional<registry::ListenerRegistration> registration;
  if (policy_tcp) {
    SMC_LOG_INFO("listener on port {}: policy says tcp: not published", port_of(local));
  } else {
    registration =
        registry::ListenerRegistration::publish(runtime_dir(engine->config()), fd, &error);
    if (!registration) {
      SMC_LOG_WARN("listener on port {} not published ({}): clients will use TCP", port_of(local),
                   error);
    } else {
      SMC_LOG_DEBUG("listener on port {} published", port_of(local));
    }
  }
  // A process with a listener uses smcpre: it is listed from now on.
  stats::segment();
  // Tracked either way: accepted connections still answer a client's Proposal.
  auto listener = std::make_shared<Listener>(std::move(registration), policy_tcp);
  std::lock_guard lock(g_listeners_mutex);
  std::erase_if(g_listeners, [](const std::weak_ptr<Listener>& l) { return l.expired(); });
  g_listeners.push_back(listener);
  return listener;
}

bool Engine::eligible_destination(int fd, const sockaddr* addr, socklen_t len, uint32_t* reason) {
  *reason = static_cast<uint32_t>(DeclineCode::kPeerUnknown);
  EngineState* engine = EngineState::get();
  if (!engine) *reason = static_cast<uint32_t>(DeclineCode::kDisabled);
  if (!engine || addr == nullptr) return false;
  const size_t need = addr->sa_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  if ((addr->sa_family != AF_INET && addr->sa_family != AF_INET6) || len < need) return false;
  const int saved_errno = errno;
  const config::Config& config = engine->config();
  const sockaddr_storage dest = normalized(addr, len);
  const uint16_t port = port_of(dest);
  bool result = false;
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
        result = true;
        break;
      case config::PolicyAction::kNone:
        // Without sock_diag the registry reads /proc (up to milliseconds): the interface
        // list goes first then, so that a remote destination never pays for it.
        if (registry::lookups_read_proc()) {
          result = is_local_address(dest) &&
                   registry::destination_published(runtime_dir(config), fd, dest);
        } else {
          result = registry::destination_published(runtime_dir(config), fd, dest) &&
                   is_local_address(dest);
        }
        result = result || config::peer_rules_match(config.peers, dest_addr);
        break;
    }
  }
  errno = saved_errno;
  return result;
}

void Engine::on_not_proposed(uint32_t reason) {
  // Counted only where smcpre runs: a disabled process publishes nothing.
  if (reason == static_cast<uint32_t>(DeclineCode::kDisabled) || !EngineState::get()) return;
  stats::count_fallback(reason);
}

std::shared_ptr<Socket> Engine::on_connected(int fd) {
  EngineState* engine = EngineState::get();
  if (!engine) return nullptr;
  const int saved_errno = errno;
  std::shared_ptr<Socket> socket;
  {
    HandshakeResult r = client_handshake(fd, *engine);
    socket = make_client_socket(fd, r);
  }
  errno = saved_errno;
  return socket;
}

std::shared_ptr<Socket> Engine::on_accepted(int fd, const std::shared_ptr<Listener>& listener) {
  if (!listener || !EngineState::get()) return nullptr;
  const int saved_errno = errno;
  auto socket = make_server_socket(fd, listener->policy_tcp(), false);
  errno = saved_errno;
  return socket;
}

std::shared_ptr<Socket> Engine::on_inherited(int fd) {
  const int saved_errno = errno;
  std::shared_ptr<Socket> socket;
  if (at_stream_start(fd)) {
    if (EngineState* engine = EngineState::get()) {
      sockaddr_storage local{};
      socklen_t len = sizeof local;
      const bool policy_tcp = getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
                              config::policy_decide(engine->config(), config::PolicyRole::kServer,
                                                    reinterpret_cast<const sockaddr*>(&local)) ==
                                  config::PolicyAction::kTcp;
      socket = make_server_socket(fd, policy_tcp, true);
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
