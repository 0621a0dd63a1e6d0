// fd life-cycle hooks: close, close_range, dup, dup2, dup3, fcntl(F_DUPFD*), and the
// status-flag changes a tracked socket must hear of: fcntl(F_SETFL), ioctl(FIONBIO).
//
// Every fd that refers to a tracked socket must be in the table (else its reads would
// bypass the engine), and the engine must hear release() exactly once, when the last of
// them is closed, while that fd still refers to the socket.

// The hooks define the very names glibc's headers may wrap: no _FORTIFY_SOURCE inline
// wrappers, and no _FILE_OFFSET_BITS=64 redirects (fcntl -> fcntl64, sendfile ->
// sendfile64), which would give two hooks one symbol. Both names are hooked anyway.
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS

#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdarg>

#include "config/high_fd.h"
#include "config/sys.h"
#include "preload/epoll_sets.h"
#include "preload/interpose.h"
#include "preload/preconnect_epoll.h"

namespace smcpre::preload {
namespace {

// After a successful dup of `oldfd` into `newfd`: the copy shares old's entry. Returns
// false (newfd closed again, errno set) if the copy of a tracked socket cannot be
// tracked: an untracked alias would let its reads and writes bypass SMC.
bool share_entry(int oldfd, int newfd) {
  std::shared_ptr<Tracked> entry = fds().lookup(oldfd);
  if (entry == nullptr) {
    forget_stale(newfd);
    return true;
  }
  if (!in_owner_process()) return true;  // a vfork child: the table is the parent's
  if (!fds().reserve(newfd)) {
    sys::close(newfd);
    errno = newfd >= TrackedTable::kMaxFds ? EMFILE : ENOMEM;
    return false;
  }
  track(newfd, std::move(entry));
  return true;
}

// dup2 and dup3 (is_dup3 false: dup2). newfd is implicitly closed by the real call; if
// it was the last fd of a tracked socket, the engine's release() needs an fd that still
// refers to that socket afterwards: a private duplicate made beforehand. That keeps a
// failing dup2 (EBADF, EINTR, EBUSY) from disturbing anything.
int dup2_common(int oldfd, int newfd, int flags, bool is_dup3) {
  const auto& r = real();
  auto real_call = [&] {
    const int rc = is_dup3 ? r.dup3(oldfd, newfd, flags) : r.dup2(oldfd, newfd);
    if (rc >= 0 && oldfd != newfd) copy_epoll_bits(oldfd, newfd);
    return rc;
  };
  if (is_dup3 ? r.dup3 == nullptr : r.dup2 == nullptr) return enosys();
  if (!fds().any() || oldfd == newfd) return real_call();

  SavedErrno saved;
  std::shared_ptr<Tracked> source = fds().lookup(oldfd);
  std::shared_ptr<Tracked> victim = fds().lookup(newfd);
  if (source == nullptr && victim == nullptr) {
    saved.restore();
    return real_call();
  }
  if (!in_owner_process()) {
    note_other_process();  // a vfork child setting up its descriptors for exec
    saved.restore();
    return real_call();
  }
  if (source != nullptr && !fds().reserve(newfd)) {
    errno = newfd >= TrackedTable::kMaxFds ? EMFILE : ENOMEM;
    return -1;
  }
  int keep = -1;
  if (victim != nullptr && victim->socket != nullptr) {
    keep = sys::dup_high(newfd);
    if (keep < 0) {
      // No fd left for the duplicate: treat newfd as closed up front, like close()
      // would, unless the call is bound to fail on oldfd anyway.
      if (sys::fcntl(oldfd, F_GETFD) < 0) {
        saved.restore();
        return real_call();
      }
      untrack(newfd);
    }
  }

  saved.restore();
  const int rc = real_call();
  const SavedErrno result;
  if (rc >= 0) {
    TrackedTable::Removed gone =
        source != nullptr ? fds().install(newfd, source) : fds().remove(newfd);
    dispose(std::move(gone), keep);
    if (source != nullptr) ensure_process_handlers();
  }
  if (keep >= 0) sys::close(keep);
  result.restore();
  return rc;
}

// F_DUPFD / F_DUPFD_CLOEXEC through fcntl or fcntl64.
int fcntl_dupfd(decltype(&::fcntl) real_fcntl, int fd, int cmd, int arg) {
  const int nfd = real_fcntl(fd, cmd, arg);
  if (nfd >= 0) copy_epoll_bits(fd, nfd);
  if (nfd < 0 || !fds().any()) return nfd;
  SavedErrno saved;
  if (!share_entry(fd, nfd)) return -1;
  saved.restore();
  return nfd;
}

// fcntl(F_SETFL) or ioctl(FIONBIO) succeeded on `fd`: a tracked socket learns its new
// status flags (O_NONBLOCK decides whether its SMC-path calls wait).
void status_flags_changed(int fd) {
  if (!fds().any()) return;
  std::shared_ptr<Tracked> t = tracked_socket(fd);
  if (t == nullptr) return;
  SavedErrno saved;
  const int flags = sys::fcntl(fd, F_GETFL);
  if (flags >= 0) {
    engine_call("on_status_flags", 0, [&] {
      t->socket->on_status_flags(flags);
      return 0;
    });
  }
  saved.restore();
}

// fcntl's third argument depends on cmd. F_DUPFD* and F_SETFL take an int, read as
// such. For every other command the argument (or its absence) is passed on exactly as
// glibc's own fcntl reads it: one pointer-sized vararg, which also carries an int
// argument unchanged.
int fcntl_common(decltype(&::fcntl) real_fcntl, int fd, int cmd, va_list ap) {
  if (real_fcntl == nullptr) return enosys();
  switch (cmd) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC:
      return fcntl_dupfd(real_fcntl, fd, cmd, va_arg(ap, int));
    case F_SETFL: {
      const int rc = real_fcntl(fd, cmd, va_arg(ap, int));
      if (rc == 0) status_flags_changed(fd);
      return rc;
    }
    default:
      return real_fcntl(fd, cmd, va_arg(ap, void*));
  }
}

}  // namespace
}  // namespace smcpre::preload

using namespace smcpre::preload;  // NOLINT: the hooks below are C symbols

SMCPRE_HOOK int close(int fd) {
  const auto& r = real();
  if (r.close == nullptr) return enosys();
  forget_epoll_bits(fd);
  forget_fresh_socket(fd);
  // The lookup first: in_owner_process() costs a syscall, paid only for tracked fds.
  if (fds().any() && fds().lookup(fd) != nullptr) {
    SavedErrno saved;
    if (in_owner_process()) {
      untrack(fd);
    } else {
      note_other_process();  // a vfork child, which will keep the rest after exec
    }
    saved.restore();
  }
  return r.close(fd);
}

// CLOSE_RANGE_CLOEXEC closes nothing now. CLOSE_RANGE_UNSHARE closes only in a private
// copy of the fd table: the other threads keep the fds, so the connections stay. An
// invalid call (first > last, unknown flags) must fail without side effects.
SMCPRE_HOOK int close_range(unsigned int first, unsigned int last, int flags) noexcept {
  const auto& r = real();
  if (r.close_range == nullptr) return enosys();
  if (fds().any()) {
    SavedErrno saved;
    if (!in_owner_process()) {
      note_other_process();  // a vfork child closing what it will not keep across exec
    } else if (flags == 0 && first <= last) {
      fds().remove_range(first, last, [](int fd, TrackedTable::Removed removed) noexcept {
        dispose(std::move(removed), fd);
      });
    }
    saved.restore();
  }
  return r.close_range(first, last, flags);
}

SMCPRE_HOOK int dup(int oldfd) noexcept {
  const auto& r = real();
  if (r.dup == nullptr) return enosys();
  const int nfd = r.dup(oldfd);
  if (nfd >= 0) copy_epoll_bits(oldfd, nfd);
  if (nfd < 0 || !fds().any()) return nfd;
  SavedErrno saved;
  if (!share_entry(oldfd, nfd)) return -1;
  saved.restore();
  return nfd;
}

SMCPRE_HOOK int dup2(int oldfd, int newfd) noexcept {
  return dup2_common(oldfd, newfd, 0, false);
}

SMCPRE_HOOK int dup3(int oldfd, int newfd, int flags) noexcept {
  return dup2_common(oldfd, newfd, flags, true);
}

SMCPRE_HOOK int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  const int rc = fcntl_common(real().fcntl, fd, cmd, ap);
  va_end(ap);
  return rc;
}

SMCPRE_HOOK int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  const int rc = fcntl_common(real().fcntl64, fd, cmd, ap);
  va_end(ap);
  return rc;
}

// Only FIONBIO matters (it sets O_NONBLOCK); the argument is passed on as glibc's
// ioctl reads it, one pointer-sized vararg.
SMCPRE_HOOK int ioctl(int fd, unsigned long request, ...) noexcept {
  const auto& r = real();
  if (r.ioctl == nullptr) return enosys();
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if ((request == FIONREAD || request == SIOCOUTQ || request == SIOCOUTQNSD) && fds().any()) {
    if (std::shared_ptr<Tracked> t = tracked_socket(fd)) {
      SavedErrno saved;
      // FIONREAD settles an undecided server socket the way a read would (a Proposal
      // waiting there is answered first, never counted as data).
      if (request == FIONREAD) {
        route_recv(*t->socket, fd, MSG_DONTWAIT | MSG_PEEK);
        settle_epoll_registrations(*t, fd);
      }
      uint64_t inq = 0;
      uint64_t outq = 0;
      if (t->socket->queue_sizes(&inq, &outq)) {
        if (arg == nullptr) {
          errno = EFAULT;
          return -1;
        }
        // SIOCOUTQNSD (not yet sent): an SMC write is on its way once posted.
        const uint64_t value = request == FIONREAD ? inq : request == SIOCOUTQ ? outq : 0;
        *static_cast<int*>(arg) = static_cast<int>(std::min<uint64_t>(value, INT_MAX));
        saved.restore();
        return 0;
      }
      saved.restore();
    }
  }
  const int rc = r.ioctl(fd, request, arg);
  if (rc == 0 && request == FIONBIO) status_flags_changed(fd);
  return rc;
}
