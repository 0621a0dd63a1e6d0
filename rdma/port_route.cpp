// RDMA port selection, where a connection goes: its addresses (getsockname, getpeername)
// and the interface the kernel routes it over, asked with rtnetlink RTM_GETROUTE. See
// port_select.h; listing the ports is in port_list.cpp, the choice in port_select.cpp.
// Also defines the helpers the three share (port_select_common.h).
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <system_error>

#include "config/sys.h"
#include "rdma/port_select.h"
#include "rdma/port_select_common.h"

namespace smcpre::rdma {
namespace port_select_detail {

// std::strerror is not thread-safe; the engine may look routes up from several threads.
std::string errno_text(const std::string& what, int err) {
  return what + ": " + std::error_code(err, std::generic_category()).message();
}

// The address in `a` as raw bytes (4 or 16), or an empty span for other families.
std::span<const uint8_t> address_bytes(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    return {reinterpret_cast<const uint8_t*>(&in.sin_addr), 4};
  }
  if (a.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
    return {reinterpret_cast<const uint8_t*>(&in6.sin6_addr), 16};
  }
  return {};
}

}  // namespace port_select_detail

namespace {

using port_select_detail::address_bytes;
using port_select_detail::errno_text;

constexpr int kNetlinkTimeoutMs = 1000;

uint16_t port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return 0;
}

// The size of the sockaddr for its family (0 for families we do not route).
socklen_t natural_length(const sockaddr* a) {
  if (a->sa_family == AF_INET) return sizeof(sockaddr_in);
  if (a->sa_family == AF_INET6) return sizeof(sockaddr_in6);
  return 0;
}

// Copies a caller's address, turning an IPv4-mapped IPv6 address into IPv4: the kernel routes
// such a connection as IPv4, and a GID carries the IPv4 address that way too.
bool normalize(const sockaddr* in, socklen_t len, sockaddr_storage* out, std::string* error) {
  *out = {};
  if (in->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    std::memcpy(out, in, sizeof(sockaddr_in));
    return true;
  }
  if (in->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 in6;
    std::memcpy(&in6, in, sizeof in6);
    if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
      sockaddr_in in4{};
      in4.sin_family = AF_INET;
      in4.sin_port = in6.sin6_port;
      std::memcpy(&in4.sin_addr, &in6.sin6_addr.s6_addr[12], 4);
      std::memcpy(out, &in4, sizeof in4);
    } else {
      std::memcpy(out, &in6, sizeof in6);
    }
    return true;
  }
  *error = "not an IPv4 or IPv6 address (family " + std::to_string(in->sa_family) + ")";
  return false;
}

// What the route lookup is asked.
struct RouteQuery {
  const sockaddr_storage* dst = nullptr;
  const sockaddr_storage* src = nullptr;  // may be null
  uint32_t oif = 0;                       // SO_BINDTODEVICE or an IPv6 scope
  uint32_t mark = 0;                      // SO_MARK (fwmark policy rules)
};

struct RouteReply {
  uint8_t type = RTN_UNSPEC;
  uint32_t oif = 0;
  sockaddr_storage prefsrc{};  // AF_UNSPEC if the kernel named none
};

class Request {
 public:
  Request(const RouteQuery& q, uint32_t seq) {
    const auto dst = address_bytes(*q.dst);
    const auto src = q.src != nullptr ? address_bytes(*q.src) : std::span<const uint8_t>();
    rtmsg route{};
    route.rtm_family = static_cast<uint8_t>(q.dst->ss_family);
    route.rtm_dst_len = static_cast<uint8_t>(dst.size() * 8);
    route.rtm_src_len = static_cast<uint8_t>(src.size() * 8);
    std::memcpy(buf_ + NLMSG_HDRLEN, &route, sizeof route);
    len_ = NLMSG_LENGTH(sizeof route);
    add(RTA_DST, dst.data(), dst.size());
    if (!src.empty()) add(RTA_SRC, src.data(), src.size());
    if (q.oif != 0) add(RTA_OIF, &q.oif, sizeof q.oif);
    if (q.mark != 0) add(RTA_MARK, &q.mark, sizeof q.mark);
    // Ports and protocol take part in the lookup since Linux 4.17 (ip rule ... dport);
    // older kernels ignore attributes they do not know in this request.
    const uint8_t proto = IPPROTO_TCP;
    add(RTA_IP_PROTO, &proto, sizeof proto);
    if (q.src != nullptr) add_port(RTA_SPORT, port_of(*q.src));
    add_port(RTA_DPORT, port_of(*q.dst));
    nlmsghdr header{};
    header.nlmsg_len = static_cast<uint32_t>(len_);
    header.nlmsg_type = RTM_GETROUTE;
    header.nlmsg_flags = NLM_F_REQUEST;
    header.nlmsg_seq = seq;
    std::memcpy(buf_, &header, sizeof header);
  }
  const void* data() const { return buf_; }
  size_t size() const { return len_; }

 private:
  void add(uint16_t type, const void* data, size_t size) {
    rtattr attr{};
    attr.rta_type = type;
    attr.rta_len = static_cast<uint16_t>(RTA_LENGTH(size));
    const size_t at = NLMSG_ALIGN(len_);
    std::memcpy(buf_ + at, &attr, sizeof attr);
    std::memcpy(buf_ + at + RTA_LENGTH(0), data, size);
    len_ = at + RTA_ALIGN(attr.rta_len);
  }
  void add_port(uint16_t type, uint16_t port) {
    if (port == 0) return;
    const uint16_t be = htons(port);
    add(type, &be, sizeof be);
  }

  // Header, rtmsg and at most eight attributes of at most 16 bytes each.
  alignas(nlmsghdr) unsigned char buf_[256] = {};
  size_t len_ = 0;
};

int64_t now_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Parses one RTM_NEWROUTE message body (after the nlmsghdr); every length is checked
// against the bytes actually received.
bool parse_route(const unsigned char* body, size_t len, int family, RouteReply* reply,
                 std::string* error) {
  rtmsg route;
  if (len < sizeof route) {
    *error = "rtnetlink: short route message";
    return false;
  }
  std::memcpy(&route, body, sizeof route);
  reply->type = route.rtm_type;
  size_t at = NLMSG_ALIGN(sizeof route);
  while (at + sizeof(rtattr) <= len) {
    rtattr attr;
    std::memcpy(&attr, body + at, sizeof attr);
    if (attr.rta_len < sizeof attr || attr.rta_len > len - at) {
      *error = "rtnetlink: malformed route attribute";
      return false;
    }
    const unsigned char* payload = body + at + RTA_LENGTH(0);
    const size_t payload_len = attr.rta_len - RTA_LENGTH(0);
    if (attr.rta_type == RTA_OIF && payload_len == sizeof(uint32_t)) {
      std::memcpy(&reply->oif, payload, sizeof(uint32_t));
    } else if (attr.rta_type == RTA_PREFSRC) {
      if (family == AF_INET && payload_len == 4) {
        sockaddr_in in{};
        in.sin_family = AF_INET;
        std::memcpy(&in.sin_addr, payload, 4);
        std::memcpy(&reply->prefsrc, &in, sizeof in);
      } else if (family == AF_INET6 && payload_len == 16) {
        sockaddr_in6 in6{};
        in6.sin6_family = AF_INET6;
        std::memcpy(&in6.sin6_addr, payload, 16);
        std::memcpy(&reply->prefsrc, &in6, sizeof in6);
      }
    }
    at += RTA_ALIGN(attr.rta_len);
  }
  return true;
}

bool query_route(const RouteQuery& q, RouteReply* reply, std::string* error) {
  static std::atomic<uint32_t> next_seq{1};
  const uint32_t seq = next_seq.fetch_add(1, std::memory_order_relaxed);
  const Request request(q, seq);

  const int fd = sys::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    *error = errno_text("rtnetlink socket", errno);
    return false;
  }
  struct Closer {
    int fd;
    ~Closer() { sys::close(fd); }
  } closer{fd};

  if (sys::send(fd, request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) {
    *error = errno_text("rtnetlink send", errno);
    return false;
  }
  const int64_t deadline = now_ms() + kNetlinkTimeoutMs;
  alignas(nlmsghdr) unsigned char buf[8192];
  for (;;) {
    const int64_t left = deadline - now_ms();
    if (left <= 0) {
      *error = "rtnetlink: no answer to the route lookup";
      return false;
    }
    pollfd pfd{fd, POLLIN, 0};
    const int ready = sys::poll(&pfd, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) {
      *error = errno_text("rtnetlink poll", errno);
      return false;
    }
    if (ready == 0) continue;  // the deadline check above ends it

    sockaddr_nl from{};
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    const ssize_t got = sys::recvmsg(fd, &msg, MSG_DONTWAIT);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got < 0) {
      *error = errno_text("rtnetlink receive", errno);
      return false;
    }
    if ((msg.msg_flags & MSG_TRUNC) != 0) {
      *error = "rtnetlink: route answer truncated";
      return false;
    }
    if (from.nl_pid != 0) continue;  // only the kernel answers route lookups

    size_t at = 0;
    const auto total = static_cast<size_t>(got);
    while (at + sizeof(nlmsghdr) <= total) {
      nlmsghdr header;
      std::memcpy(&header, buf + at, sizeof header);
      if (header.nlmsg_len < sizeof header || header.nlmsg_len > total - at) {
        *error = "rtnetlink: malformed answer";
        return false;
      }
      const unsigned char* body = buf + at + NLMSG_HDRLEN;
      const size_t body_len = header.nlmsg_len - NLMSG_HDRLEN;
      at += NLMSG_ALIGN(header.nlmsg_len);
      if (header.nlmsg_seq != seq) continue;  // not ours (cannot happen on a private socket)
      if (header.nlmsg_type == NLMSG_ERROR) {
        nlmsgerr err;
        if (body_len < sizeof err) {
          *error = "rtnetlink: short error message";
          return false;
        }
        std::memcpy(&err, body, sizeof err);
        if (err.error == 0) continue;  // an acknowledgement, not the answer
        *error = errno_text("no route to " + address_string(*q.dst), -err.error);
        return false;
      }
      if (header.nlmsg_type == RTM_NEWROUTE) {
        return parse_route(body, body_len, q.dst->ss_family, reply, error);
      }
    }
  }
}

// The interface that holds `address` (for a local delivery, where the kernel's route only
// says lo), and whether `ifindex` is a loopback interface. One getifaddrs pass for both.
struct InterfaceFacts {
  uint32_t holder = 0;
  bool loopback = false;
};

InterfaceFacts interface_facts(const sockaddr_storage& address, uint32_t ifindex) {
  InterfaceFacts facts;
  char oif_name[IF_NAMESIZE] = {};
  const bool have_oif = ifindex != 0 && ::if_indextoname(ifindex, oif_name) != nullptr;
  const auto want = address_bytes(address);
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return facts;
  for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
    if (it->ifa_addr == nullptr) continue;
    // IPv4 addresses with a label are listed under it ("eth0:1"); the device is before ':'.
    std::string_view name = it->ifa_name;
    name = name.substr(0, name.find(':'));
    if (have_oif && name == oif_name && (it->ifa_flags & IFF_LOOPBACK) != 0) {
      facts.loopback = true;
    }
    if (facts.holder != 0 || want.empty() || it->ifa_addr->sa_family != address.ss_family) {
      continue;
    }
    sockaddr_storage candidate{};
    std::memcpy(&candidate, it->ifa_addr,
                address.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
    const auto have = address_bytes(candidate);
    if (!std::equal(want.begin(), want.end(), have.begin(), have.end())) continue;
    // A link-local IPv6 address can be on several interfaces: the scope decides.
    if (address.ss_family == AF_INET6) {
      const uint32_t scope = reinterpret_cast<const sockaddr_in6&>(address).sin6_scope_id;
      const uint32_t candidate_scope =
          reinterpret_cast<const sockaddr_in6&>(candidate).sin6_scope_id;
      if (scope != 0 && candidate_scope != 0 && scope != candidate_scope) continue;
    }
    facts.holder = ::if_nametoindex(std::string(name).c_str());
  }
  ::freeifaddrs(list);
  return facts;
}

bool resolve(const RouteQuery& q, SocketRoute* out, std::string* error) {
  RouteReply reply;
  if (!query_route(q, &reply, error)) return false;
  if (reply.type != RTN_UNICAST && reply.type != RTN_LOCAL) {
    *error = "no usable route to " + address_string(*q.dst) + " (route type " +
             std::to_string(reply.type) + ")";
    return false;
  }
  out->peer = *q.dst;
  if (q.src != nullptr) {
    out->local = *q.src;
  } else if (reply.prefsrc.ss_family != AF_UNSPEC) {
    out->local = reply.prefsrc;
  } else if (reply.type == RTN_LOCAL) {
    out->local = *q.dst;  // talking to ourselves: the kernel uses the destination as source
    if (out->local.ss_family == AF_INET) {
      reinterpret_cast<sockaddr_in&>(out->local).sin_port = 0;
    } else {
      reinterpret_cast<sockaddr_in6&>(out->local).sin6_port = 0;
    }
  } else {
    out->local = {};
  }
  out->ifindex = reply.oif;
  // The kernel's preferred source has no scope. A link-local one belongs to the interface
  // the lookup was tied to (the peer's scope), else to the route's (lo for a local delivery
  // would be wrong: that is what the scope is needed to resolve).
  if (out->local.ss_family == AF_INET6) {
    auto& in6 = reinterpret_cast<sockaddr_in6&>(out->local);
    if (IN6_IS_ADDR_LINKLOCAL(&in6.sin6_addr) && in6.sin6_scope_id == 0) {
      in6.sin6_scope_id = q.oif != 0 ? q.oif : reply.oif;
    }
  }
  if (reply.type == RTN_LOCAL || reply.oif != 0) {
    const InterfaceFacts facts = interface_facts(out->local, reply.oif);
    if ((reply.type == RTN_LOCAL || facts.loopback) && facts.holder != 0) {
      out->ifindex = facts.holder;
    }
  }
  char name[IF_NAMESIZE] = {};
  out->ifname = out->ifindex != 0 && ::if_indextoname(out->ifindex, name) != nullptr ? name : "";
  if (out->ifindex == 0) {
    *error = "the route to " + address_string(*q.dst) + " names no interface";
    return false;
  }
  return true;
}

}  // namespace

bool route_of_socket(int fd, SocketRoute* out, std::string* error) {
  *out = {};
  sockaddr_storage raw_local{};
  sockaddr_storage raw_peer{};
  socklen_t local_len = sizeof raw_local;
  socklen_t peer_len = sizeof raw_peer;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&raw_local), &local_len) != 0) {
    *error = errno_text("getsockname", errno);
    return false;
  }
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&raw_peer), &peer_len) != 0) {
    *error = errno_text("getpeername", errno);
    return false;
  }
  sockaddr_storage local{};
  sockaddr_storage peer{};
  if (!normalize(reinterpret_cast<const sockaddr*>(&raw_local), local_len, &local, error) ||
      !normalize(reinterpret_cast<const sockaddr*>(&raw_peer), peer_len, &peer, error)) {
    return false;
  }
  RouteQuery q;
  q.dst = &peer;
  q.src = &local;
  // What else steers the kernel's own lookup for this socket: its fwmark and bound device.
  socklen_t len = sizeof q.mark;
  if (sys::getsockopt(fd, SOL_SOCKET, SO_MARK, &q.mark, &len) != 0) q.mark = 0;
  char bound[IF_NAMESIZE] = {};
  len = sizeof bound;
  if (sys::getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, bound, &len) == 0 && len > 0) {
    bound[sizeof bound - 1] = '\0';
    q.oif = ::if_nametoindex(bound);
  }
  if (q.oif == 0 && peer.ss_family == AF_INET6) {
    q.oif = reinterpret_cast<const sockaddr_in6&>(peer).sin6_scope_id;
  }
  return resolve(q, out, error);
}

bool route_to(const sockaddr* dst, const sockaddr* src_or_null, SocketRoute* out,
              std::string* error) {
  *out = {};
  sockaddr_storage peer{};
  sockaddr_storage local{};
  if (!normalize(dst, natural_length(dst), &peer, error)) return false;
  RouteQuery q;
  q.dst = &peer;
  if (src_or_null != nullptr) {
    if (!normalize(src_or_null, natural_length(src_or_null), &local, error)) return false;
    if (local.ss_family != peer.ss_family) {
      *error = "source " + address_string(local) + " and destination " + address_string(peer) +
               " are of different address families";
      return false;
    }
    q.src = &local;
  }
  if (peer.ss_family == AF_INET6) q.oif = reinterpret_cast<const sockaddr_in6&>(peer).sin6_scope_id;
  return resolve(q, out, error);
}

}  // namespace smcpre::rdma
