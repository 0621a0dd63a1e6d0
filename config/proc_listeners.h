// The listener a same-host TCP connection would reach, read from the kernel's /proc view
// (/proc/net/tcp and tcp6): listener_lookup's fallback when sock_diag has no TCP handler
// (inet_diag/tcp_diag neither loaded nor loadable). It ranks the LISTEN sockets of the
// destination's port as the kernel's listener lookup does: the exact local address first,
// then the wildcard of the same family, and for IPv4 a [::] socket last.
// Limits, beyond those of listener_lookup.h: a [::] socket counts as dual-stack (Linux's
// default) since /proc does not show IPV6_V6ONLY; a socket bound to a device is not told
// apart (/proc does not show the device); of several sockets on one address and port (a
// SO_REUSEPORT group) the first listed is taken.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

#include "config/found_listener.h"

namespace smcpre::registry::proc_net {

// One scan for `dest` (AF_INET, or AF_INET6 not v4-mapped) over the text of the tcp file,
// then the tcp6 file, fed in pieces of any size (a line may span two pieces).
class ListenerScan {
 public:
  explicit ListenerScan(const sockaddr_storage& dest);

  // Feeds the next piece of the tcp (v6 = false) or tcp6 (v6 = true) file. Returns true
  // once the rest of this file cannot matter: an exact match, or past the file's LISTEN
  // sockets (the kernel lists them first). The caller may stop reading it.
  bool feed(bool v6, const char* data, size_t n);
  // The end of a file (or of reading it): takes a last line that had no newline. Returns
  // complete().
  bool end_file(bool v6);
  // True once nothing better can be found in any file: the other file need not be read.
  bool complete() const;

  // The best listener seen so far, if any.
  bool found(FoundListener* out) const;

 private:
  void take_line(bool v6, const char* line, size_t n);

  static constexpr size_t kMaxLine = 256;  // tcp6 lines are ~180 bytes
  bool v4_dest_;
  uint8_t addr_[16]{};  // the destination, network byte order
  uint16_t port_;       // host byte order, as /proc prints it
  int rank_ = 0;        // of the best listener so far; 0: none
  FoundListener best_;
  char partial_[kMaxLine];
  size_t partial_len_ = 0;
  bool overlong_ = false;       // the line being collected did not fit: it is skipped
  bool section_ended_ = false;  // this file's listening section is over
};

// Reads `tcp_path` and `tcp6_path` (text in /proc/net/tcp format) in bounded chunks,
// stopping at the first exact match; tcp is not read for an IPv6 destination. A missing
// tcp6 file (IPv6 disabled) counts as empty; a missing tcp file or a read error: kError.
Lookup find_in_files(const char* tcp_path, const char* tcp6_path, const sockaddr_storage& dest,
                     FoundListener* out);

}  // namespace smcpre::registry::proc_net
