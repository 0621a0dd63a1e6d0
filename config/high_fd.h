// Where smcpre's own file descriptors live: at the top of the fd space.
//
// Applications size tables by fd number: wrk's and redis's event loops reject an fd at or
// above the size they asked for, select() cannot see fd 1024 and up. An SMC connection
// needs internal fds (the TCP watch, the readiness mirror's two ends, per-link eventfds
// and epolls); taken from the bottom, as the kernel hands them out, they would push the
// application's own sockets past those limits. So every internal fd is moved up, just
// below RLIMIT_NOFILE's soft limit (capped, so that a huge limit does not grow the
// kernel's fd table), and the application keeps the low numbers it would have had
// without smcpre.
#pragma once

namespace smcpre::sys {

// Moves `fd` (which must be close-on-exec already) to a free number near the top of the
// fd space and returns the new number; the old one is closed. If the top is full or the
// limit is small, `fd` stays where it is: placement is best effort and never costs the
// caller its fd. A negative `fd` is returned unchanged, so that a creating call can be
// wrapped: `move_fd_high(eventfd(0, EFD_CLOEXEC))`.
int move_fd_high(int fd);

// A close-on-exec duplicate of `fd`, near the top if there is room, else the lowest free
// number (F_DUPFD_CLOEXEC); -1 with errno on failure.
int dup_high(int fd);

// The lowest number move_fd_high() uses with the current limit (for tests).
int high_fd_floor();

}  // namespace smcpre::sys
