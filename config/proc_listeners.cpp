// The /proc/net/tcp{,6} scan (see proc_listeners.h). A line, as the kernel prints it:
//    sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//     0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4711
//     ...
// An address is printed as 32-bit words (one for IPv4, four for IPv6), each the %08X of the
// word as loaded from memory in host byte order: parsing each word and storing it back in
// host order gives the address's bytes as they were. The port is in host byte order.
// The kernel lists the listening hash before the established one (tcp_get_idx), so the
// LISTEN sockets come first: the scan of a file ends at the first line past them, and the
// cost grows with the host's listeners, not with its connections.
#include "config/proc_listeners.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "config/sys.h"

namespace smcpre::registry::proc_net {
namespace {

constexpr uint32_t kTcpListen = 0x0A;   // TCP_LISTEN
constexpr uint32_t kTcpSynRecv = 0x03;  // before 4.4 the listening section also listed these
constexpr size_t kChunk = 4096;
// A file longer than this is given up on (kError: no SMC, never a wrong listener).
constexpr size_t kMaxBytes = size_t{4} << 20;

// Ranks of a listener for the destination; higher wins, as in the kernel's lookup.
constexpr int kExact = 4;        // the destination's own address, same family
constexpr int kExactMapped = 3;  // IPv4 destination: [::ffff:a.b.c.d] in tcp6
constexpr int kWildcard = 2;     // 0.0.0.0, or [::] for an IPv6 destination
constexpr int kDualStack = 1;    // IPv4 destination: [::] in tcp6, assumed not V6ONLY

struct Token {
  const char* p = nullptr;
  size_t n = 0;
};

// Splits `line` at blanks into up to `max` tokens; returns how many.
size_t split(const char* line, size_t n, Token* tokens, size_t max) {
  size_t count = 0;
  size_t i = 0;
  while (count < max) {
    while (i < n && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i == n) break;
    const size_t start = i;
    while (i < n && line[i] != ' ' && line[i] != '\t') ++i;
    tokens[count++] = Token{line + start, i - start};
  }
  return count;
}

// Exactly `n` (1..8) hex digits.
bool hex32(const char* s, size_t n, uint32_t* out) {
  if (n == 0 || n > 8) return false;
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = s[i];
    uint32_t d;
    if (c >= '0' && c <= '9') {
      d = static_cast<uint32_t>(c - '0');
    } else if (c >= 'A' && c <= 'F') {
      d = static_cast<uint32_t>(c - 'A' + 10);
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<uint32_t>(c - 'a' + 10);
    } else {
      return false;
    }
    v = v << 4 | d;
  }
  *out = v;
  return true;
}

bool decimal(const Token& t, uint64_t* out) {
  if (t.n == 0 || t.n > 19) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < t.n; ++i) {
    if (t.p[i] < '0' || t.p[i] > '9') return false;
    v = v * 10 + static_cast<uint64_t>(t.p[i] - '0');
  }
  *out = v;
  return true;
}

// "ADDR:PORT" with ADDR 8 (tcp) or 32 (tcp6) hex digits; addr receives 4 or 16 bytes.
bool endpoint(const Token& t, bool v6, uint8_t* addr, uint16_t* port) {
  const size_t words = v6 ? 4 : 1;
  if (t.n != words * 8 + 5 || t.p[words * 8] != ':') return false;
  uint32_t p;
  if (!hex32(t.p + words * 8 + 1, 4, &p)) return false;
  for (size_t w = 0; w < words; ++w) {
    uint32_t word;
    if (!hex32(t.p + w * 8, 8, &word)) return false;
    std::memcpy(addr + w * 4, &word, 4);
  }
  *port = static_cast<uint16_t>(p);
  return true;
}

bool all_zero(const uint8_t* a, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != 0) return false;
  }
  return true;
}

}  // namespace

ListenerScan::ListenerScan(const sockaddr_storage& dest) : v4_dest_(dest.ss_family == AF_INET) {
  if (v4_dest_) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(dest);
    std::memcpy(addr_, &v4.sin_addr, 4);
    port_ = ntohs(v4.sin_port);
  } else {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(dest);
    std::memcpy(addr_, &v6.sin6_addr, 16);
    port_ = ntohs(v6.sin6_port);
  }
}

bool ListenerScan::complete() const {
  return rank_ >= (v4_dest_ ? kExactMapped : kExact);
}

bool ListenerScan::found(FoundListener* out) const {
  if (rank_ <= 0) return false;
  *out = best_;
  return true;
}

void ListenerScan::take_line(bool v6, const char* line, size_t n) {
  // sl, local, remote, st, tx:rx, tr:when, retrnsmt, uid, timeout, inode
  Token t[10];
  if (split(line, n, t, 10) < 10) return;  // the header, or a truncated line
  uint8_t local[16];
  uint16_t port;
  uint32_t state;
  if (!endpoint(t[1], v6, local, &port) || !hex32(t[3].p, t[3].n, &state)) return;
  if (state != kTcpListen) {
    if (state != kTcpSynRecv) section_ended_ = true;
    return;
  }
  if (port != port_) return;
  int rank = 0;
  if (!v6) {
    if (!v4_dest_) return;
    if (std::memcmp(local, addr_, 4) == 0) {
      rank = kExact;
    } else if (all_zero(local, 4)) {
      rank = kWildcard;
    }
  } else if (v4_dest_) {
    static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(local, kMappedPrefix, 12) == 0 && std::memcmp(local + 12, addr_, 4) == 0) {
      rank = kExactMapped;
    } else if (all_zero(local, 16)) {
      rank = kDualStack;
    }
  } else if (std::memcmp(local, addr_, 16) == 0) {
    rank = kExact;
  } else if (all_zero(local, 16)) {
    rank = kWildcard;
  }
  if (rank <= rank_) return;  // of equals, the first listed
  uint64_t uid;
  uint64_t inode;
  if (!decimal(t[7], &uid) || !decimal(t[9], &inode) || inode == 0) return;
  rank_ = rank;
  best_.uid = static_cast<uid_t>(uid);
  best_.inode = inode;
}

bool ListenerScan::feed(bool v6, const char* data, size_t n) {
  while (n > 0 && !complete() && !section_ended_) {
    const auto* nl = static_cast<const char*>(std::memchr(data, '\n', n));
    const size_t len = nl != nullptr ? static_cast<size_t>(nl - data) : n;
    if (nl != nullptr && partial_len_ == 0 && !overlong_) {
      take_line(v6, data, len);  // a whole line within this piece: no copy
    } else {
      if (!overlong_ && partial_len_ + len <= kMaxLine) {
        std::memcpy(partial_ + partial_len_, data, len);
        partial_len_ += len;
      } else {
        overlong_ = true;
      }
      if (nl != nullptr) {
        if (!overlong_) take_line(v6, partial_, partial_len_);
        partial_len_ = 0;
        overlong_ = false;
      }
    }
    if (nl == nullptr) break;
    data += len + 1;
    n -= len + 1;
  }
  return complete() || section_ended_;
}

bool ListenerScan::end_file(bool v6) {
  if (partial_len_ > 0 && !overlong_ && !complete() && !section_ended_) {
    take_line(v6, partial_, partial_len_);
  }
  partial_len_ = 0;
  overlong_ = false;
  section_ended_ = false;  // the next file has a listening section of its own
  return complete();
}

namespace {

enum class Read { kOk, kMissing, kError };

Read scan_file(const char* path, bool v6, ListenerScan& scan) {
  const int fd =
      static_cast<int>(::syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd < 0) return errno == ENOENT ? Read::kMissing : Read::kError;
  char buf[kChunk];
  size_t total = 0;
  Read result = Read::kOk;
  for (;;) {
    const ssize_t n = sys::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) break;
    total += static_cast<size_t>(n > 0 ? n : 0);
    if (n < 0 || total > kMaxBytes) {
      result = Read::kError;
      break;
    }
    if (scan.feed(v6, buf, static_cast<size_t>(n))) break;
  }
  scan.end_file(v6);
  sys::close(fd);
  return result;
}

}  // namespace

Lookup find_in_files(const char* tcp_path, const char* tcp6_path, const sockaddr_storage& dest,
                     FoundListener* out) {
  if (dest.ss_family != AF_INET && dest.ss_family != AF_INET6) return Lookup::kError;
  ListenerScan scan(dest);
  if (dest.ss_family == AF_INET && scan_file(tcp_path, false, scan) != Read::kOk) {
    return Lookup::kError;
  }
  if (!scan.complete() && scan_file(tcp6_path, true, scan) == Read::kError) return Lookup::kError;
  return scan.found(out) ? Lookup::kFound : Lookup::kNone;
}

}  // namespace smcpre::registry::proc_net
