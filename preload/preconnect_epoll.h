// epoll registrations made before connect(), as proxies make them for their upstream
// sockets: the fresh socket joins the set (IN|OUT|RDHUP, often EPOLLET) and the
// non-blocking connect follows. Such a socket is not tracked yet, so its registration
// goes to the kernel socket; here it is also recorded, and when connect() turns the socket
// SMC the records become the tracked socket's, which moves them to its readiness mirror
// (settle_epoll_registrations), exactly as for an undecided server socket.
//
// Only sockets socket() created as TCP over IPv4/IPv6 and not yet connected or listening
// are recorded (a bit per fd: no lookup and no lock for any other fd). An epoll set closed
// and its number reused between the registration and the connect would be misread; that
// takes another thread racing the proxy's own two consecutive calls.
#pragma once

#include <sys/epoll.h>

#include <vector>

#include "preload/interpose.h"

namespace smcpre::preload {

// socket() made `fd` a TCP socket (IPv4 or IPv6): registrations of it are recorded until
// it connects, listens or closes.
void note_fresh_tcp_socket(int fd) noexcept;
// `fd` connected, listens or closed: nothing more is recorded, and what was is dropped.
void forget_fresh_socket(int fd) noexcept;
// epoll_ctl(epfd, op, fd, event) succeeded on an untracked fd: recorded if `fd` is fresh.
void note_preconnect_registration(int epfd, int op, int fd, const epoll_event* event) noexcept;
// The recorded registrations of `fd`, taken (connect() turned it SMC): the fd is no longer
// fresh. Empty when there were none, or when memory ran out (then they stay on the kernel
// socket, as before this existed, and a warning says so).
std::vector<Tracked::EpollRegistration> take_preconnect_registrations(int fd) noexcept;

}  // namespace smcpre::preload
