// The real libc functions behind every hook, found with dlsym(RTLD_NEXT, ...).
//
// Resolved lazily, all at once, by the first hook that runs (never in a constructor:
// loading libsmcpre.so must cost a program nothing until it uses a socket). A function
// the C library lacks (close_range before glibc 2.34, fcntl64 before 2.28) stays null and
// its hook fails with ENOSYS instead of crashing.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace smcpre::preload {

// X(name): every libc function the interposer replaces. The pointer types are taken from
// glibc's own declarations, so a prototype mismatch cannot creep in.
#define SMCPRE_REAL_FUNCTIONS(X) \
  X(socket)                      \
  X(connect)                     \
  X(bind)                        \
  X(listen)                      \
  X(accept)                      \
  X(accept4)                     \
  X(shutdown)                    \
  X(getsockopt)                  \
  X(setsockopt)                  \
  X(read)                        \
  X(write)                       \
  X(readv)                       \
  X(writev)                      \
  X(send)                        \
  X(recv)                        \
  X(sendto)                      \
  X(recvfrom)                    \
  X(sendmsg)                     \
  X(recvmsg)                     \
  X(sendmmsg)                    \
  X(recvmmsg)                    \
  X(sendfile)                    \
  X(sendfile64)                  \
  X(splice)                      \
  X(close)                       \
  X(close_range)                 \
  X(dup)                         \
  X(dup2)                        \
  X(dup3)                        \
  X(fcntl)                       \
  X(fcntl64)                     \
  X(ioctl)                       \
  X(poll)                        \
  X(ppoll)                       \
  X(select)                      \
  X(pselect)                     \
  X(epoll_create)                \
  X(epoll_create1)               \
  X(epoll_ctl)                   \
  X(epoll_pwait)                 \
  X(epoll_pwait2)                \
  X(posix_spawn)                 \
  X(posix_spawnp)

struct RealFunctions {
#define SMCPRE_REAL_MEMBER(name) decltype(&::name) name = nullptr;
  SMCPRE_REAL_FUNCTIONS(SMCPRE_REAL_MEMBER)
#undef SMCPRE_REAL_MEMBER
};

namespace detail {
[[gnu::visibility("hidden")]] extern constinit RealFunctions real_functions;
[[gnu::visibility("hidden")]] extern constinit std::atomic<bool> real_resolved;
[[gnu::visibility("hidden")]] const RealFunctions& resolve_real() noexcept;
}  // namespace detail

// The table of real functions; resolves it on first use (thread-safe).
inline const RealFunctions& real() noexcept {
  if (detail::real_resolved.load(std::memory_order_acquire)) [[likely]] {
    return detail::real_functions;
  }
  return detail::resolve_real();
}

// What a hook returns when its real function does not exist in this C library.
template <typename R = int>
inline R enosys() noexcept {
  errno = ENOSYS;
  return static_cast<R>(-1);
}

}  // namespace smcpre::preload
