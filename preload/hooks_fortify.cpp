// The _FORTIFY_SOURCE entry points: programs built with it (Debian builds them so) call
// these instead of read/recv/recvfrom/poll/ppoll. The buffer-size check is glibc's;
// the rest is the plain hook.

// The hooks define the very names glibc's headers may wrap: no _FORTIFY_SOURCE inline
// wrappers, and no _FILE_OFFSET_BITS=64 redirects (fcntl -> fcntl64, sendfile ->
// sendfile64), which would give two hooks one symbol. Both names are hooked anyway.
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>

#include "preload/interpose.h"

// glibc's "*** buffer overflow detected ***: terminated" abort.
extern "C" [[noreturn]] void __chk_fail(void);

using namespace smcpre::preload;  // NOLINT: the hooks below are C symbols

SMCPRE_HOOK ssize_t __read_chk(int fd, void* buf, size_t nbytes, size_t buflen) {
  if (nbytes > buflen) __chk_fail();
  return read_impl(fd, buf, nbytes);
}

SMCPRE_HOOK ssize_t __recv_chk(int fd, void* buf, size_t len, size_t buflen, int flags) {
  if (len > buflen) __chk_fail();
  return recv_impl(fd, buf, len, flags);
}

SMCPRE_HOOK ssize_t __recvfrom_chk(int fd, void* buf, size_t len, size_t buflen, int flags,
                                   sockaddr* src_addr, socklen_t* addrlen) {
  if (len > buflen) __chk_fail();
  return recvfrom_impl(fd, buf, len, flags, src_addr, addrlen);
}

SMCPRE_HOOK int __poll_chk(pollfd* fds, nfds_t nfds, int timeout, size_t fdslen) {
  if (fdslen / sizeof(*fds) < nfds) __chk_fail();
  return poll_impl(fds, nfds, timeout);
}

SMCPRE_HOOK int __ppoll_chk(pollfd* fds, nfds_t nfds, const timespec* timeout,
                            const sigset_t* sigmask, size_t fdslen) {
  if (fdslen / sizeof(*fds) < nfds) __chk_fail();
  return ppoll_impl(fds, nfds, timeout, sigmask);
}
