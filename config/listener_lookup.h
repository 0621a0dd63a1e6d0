// Which TCP listener a same-host connection would reach, asked of the kernel itself
// (sock_diag, NETLINK_SOCK_DIAG). The answer proves three things that no file can: the
// listener exists (is in LISTEN now), it is in the connecting socket's network namespace,
// and it is the one the kernel picks for that address (an exact bind before a wildcard,
// a dual-stack [::] for IPv4 unless IPV6_V6ONLY) -- so a plain server on the same port at
// another address or in another namespace is never mistaken for an smcpre listener.
// A kernel whose sock_diag has no TCP handler (inet_diag/tcp_diag not loaded nor
// loadable) is asked through /proc/net/tcp{,6} instead (proc_listeners.h).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>

#include "config/found_listener.h"

namespace smcpre::registry {

// The listener that a connection from this host to `dest` (AF_INET, or AF_INET6 not
// v4-mapped: callers normalize) would reach in the network namespace of socket `fd`
// (-1: the calling thread's). One netlink request and reply on a cached socket (a fresh
// one when the namespace differs or another thread is using the cached one); never
// blocks. Limits: of a SO_REUSEPORT group, the member the kernel picks for the lookup's
// own flow; a listener bound to a device other than lo is not seen (a local connection
// arrives on lo).
// The first call probes whether sock_diag can answer (probe_diag_handler); if not, this
// and every later call of the process reads the calling thread's /proc/thread-self/net/tcp
// and tcp6 (kError if `fd` is in another network namespace than the thread).
Lookup find_listener(int fd, const sockaddr_storage& dest, FoundListener* out);

// True if find_listener() reads /proc in this process (probing first if nobody has): a
// lookup then walks the kernel's TCP tables, 0.1 to a few ms instead of a few us.
bool lookups_read_proc();

enum class DiagHandler {
  kPresent,
  kMissing,  // the kernel answers every request for these sockets with -ENOENT
  kUnknown,  // could not be asked
};

// Whether sock_diag has a handler for `family`/`protocol` sockets: one dump request that
// selects no socket (no TCP state), on a socket of its own. A present handler ends the
// dump cleanly; a missing one, whatever module is missing, answers -ENOENT (after the
// kernel's own attempt to load it). A process that cannot open NETLINK_SOCK_DIAG at all
// counts as missing.
DiagHandler probe_diag_handler(uint8_t family, uint8_t protocol);

// For tests only: makes find_listener() take the /proc path as on a host without the
// handler (the probe's answer is left alone).
void use_proc_fallback_for_tests(bool on);

}  // namespace smcpre::registry
