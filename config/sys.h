// Raw system calls for smcpre's own I/O. Inside libsmcpre.so the plain libc names
// (recv, send, close, epoll_wait, ...) resolve to the interposer itself, so engine and
// device code must never call them on its own sockets: an SMC connection's CLC bytes
// would be routed back into the engine. These wrappers go straight to the kernel.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>

namespace smcpre::sys {

inline long ret(long r) {
  return r;
}

inline int socket(int domain, int type, int protocol) {
  return static_cast<int>(::syscall(SYS_socket, domain, type, protocol));
}
inline int connect(int fd, const sockaddr* addr, socklen_t len) {
  return static_cast<int>(::syscall(SYS_connect, fd, addr, len));
}
inline int bind(int fd, const sockaddr* addr, socklen_t len) {
  return static_cast<int>(::syscall(SYS_bind, fd, addr, len));
}
inline int listen(int fd, int backlog) {
  return static_cast<int>(::syscall(SYS_listen, fd, backlog));
}
inline int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  return static_cast<int>(::syscall(SYS_accept4, fd, addr, len, flags));
}
inline ssize_t recv(int fd, void* buf, size_t len, int flags) {
  return ::syscall(SYS_recvfrom, fd, buf, len, flags, nullptr, nullptr);
}
inline ssize_t send(int fd, const void* buf, size_t len, int flags) {
  return ::syscall(SYS_sendto, fd, buf, len, flags, nullptr, 0);
}
inline ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
  return ::syscall(SYS_sendmsg, fd, msg, flags);
}
inline ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  return ::syscall(SYS_recvmsg, fd, msg, flags);
}
inline ssize_t read(int fd, void* buf, size_t len) {
  return ::syscall(SYS_read, fd, buf, len);
}
inline ssize_t write(int fd, const void* buf, size_t len) {
  return ::syscall(SYS_write, fd, buf, len);
}
inline int close(int fd) {
  return static_cast<int>(::syscall(SYS_close, fd));
}
inline int shutdown(int fd, int how) {
  return static_cast<int>(::syscall(SYS_shutdown, fd, how));
}
inline int fcntl(int fd, int cmd, long arg = 0) {
  return static_cast<int>(::syscall(SYS_fcntl, fd, cmd, arg));
}
inline int poll(pollfd* fds, nfds_t n, int timeout_ms) {
  return static_cast<int>(::syscall(SYS_poll, fds, n, timeout_ms));
}
inline int getsockopt(int fd, int level, int name, void* val, socklen_t* len) {
  return static_cast<int>(::syscall(SYS_getsockopt, fd, level, name, val, len));
}
inline int setsockopt(int fd, int level, int name, const void* val, socklen_t len) {
  return static_cast<int>(::syscall(SYS_setsockopt, fd, level, name, val, len));
}
inline int epoll_create1(int flags) {
  return static_cast<int>(::syscall(SYS_epoll_create1, flags));
}
inline int epoll_ctl(int epfd, int op, int fd, void* event) {
  return static_cast<int>(::syscall(SYS_epoll_ctl, epfd, op, fd, event));
}
inline int epoll_wait(int epfd, void* events, int max, int timeout_ms) {
  return static_cast<int>(::syscall(SYS_epoll_pwait, epfd, events, max, timeout_ms, nullptr, 8));
}

}  // namespace smcpre::sys
