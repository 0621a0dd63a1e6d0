// Which TCP listener a same-host connection would reach, asked of the kernel itself
// (sock_diag, NETLINK_SOCK_DIAG). The answer proves three things that no file can: the
// listener exists (is in LISTEN now), it is in the connecting socket's network namespace,
// and it is the one the kernel picks for that address (an exact bind before a wildcard,
// a dual-stack [::] for IPv4 unless IPV6_V6ONLY) -- so a plain server on the same port at
// another address or in another namespace is never mistaken for an smcpre listener.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>

namespace smcpre::registry {

struct FoundListener {
  uint64_t inode = 0;  // the listening socket's inode (fstat's st_ino of its fd)
  uid_t uid = 0;       // the socket's owner (who created it)
};

enum class Lookup {
  kFound,
  kNone,   // no listener would take a connection to that address
  kError,  // could not be asked (no netlink, another namespace, a malformed reply)
};

// The listener that a connection from this host to `dest` (AF_INET, or AF_INET6 not
// v4-mapped: callers normalize) would reach in the network namespace of socket `fd`
// (-1: the calling thread's). One netlink request and reply on a cached socket (a fresh
// one when the namespace differs or another thread is using the cached one); never
// blocks. Limits: of a SO_REUSEPORT group, the member the kernel picks for the lookup's
// own flow; a listener bound to a device other than lo is not seen (a local connection
// arrives on lo).
Lookup find_listener(int fd, const sockaddr_storage& dest, FoundListener* out);

}  // namespace smcpre::registry
