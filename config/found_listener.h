// What a listener lookup answers, shared by the sock_diag lookup (listener_lookup.h) and
// its /proc fallback (proc_listeners.h), so that neither module includes the other's face.
#pragma once

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

}  // namespace smcpre::registry
