// The sock_diag exact lookup (see listener_lookup.h). The kernel's handler for a request
// without NLM_F_DUMP runs the same lookup as an incoming SYN would (inet_lookup with the
// request's source as the destination and interface idiag_if), established sockets
// first: a peer 0.0.0.0:0 matches none of those, so it answers with the listener.
#include "config/listener_lookup.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "config/high_fd.h"
#include "config/sys.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace smcpre::registry {
namespace {

constexpr uint32_t kLoopbackIfindex = 1;  // lo is always ifindex 1 (LOOPBACK_IFINDEX)
constexpr int kTcpListen = 10;            // TCP_LISTEN in the kernel's tcp_states.h
constexpr int kMaxDatagrams = 4;          // stale replies skipped before giving up

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

Lookup ask(int nl, const sockaddr_storage& dest, FoundListener* out) {
  struct {
    nlmsghdr header;
    inet_diag_req_v2 req;
  } msg{};
  const uint32_t seq = g_seq.fetch_add(1, std::memory_order_relaxed) + 1;
  msg.header.nlmsg_len = sizeof msg;
  msg.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.header.nlmsg_flags = NLM_F_REQUEST;
  msg.header.nlmsg_seq = seq;
  msg.req.sdiag_family = static_cast<uint8_t>(dest.ss_family);
  msg.req.sdiag_protocol = IPPROTO_TCP;
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
  if (sent != static_cast<ssize_t>(sizeof msg)) return Lookup::kError;

  // The kernel answers within sendmsg: the reply is queued before it returns. A reply to
  // an earlier request that gave up half-way (another sequence number) is skipped.
  alignas(nlmsghdr) char reply[1024];
  for (int datagram = 0; datagram < kMaxDatagrams; ++datagram) {
    ssize_t n;
    do {
      n = sys::recv(nl, reply, sizeof reply, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return Lookup::kError;
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(reply); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return Lookup::kError;
        const auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
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

}  // namespace

Lookup find_listener(int fd, const sockaddr_storage& dest, FoundListener* out) {
  if (dest.ss_family != AF_INET && dest.ss_family != AF_INET6) return Lookup::kError;
  // The connecting socket's namespace is where its connect() goes; a thread may have
  // moved to another since (setns), or since the cached socket was made.
  const uint64_t want = netns_cookie(fd);
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
