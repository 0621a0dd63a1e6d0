// The sock_diag exact lookup (see listener_lookup.h). The kernel's handler for a request
// without NLM_F_DUMP runs the same lookup as an incoming SYN would (inet_lookup with the
// request's source as the destination and interface idiag_if), established sockets
// first: a peer 0.0.0.0:0 matches none of those, so it answers with the listener.
// Without a TCP handler (inet_diag or tcp_diag not loaded, and module autoload impossible)
// the kernel answers every request -ENOENT, exactly as when no socket matches: a probe
// tells the two apart once per process, and such a host is asked through /proc instead.
#include "config/listener_lookup.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "config/high_fd.h"
#include "config/log.h"
#include "config/proc_listeners.h"
#include "config/sys.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace smcpre::registry {
namespace {

constexpr uint32_t kLoopbackIfindex = 1;  // lo is always ifindex 1 (LOOPBACK_IFINDEX)
constexpr int kTcpListen = 10;            // TCP_LISTEN in the kernel's tcp_states.h
constexpr int kMaxDatagrams = 4;          // stale replies skipped before giving up

// NLMSG_OK and NLMSG_NEXT over an unsigned count of the bytes left: the macros take a
// signed int and compare it with the header's unsigned nlmsg_len (-Wsign-compare).

// True if a whole message starts at `h`, within the `left` bytes from there.
bool message_ok(const nlmsghdr* h, size_t left) {
  return left >= sizeof(nlmsghdr) && h->nlmsg_len >= sizeof(nlmsghdr) && h->nlmsg_len <= left;
}

// The message after `h`, which message_ok() accepted; *left becomes the bytes from there.
const nlmsghdr* next_message(const nlmsghdr* h, size_t* left) {
  // The last message's alignment padding may reach past the datagram: then nothing is left.
  const size_t step = std::min<size_t>(NLMSG_ALIGN(h->nlmsg_len), *left);
  *left -= step;
  return reinterpret_cast<const nlmsghdr*>(reinterpret_cast<const char*>(h) + step);
}

int open_diag_socket() {
  return sys::move_fd_high(
      sys::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_SOCK_DIAG));
}

// The network namespace a socket belongs to; 0 if the kernel cannot say (before 5.14).
uint64_t netns_cookie(int fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (fd < 0 || sys::getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) return 0;
  return cookie;
}

// One process-wide socket, reused while its namespace is the one asked about. Guarded by
// try_lock only: a thread that finds it busy (or a fork child whose parent held it) uses a
// fresh socket rather than waiting.
std::mutex g_mutex;
int g_fd = -1;
pid_t g_owner = 0;  // the process that opened g_fd (a fork child opens its own)
uint64_t g_cookie = 0;
std::atomic<uint32_t> g_seq{0};

// What the probe found, for the rest of the process (a fork child keeps it: the kernel's
// handlers are host-wide). Benign race: two threads may both probe, and agree.
constexpr int kHandlerUnknown = 0;
constexpr int kHandlerPresent = 1;
constexpr int kHandlerMissing = 2;
std::atomic<int> g_handler{kHandlerUnknown};
std::atomic<bool> g_force_proc{false};

struct Request {
  nlmsghdr header;
  inet_diag_req_v2 req;
};

Request make_request(uint8_t family, uint8_t protocol, uint16_t flags) {
  Request msg{};
  msg.header.nlmsg_len = sizeof msg;
  msg.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.header.nlmsg_flags = flags;
  msg.header.nlmsg_seq = g_seq.fetch_add(1, std::memory_order_relaxed) + 1;
  msg.req.sdiag_family = family;
  msg.req.sdiag_protocol = protocol;
  return msg;
}

bool send_request(int nl, Request& msg) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  iovec iov{&msg, sizeof msg};
  msghdr mh{};
  mh.msg_name = &kernel;
  mh.msg_namelen = sizeof kernel;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  ssize_t sent;
  do {
    sent = sys::sendmsg(nl, &mh, 0);
  } while (sent < 0 && errno == EINTR);
  return sent == static_cast<ssize_t>(sizeof msg);
}

ssize_t receive(int nl, char* buf, size_t len) {
  ssize_t n;
  do {
    n = sys::recv(nl, buf, len, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n;
}

Lookup ask(int nl, const sockaddr_storage& dest, FoundListener* out) {
  Request msg = make_request(static_cast<uint8_t>(dest.ss_family), IPPROTO_TCP, NLM_F_REQUEST);
  const uint32_t seq = msg.header.nlmsg_seq;
  msg.req.idiag_states = 1u << kTcpListen;
  msg.req.id.idiag_if = kLoopbackIfindex;
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  if (dest.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(dest);
    msg.req.id.idiag_sport = v4.sin_port;
    std::memcpy(msg.req.id.idiag_src, &v4.sin_addr, 4);
  } else {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(dest);
    msg.req.id.idiag_sport = v6.sin6_port;
    std::memcpy(msg.req.id.idiag_src, &v6.sin6_addr, 16);
  }
  if (!send_request(nl, msg)) return Lookup::kError;

  // The kernel answers within sendmsg: the reply is queued before it returns. A reply to
  // an earlier request that gave up half-way (another sequence number) is skipped.
  alignas(nlmsghdr) char reply[1024];
  for (int datagram = 0; datagram < kMaxDatagrams; ++datagram) {
    const ssize_t n = receive(nl, reply, sizeof reply);
    if (n <= 0) return Lookup::kError;
    size_t left = static_cast<size_t>(n);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(reply); message_ok(h, left);
         h = next_message(h, &left)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return Lookup::kError;
        const auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        // Only trusted to mean "no such socket" once the probe has found a handler.
        return err->error == -ENOENT ? Lookup::kNone : Lookup::kError;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
          h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) {
        return Lookup::kError;
      }
      const auto* d = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      if (d->idiag_state != kTcpListen) return Lookup::kNone;
      out->inode = d->idiag_inode;
      out->uid = d->idiag_uid;
      return Lookup::kFound;
    }
  }
  return Lookup::kError;
}

// A socket of its own for one lookup, checked to be in the namespace asked about.
Lookup ask_fresh(uint64_t want_cookie, const sockaddr_storage& dest, FoundListener* out) {
  const int nl = open_diag_socket();
  if (nl < 0) return Lookup::kError;
  Lookup result = Lookup::kError;
  if (want_cookie == 0 || netns_cookie(nl) == want_cookie) result = ask(nl, dest, out);
  sys::close(nl);
  return result;
}

// True if sock_diag cannot answer for TCP here (probed once, then cached).
bool sock_diag_missing() {
  if (g_force_proc.load(std::memory_order_relaxed)) return true;
  int state = g_handler.load(std::memory_order_relaxed);
  if (state == kHandlerUnknown) {
    const DiagHandler found = probe_diag_handler(AF_INET, IPPROTO_TCP);
    if (found == DiagHandler::kUnknown) return false;  // not cached: asked again next time
    state = found == DiagHandler::kMissing ? kHandlerMissing : kHandlerPresent;
    int expected = kHandlerUnknown;
    if (g_handler.compare_exchange_strong(expected, state) && state == kHandlerMissing) {
      SMC_LOG_INFO(
          "sock_diag has no TCP handler here (inet_diag/tcp_diag not loaded): same-host "
          "listeners are looked up in /proc/thread-self/net/tcp and tcp6 instead");
    }
  }
  return state == kHandlerMissing;
}

// The fallback: the calling thread's /proc view, which is that of its network namespace.
Lookup find_in_proc(uint64_t want_cookie, const sockaddr_storage& dest, FoundListener* out) {
  if (want_cookie != 0) {
    // A socket made now is in the thread's namespace: it must be the connecting socket's.
    const int probe = sys::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0) return Lookup::kError;
    const uint64_t mine = netns_cookie(probe);
    sys::close(probe);
    if (mine != want_cookie) return Lookup::kError;
  }
  return proc_net::find_in_files("/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6", dest,
                                 out);
}

}  // namespace

DiagHandler probe_diag_handler(uint8_t family, uint8_t protocol) {
  const int nl =
      sys::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_SOCK_DIAG);
  if (nl < 0) {
    // No NETLINK_SOCK_DIAG for this process at all (a sandbox): as good as no handler.
    const bool refused =
        errno == EAFNOSUPPORT || errno == EPROTONOSUPPORT || errno == EPERM || errno == EACCES;
    return refused ? DiagHandler::kMissing : DiagHandler::kUnknown;
  }
  // A dump of the sockets in no state: it selects nothing, and the kernel skips its tables.
  Request msg = make_request(family, protocol, NLM_F_REQUEST | NLM_F_DUMP);
  msg.req.idiag_states = 0;
  const uint32_t seq = msg.header.nlmsg_seq;
  DiagHandler result = DiagHandler::kUnknown;
  if (send_request(nl, msg)) {
    // The first part of a dump is made within sendmsg: here, all of it.
    alignas(nlmsghdr) char reply[1024];
    bool done = false;
    for (int datagram = 0; datagram < kMaxDatagrams && !done; ++datagram) {
      const ssize_t n = receive(nl, reply, sizeof reply);
      if (n <= 0) break;
      size_t left = static_cast<size_t>(n);
      for (auto* h = reinterpret_cast<const nlmsghdr*>(reply); message_ok(h, left) && !done;
           h = next_message(h, &left)) {
        if (h->nlmsg_seq != seq) continue;
        int code = 0;
        if (h->nlmsg_type == NLMSG_ERROR) {
          // No handler for the family (inet_diag missing): sock_diag refuses the request.
          done = true;
          if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) break;
          code = static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
        } else if (h->nlmsg_type == NLMSG_DONE) {
          // The dump's end carries its error: -ENOENT when inet_diag has no handler for the
          // protocol (tcp_diag missing), 0 when the handler ran.
          done = true;
          if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int)))
            std::memcpy(&code, NLMSG_DATA(h), sizeof code);
        } else {
          continue;  // a socket after all: the handler answered
        }
        result = code == 0         ? DiagHandler::kPresent
                 : code == -ENOENT ? DiagHandler::kMissing
                                   : DiagHandler::kUnknown;
      }
    }
  }
  sys::close(nl);
  return result;
}

bool lookups_read_proc() {
  return sock_diag_missing();
}

void use_proc_fallback_for_tests(bool on) {
  g_force_proc.store(on, std::memory_order_relaxed);
}

Lookup find_listener(int fd, const sockaddr_storage& dest, FoundListener* out) {
  if (dest.ss_family != AF_INET && dest.ss_family != AF_INET6) return Lookup::kError;
  // The connecting socket's namespace is where its connect() goes; a thread may have
  // moved to another since (setns), or since the cached socket was made.
  const uint64_t want = netns_cookie(fd);
  if (sock_diag_missing()) return find_in_proc(want, dest, out);
  // Without namespace cookies (an old kernel) only a fresh socket, made in the calling
  // thread's namespace, is known to look in the right place.
  if (want == 0) return ask_fresh(0, dest, out);
  std::unique_lock lock(g_mutex, std::try_to_lock);
  if (!lock.owns_lock()) return ask_fresh(want, dest, out);
  if (g_fd >= 0 && (g_owner != ::getpid() || g_cookie != want)) {
    // A fork child's inherited copy shares the parent's socket: closing it here leaves the
    // parent's alone. A different namespace: this one is replaced.
    sys::close(g_fd);
    g_fd = -1;
  }
  if (g_fd < 0) {
    g_fd = open_diag_socket();
    if (g_fd < 0) return Lookup::kError;
    g_owner = ::getpid();
    g_cookie = netns_cookie(g_fd);
    if (g_cookie != want) return Lookup::kError;  // the thread is not in the socket's namespace
  }
  return ask(g_fd, dest, out);
}

}  // namespace smcpre::registry
