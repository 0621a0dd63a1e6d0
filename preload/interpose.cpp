// Exception-proof calls into the engine and the interposer's log lines.
#include "preload/interpose.h"

#include <fcntl.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "config/log.h"
#include "config/sys.h"
#include "core/engine.h"
#include "preload/epoll_sets.h"

namespace smcpre::preload {

void log_engine_exception(const char* call, const char* what) {
  log_safely([&] { SMC_LOG_ERROR("preload: engine threw from {}: {}", call, what); });
}

void log_stale_fd(int fd) {
  log_safely([&] {
    SMC_LOG_DEBUG("preload: fd {} was closed without passing through smcpre; forgetting it", fd);
  });
}

// An exception on the data path cannot fall back to the kernel (bytes may already have
// moved over SMC), so the call fails with EIO.
ssize_t smc_recv(core::Socket& s, const iovec* iov, int iovcnt, int flags) {
  bool returned = false;
  ssize_t n = engine_call("recv", ssize_t{-1}, [&] {
    ssize_t r = s.recv(iov, iovcnt, flags);
    returned = true;
    return r;
  });
  if (!returned) errno = EIO;
  return n;
}

ssize_t smc_send(core::Socket& s, const iovec* iov, int iovcnt, int flags) {
  bool returned = false;
  ssize_t n = engine_call("send", ssize_t{-1}, [&] {
    ssize_t r = s.send(iov, iovcnt, flags);
    returned = true;
    return r;
  });
  if (!returned) errno = EIO;
  return n;
}

namespace {

// Whether `fd`'s one-shot registration in epoll set `epfd` is still armed. The kernel
// clears a one-shot registration's event bits when it fires; /proc/self/fdinfo/<epfd>
// shows them ("tfd: <fd> events: <hex>"). When that cannot be read, disarmed is assumed:
// a second thread handling the connection at once would corrupt the stream.
bool oneshot_armed(int epfd, int fd) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
  const int info = ::open(path, O_RDONLY | O_CLOEXEC);
  if (info < 0) return false;
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = sys::read(info, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  sys::close(info);
  constexpr uint32_t kFlags = EPOLLONESHOT | EPOLLET | EPOLLWAKEUP | EPOLLEXCLUSIVE;
  for (size_t at = text.find("tfd:"); at != std::string::npos; at = text.find("tfd:", at + 4)) {
    int tfd = -1;
    unsigned events = 0;
    if (std::sscanf(text.c_str() + at, "tfd: %d events: %x", &tfd, &events) == 2 && tfd == fd) {
      return (events & ~kFlags) != 0;
    }
  }
  return false;
}

}  // namespace

void settle_epoll_registrations(Tracked& t, int fd) noexcept {
  if (!t.epoll_pending.load(std::memory_order_seq_cst)) return;
  if (t.socket->undecided()) return;
  std::lock_guard lock(t.epoll_mutex);
  settle_epoll_registrations_locked(t, fd);
}

void settle_epoll_registrations_locked(Tracked& t, int fd) noexcept {
  if (!t.epoll_pending.load(std::memory_order_seq_cst)) return;
  if (t.socket->undecided()) return;
  SavedErrno saved;
  if (t.socket->is_smc()) {
    for (Tracked::EpollRegistration& reg : t.epoll_registrations) {
      // The kernel socket will never be ready in an SMC way: its registration goes, and
      // the socket joins the set's user-space members, or its mirror comes in its place,
      // with the application's own mask and data. A one-shot registration that has fired
      // stays disarmed until the application re-arms it (EPOLL_CTL_MOD).
      const bool armed = !(reg.event.events & EPOLLONESHOT) || oneshot_armed(reg.epfd, fd);
      real().epoll_ctl(reg.epfd, EPOLL_CTL_DEL, fd, nullptr);
      // Its waits reap the links from now on (a registration made before connect() never
      // passed the tracked path of epoll_ctl, which marks the set).
      epoll_sets().mark(reg.epfd);
      if (auto set = user_epoll_set(reg.epfd, true)) {
        const int rc = engine_call("epoll_ctl", int{ENOMEM},
                                   [&] { return set->add(fd, t.socket, reg.event, armed); });
        if (rc == 0) continue;
        move_user_epoll_set_to_kernel(reg.epfd);
      }
      if (!register_mirror(reg.epfd, *t.socket, reg.event, armed)) {
        log_safely([&] {
          SMC_LOG_WARN("preload: fd {} turned SMC but cannot be watched in epoll set {}", fd,
                       reg.epfd);
        });
      }
    }
  }
  t.epoll_registrations.clear();
  t.epoll_pending.store(false, std::memory_order_release);
}

}  // namespace smcpre::preload
