// Socket set-up hooks: where connections and listeners become tracked. socket() and
// bind() track nothing: a socket becomes interesting only once it is connected or
// listening.

// The hooks define the very names glibc's headers may wrap: no _FORTIFY_SOURCE inline
// wrappers, and no _FILE_OFFSET_BITS=64 redirects (fcntl -> fcntl64, sendfile ->
// sendfile64), which would give two hooks one symbol. Both names are hooked anyway.
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstring>

#include "config/config.h"
#include "config/sys.h"
#include "preload/interpose.h"
#include "preload/preconnect_epoll.h"

namespace smcpre::preload {
namespace {

// An AF_INET/AF_INET6 TCP socket? Asked of the kernel directly (sys::, not our hooks).
bool is_inet_tcp(int fd) {
  int value = 0;
  socklen_t len = sizeof(value);
  if (sys::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &len) != 0 ||
      (value != AF_INET && value != AF_INET6)) {
    return false;
  }
  len = sizeof(value);
  if (sys::getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &len) != 0 || value != SOCK_STREAM) {
    return false;
  }
  len = sizeof(value);
  return sys::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &value, &len) == 0 && value == IPPROTO_TCP;
}

// The socket's identity (0 if the kernel cannot tell): a descriptor closed by another
// thread while connect() blocked may name another socket by the time connect() returns.
uint64_t socket_cookie(int fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (sys::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0) return 0;
  return cookie;
}

// A listener smcpre tracks already (listen() again only changes the backlog).
bool is_tracked_listener(int fd) {
  std::shared_ptr<Tracked> existing = fds().lookup(fd);
  return existing != nullptr && existing->listener != nullptr;
}

bool is_blocking(int fd) {
  const int flags = sys::fcntl(fd, F_GETFL);
  return flags >= 0 && (flags & O_NONBLOCK) == 0;
}

// accept() and accept4() after the real call returned `fd` from `listen_fd`.
void on_accept(int listen_fd, int fd) {
  if (!fds().any()) return;  // no listener is tracked, and nothing can be stale
  SavedErrno saved;
  std::shared_ptr<Tracked> listener = fds().lookup(listen_fd);
  std::shared_ptr<Tracked> entry;
  if (listener != nullptr && listener->listener != nullptr) entry = prepare_entry(fd);
  std::shared_ptr<core::Socket> socket;
  if (entry != nullptr) {
    socket = engine_call("on_accepted", std::shared_ptr<core::Socket>{},
                         [&] { return core::Engine::on_accepted(fd, listener->listener); });
  }
  if (socket != nullptr) {
    entry->socket = std::move(socket);
    track(fd, std::move(entry));
  } else {
    forget_stale(fd);
  }
  saved.restore();
}

// getsockopt(SO_ERROR) answered by the engine: copies like the kernel does (truncating
// to *optlen, writing back the length used).
int put_int_option(int value, void* optval, socklen_t* optlen) {
  if (optlen == nullptr) {
    errno = EFAULT;
    return -1;
  }
  const int len = static_cast<int>(*optlen);
  if (len < 0) {
    errno = EINVAL;
    return -1;
  }
  const socklen_t n = len < static_cast<int>(sizeof(value)) ? static_cast<socklen_t>(len)
                                                            : socklen_t{sizeof(value)};
  if (n > 0 && optval == nullptr) {
    errno = EFAULT;
    return -1;
  }
  if (n > 0) std::memcpy(optval, &value, n);
  *optlen = n;
  return 0;
}

}  // namespace
}  // namespace smcpre::preload

using namespace smcpre::preload;  // NOLINT: the hooks below are C symbols

SMCPRE_HOOK int socket(int domain, int type, int protocol) noexcept {
  const auto& r = real();
  if (r.socket == nullptr) return enosys();
  const int fd = r.socket(domain, type, protocol);
  if (fd >= 0 && fds().any()) {
    SavedErrno saved;
    forget_stale(fd);
    saved.restore();
  }
  // SOCK_NONBLOCK and SOCK_CLOEXEC ride in the type's high bits.
  if (fd >= 0 && (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_STREAM &&
      (protocol == 0 || protocol == IPPROTO_TCP)) {
    note_fresh_tcp_socket(fd);
  }
  return fd;
}

SMCPRE_HOOK int bind(int fd, const sockaddr* addr, socklen_t len) noexcept {
  const auto& r = real();
  if (r.bind == nullptr) return enosys();
  return r.bind(fd, addr, len);
}

SMCPRE_HOOK int connect(int fd, const sockaddr* addr, socklen_t len) {
  const auto& r = real();
  if (r.connect == nullptr) return enosys();
  // Eligibility is decided from the destination *before* the connect: a one-connection
  // server may accept, close its listener and unpublish it before our connect() returns.
  // The option program's mark must be on the socket before its SYN leaves, too.
  smcpre::core::ConnectPlan plan;
  bool nonblocking = false;
  bool inet_tcp = false;
  if (addr != nullptr && len >= sizeof(sa_family_t) &&
      (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
    SavedErrno saved;
    // A tracked socket reconnecting (after connect(AF_UNSPEC)) stays as the engine has it.
    const bool tracked = fds().any() && fds().lookup(fd) != nullptr;
    if (!tracked && is_inet_tcp(fd)) {
      inet_tcp = true;
      nonblocking = !is_blocking(fd);
      plan = engine_call("plan_connect", smcpre::core::ConnectPlan{}, [&] {
        return smcpre::core::Engine::plan_connect(fd, addr, len, nonblocking);
      });
    }
    saved.restore();
  }
  const bool decide_after = plan.decides_after_connect();
  const uint64_t cookie = decide_after ? socket_cookie(fd) : 0;
  int rc = r.connect(fd, addr, len);
  if (!decide_after) {
    if (inet_tcp) {
      SavedErrno saved;
      forget_fresh_socket(fd);  // TCP for good: its registrations stay where they are
      saved.restore();
    }
    if (inet_tcp && (rc == 0 || errno == EINPROGRESS)) {
      SavedErrno saved;
      engine_call("on_not_proposed", 0, [&] {
        smcpre::core::Engine::on_not_proposed(plan.reason);
        return 0;
      });
      // The process uses smcpre now: its exit runs the engine's exit (summary, counters).
      ensure_process_handlers();
      saved.restore();
    }
    return rc;
  }
  // The connection goes on without us deciding it (failed, interrupted, or still in
  // progress after the wait below): no option in a retransmitted SYN.
  auto abandon = [&] {
    SavedErrno saved;
    engine_call("on_connect_abandoned", 0, [&] {
      smcpre::core::Engine::on_connect_abandoned(fd, plan);
      return 0;
    });
    saved.restore();
    return rc;
  };
  if (rc != 0) {
    // A non-blocking connect to an smcpre server: the CLC handshake must come before any
    // application byte, so the connection is completed here (one round trip, bounded by
    // the handshake timeout) and the application still sees EINPROGRESS, then a writable
    // socket with SO_ERROR 0, as it expects. A connect that fails or takes longer stays
    // TCP, its error left for SO_ERROR untouched. (plan_connect marks a non-blocking
    // socket for the option program only when it is eligible anyway: only those wait.)
    if (!nonblocking || errno != EINPROGRESS) return abandon();
    SavedErrno saved;
    const int timeout_ms = static_cast<int>(smcpre::config::current().handshake_timeout_ms);
    pollfd p{fd, POLLOUT, 0};
    int n;
    while ((n = smcpre::sys::poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    saved.restore();
    if (n != 1 || p.revents != POLLOUT) return abandon();
  }
  SavedErrno saved;
  // Closed by another thread meanwhile (as with TCP, the connect went on): the number may
  // be another socket's now, whose stream the handshake must not touch.
  if (socket_cookie(fd) != cookie) {
    saved.restore();
    return rc;
  }
  if (std::shared_ptr<Tracked> entry = prepare_entry(fd); entry != nullptr) {
    entry->socket = engine_call("on_connected", std::shared_ptr<smcpre::core::Socket>{},
                                [&] { return smcpre::core::Engine::on_connected(fd, plan); });
    if (entry->socket != nullptr) {
      // Registrations the application made before connect() follow the socket onto its
      // readiness mirror (preconnect_epoll.h).
      entry->epoll_registrations = take_preconnect_registrations(fd);
      entry->epoll_pending.store(!entry->epoll_registrations.empty(), std::memory_order_seq_cst);
      track(fd, entry);
      settle_epoll_registrations(*entry, fd);
    } else {
      // Not proposed after all (the server did not announce SMC): counted as a fallback.
      ensure_process_handlers();
    }
  }
  forget_fresh_socket(fd);
  saved.restore();
  return rc;
}

SMCPRE_HOOK int listen(int fd, int backlog) noexcept {
  const auto& r = real();
  if (r.listen == nullptr) return enosys();
  // listen() again on a published listener only changes the backlog. A new one is marked
  // for the option program before the kernel starts listening (its listen callback arms
  // the socket then).
  const bool fresh = is_inet_tcp(fd) && !(fds().any() && is_tracked_listener(fd));
  if (fresh) {
    SavedErrno saved;
    engine_call("before_listen", 0, [&] {
      smcpre::core::Engine::before_listen(fd);
      return 0;
    });
    saved.restore();
  }
  const int rc = r.listen(fd, backlog);
  if (rc != 0) return rc;
  SavedErrno saved;
  forget_fresh_socket(fd);
  if (std::shared_ptr<Tracked> entry = fresh ? prepare_entry(fd) : nullptr; entry != nullptr) {
    entry->listener = engine_call("on_listen", std::shared_ptr<smcpre::core::Listener>{},
                                  [&] { return smcpre::core::Engine::on_listen(fd); });
    if (entry->listener != nullptr) track(fd, std::move(entry));
  }
  saved.restore();
  return rc;
}

SMCPRE_HOOK int accept(int fd, sockaddr* addr, socklen_t* addrlen) {
  const auto& r = real();
  if (r.accept == nullptr) return enosys();
  const int nfd = r.accept(fd, addr, addrlen);
  if (nfd >= 0) on_accept(fd, nfd);
  return nfd;
}

SMCPRE_HOOK int accept4(int fd, sockaddr* addr, socklen_t* addrlen, int flags) {
  const auto& r = real();
  if (r.accept4 == nullptr) return enosys();
  const int nfd = r.accept4(fd, addr, addrlen, flags);
  if (nfd >= 0) on_accept(fd, nfd);
  return nfd;
}

SMCPRE_HOOK int shutdown(int fd, int how) noexcept {
  const auto& r = real();
  if (fds().any()) {
    if (std::shared_ptr<Tracked> t = tracked_socket(fd); t != nullptr) {
      SavedErrno saved;
      // Shutting down is a send-side act: an undecided server socket settles to TCP
      // here, exactly as on its first write.
      if (route_send(*t->socket, fd, 0) == smcpre::core::Path::kSmc) {
        const int rc = engine_call("shutdown", -2, [&] { return t->socket->shutdown(how); });
        if (rc == -2) {
          errno = EIO;
          return -1;
        }
        if (rc == 0) saved.restore();
        return rc;
      }
      saved.restore();
    }
  }
  if (r.shutdown == nullptr) return enosys();
  return r.shutdown(fd, how);
}

SMCPRE_HOOK int setsockopt(int fd, int level, int optname, const void* optval,
                           socklen_t optlen) noexcept {
  const auto& r = real();
  if (r.setsockopt == nullptr) return enosys();
  const int rc = r.setsockopt(fd, level, optname, optval, optlen);
  if (rc == 0 && fds().any()) {
    if (std::shared_ptr<Tracked> t = tracked_socket(fd); t != nullptr) {
      SavedErrno saved;
      engine_call("on_sockopt", false, [&] {
        t->socket->on_sockopt(level, optname, optval, optlen);
        return true;
      });
      saved.restore();
    }
  }
  return rc;
}

SMCPRE_HOOK int getsockopt(int fd, int level, int optname, void* optval,
                           socklen_t* optlen) noexcept {
  const auto& r = real();
  if (level == SOL_SOCKET && optname == SO_ERROR && fds().any()) {
    if (std::shared_ptr<Tracked> t = tracked_socket(fd); t != nullptr) {
      SavedErrno saved;
      int error = 0;
      const bool taken =
          engine_call("take_so_error", false, [&] { return t->socket->take_so_error(&error); });
      saved.restore();
      if (taken) return put_int_option(error, optval, optlen);
    }
  }
  if (r.getsockopt == nullptr) return enosys();
  return r.getsockopt(fd, level, optname, optval, optlen);
}
