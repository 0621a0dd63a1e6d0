// RDMA port selection by route. See port_select.h for the rules; the why is below.
#include "rdma/port_select.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <infiniband/verbs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <string_view>
#include <system_error>

#include "config/sys.h"

namespace smcpre::rdma {

const char* to_string(GidType type) {
  switch (type) {
    case GidType::kIb:
      return "IB";
    case GidType::kRoceV1:
      return "RoCEv1";
    case GidType::kRoceV2:
      return "RoCEv2";
  }
  return "unknown";
}

namespace {

// std::strerror is not thread-safe; the engine may look routes up from several threads.
std::string errno_text(const std::string& what, int err) {
  return what + ": " + std::error_code(err, std::generic_category()).message();
}

void add_problem(std::string* problems, const std::string& text) {
  if (!problems->empty()) *problems += "; ";
  *problems += text;
}

// ---------------------------------------------------------------------------------------------
// Enumeration (libibverbs)

PathMtu path_mtu_of(ibv_mtu mtu) {
  switch (mtu) {
    case IBV_MTU_256:
      return PathMtu::k256;
    case IBV_MTU_512:
      return PathMtu::k512;
    case IBV_MTU_1024:
      return PathMtu::k1024;
    case IBV_MTU_2048:
      return PathMtu::k2048;
    case IBV_MTU_4096:
      return PathMtu::k4096;
  }
  // A value this libibverbs does not know: the smallest MTU is the one that surely works.
  return PathMtu::k256;
}

std::string port_state_text(const ibv_port_attr& attr) {
  std::string text;
  switch (attr.state) {
    case IBV_PORT_NOP:
      text = "NOP";
      break;
    case IBV_PORT_DOWN:
      text = "DOWN";
      break;
    case IBV_PORT_INIT:
      text = "INIT";
      break;
    case IBV_PORT_ARMED:
      text = "ARMED";
      break;
    case IBV_PORT_ACTIVE:
      return "ACTIVE";
    case IBV_PORT_ACTIVE_DEFER:
      text = "ACTIVE_DEFER";
      break;
    default:
      text = "state " + std::to_string(static_cast<int>(attr.state));
  }
  // Why a port is not active is usually in the physical state (a down netdev: Disabled).
  static constexpr const char* kPhys[] = {"",
                                          "Sleep",
                                          "Polling",
                                          "Disabled",
                                          "PortConfigurationTraining",
                                          "LinkUp",
                                          "LinkErrorRecovery",
                                          "PhyTest"};
  if (attr.phys_state >= 1 && attr.phys_state < std::size(kPhys)) {
    text += std::string(", phys ") + kPhys[attr.phys_state];
  }
  return text;
}

void add_device_ports(ibv_device* device, std::vector<PortInfo>* ports, std::string* problems) {
  const char* raw_name = ::ibv_get_device_name(device);
  const std::string name = raw_name != nullptr ? raw_name : "(unnamed device)";
  ibv_context* ctx = ::ibv_open_device(device);
  if (ctx == nullptr) {
    add_problem(problems, errno_text("ibv_open_device " + name, errno));
    return;
  }
  std::vector<PortInfo> found;
  size_t gid_slots = 0;
  ibv_device_attr device_attr{};
  if (int rc = ::ibv_query_device(ctx, &device_attr); rc != 0) {
    add_problem(problems, errno_text("ibv_query_device " + name, rc));
  } else {
    for (unsigned p = 1; p <= device_attr.phys_port_cnt; ++p) {
      ibv_port_attr attr{};
      if (int rc = ::ibv_query_port(ctx, static_cast<uint8_t>(p), &attr); rc != 0) {
        add_problem(problems,
                    errno_text("ibv_query_port " + name + " port " + std::to_string(p), rc));
        continue;
      }
      PortInfo info;
      info.device = name;
      info.port = static_cast<uint8_t>(p);
      info.active = attr.state == IBV_PORT_ACTIVE;
      info.ethernet = attr.link_layer == IBV_LINK_LAYER_ETHERNET;
      info.active_mtu = path_mtu_of(attr.active_mtu);
      info.state = port_state_text(attr);
      gid_slots += static_cast<size_t>(std::max(attr.gid_tbl_len, 0));
      found.push_back(std::move(info));
    }
  }
  if (gid_slots > 0) {
    // One call for all ports; libibverbs falls back to sysfs on kernels without the ioctl.
    std::vector<ibv_gid_entry> entries(gid_slots);
    ssize_t n = ::ibv_query_gid_table(ctx, entries.data(), entries.size(), 0);
    if (n < 0) {
      add_problem(problems, errno_text("ibv_query_gid_table " + name, static_cast<int>(-n)));
    }
    for (ssize_t i = 0; i < n && static_cast<size_t>(i) < entries.size(); ++i) {
      const ibv_gid_entry& e = entries[static_cast<size_t>(i)];
      auto port = std::find_if(found.begin(), found.end(),
                               [&](const PortInfo& info) { return info.port == e.port_num; });
      if (port == found.end()) continue;
      GidEntry gid;
      gid.index = e.gid_index;
      std::memcpy(gid.gid.data(), e.gid.raw, gid.gid.size());
      gid.ifindex = e.ndev_ifindex;
      switch (e.gid_type) {
        case IBV_GID_TYPE_IB:
          gid.type = GidType::kIb;
          break;
        case IBV_GID_TYPE_ROCE_V1:
          gid.type = GidType::kRoceV1;
          break;
        case IBV_GID_TYPE_ROCE_V2:
          gid.type = GidType::kRoceV2;
          break;
        default:
          continue;  // a GID type newer than this code: not one we could use
      }
      port->gids.push_back(gid);
    }
  }
  ::ibv_close_device(ctx);
  for (PortInfo& info : found) {
    std::sort(info.gids.begin(), info.gids.end(),
              [](const GidEntry& a, const GidEntry& b) { return a.index < b.index; });
    // A RoCE port's own netdev is that of its default GID (the lowest index); GIDs of VLAN
    // or bond upper devices come later.
    for (const GidEntry& gid : info.gids) {
      if (gid.ifindex != 0) {
        info.ifindex = gid.ifindex;
        break;
      }
    }
    ports->push_back(std::move(info));
  }
}

// getifaddrs lists one AF_PACKET entry per interface, carrying its MAC.
void fill_macs(std::vector<PortInfo>* ports) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return;
  for (PortInfo& info : *ports) {
    char name[IF_NAMESIZE] = {};
    if (!info.ethernet || info.ifindex == 0 || ::if_indextoname(info.ifindex, name) == nullptr) {
      continue;
    }
    for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
      if (it->ifa_addr == nullptr || it->ifa_addr->sa_family != AF_PACKET) continue;
      if (std::strcmp(it->ifa_name, name) != 0) continue;
      const auto* ll = reinterpret_cast<const sockaddr_ll*>(it->ifa_addr);
      if (ll->sll_halen == info.mac.size()) {
        std::memcpy(info.mac.data(), ll->sll_addr, info.mac.size());
      }
      break;
    }
  }
  ::freeifaddrs(list);
}

// ---------------------------------------------------------------------------------------------
// Route lookup (rtnetlink)

constexpr int kNetlinkTimeoutMs = 1000;

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

// ---------------------------------------------------------------------------------------------
// Choice

bool is_zero(const Gid& gid) {
  return std::all_of(gid.begin(), gid.end(), [](uint8_t b) { return b == 0; });
}

bool is_v4_mapped(const Gid& gid) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::equal(std::begin(kPrefix), std::end(kPrefix), gid.begin());
}

// The GID form of an address: IPv4 as IPv4-mapped IPv6. nullopt for AF_UNSPEC.
std::optional<Gid> gid_of_address(const sockaddr_storage& a) {
  Gid gid{};
  const auto bytes = address_bytes(a);
  if (bytes.size() == 4) {
    gid[10] = 0xff;
    gid[11] = 0xff;
    std::copy(bytes.begin(), bytes.end(), gid.begin() + 12);
    return gid;
  }
  if (bytes.size() == 16) {
    std::copy(bytes.begin(), bytes.end(), gid.begin());
    return gid;
  }
  return std::nullopt;
}

constexpr int kUnusable = -1;

// How well a RoCE GID fits the connection; lower is better. A RoCEv2 GID is an IP address
// the peer's packets are routed to, so it must be of the connection's family (the peer
// chooses its GID by the same rule); a RoCEv1 GID is only a link-layer name.
int roce_rank(const GidEntry& entry, const std::optional<Gid>& local, int family) {
  if (is_zero(entry.gid)) return kUnusable;
  if (entry.type == GidType::kRoceV2) {
    const int gid_family = is_v4_mapped(entry.gid) ? AF_INET : AF_INET6;
    if (family != AF_UNSPEC && gid_family != family) return kUnusable;
    return local && *local == entry.gid ? 0 : 1;
  }
  if (entry.type == GidType::kRoceV1) return 2;
  return kUnusable;
}

struct Best {
  const PortInfo* port = nullptr;
  const GidEntry* gid = nullptr;
  int rank = 0;
  void offer(const PortInfo& p, const GidEntry& g, int r) {
    if (r == kUnusable || (port != nullptr && r >= rank)) return;
    port = &p;
    gid = &g;
    rank = r;
  }
};

std::string netdev_text(const SocketRoute& route) {
  if (!route.ifname.empty()) return route.ifname;
  return "ifindex " + std::to_string(route.ifindex);
}

std::string route_text(const SocketRoute& route) {
  const std::string peer = address_string(route.peer);
  return peer.empty() ? std::string() : " (route to " + peer + ")";
}

std::string port_name(const PortInfo& p) {
  return p.device + " port " + std::to_string(p.port);
}

std::string state_text(const PortInfo& p) {
  return p.state.empty() ? "not active" : "not active (" + p.state + ")";
}

std::string family_gids_text(int family) {
  if (family == AF_INET) return "IPv4 RoCEv2 or RoCEv1";
  if (family == AF_INET6) return "IPv6 RoCEv2 or RoCEv1";
  return "RoCE";
}

PortChoice make_choice(const Best& best) {
  PortChoice choice;
  choice.device = best.port->device;
  choice.port = best.port->port;
  choice.gid_index = best.gid->index;
  choice.gid = best.gid->gid;
  choice.mac = best.port->mac;
  choice.mtu = best.port->active_mtu;
  return choice;
}

std::optional<PortChoice> choose_auto(std::span<const PortInfo> ports, const SocketRoute& route,
                                      std::string* why) {
  const int family =
      route.local.ss_family != AF_UNSPEC ? route.local.ss_family : route.peer.ss_family;
  const std::optional<Gid> local = gid_of_address(route.local);
  Best best;
  const PortInfo* down = nullptr;        // a RoCE port on the netdev that is not active
  const PortInfo* wrong_gids = nullptr;  // an active one without a GID that fits
  for (const PortInfo& p : ports) {
    if (!p.ethernet) continue;  // IB has no netdev to match: only when named explicitly
    bool on_netdev = false;
    bool fits = false;
    for (const GidEntry& g : p.gids) {
      if (g.ifindex != route.ifindex || route.ifindex == 0 || is_zero(g.gid)) continue;
      on_netdev = true;
      if (!p.active) break;
      const int rank = roce_rank(g, local, family);
      fits = fits || rank != kUnusable;
      best.offer(p, g, rank);
    }
    if (on_netdev && !p.active && down == nullptr) down = &p;
    if (on_netdev && p.active && !fits && wrong_gids == nullptr) wrong_gids = &p;
  }
  if (best.port != nullptr) return make_choice(best);
  if (ports.empty()) {
    *why = "no RDMA devices";
  } else if (route.ifindex == 0) {
    *why = "the connection's route names no interface";
  } else if (wrong_gids != nullptr) {
    *why = port_name(*wrong_gids) + " on netdev " + netdev_text(route) + " has no " +
           family_gids_text(family) + " GID" + route_text(route);
  } else if (down != nullptr) {
    *why = "RoCE " + port_name(*down) + " on netdev " + netdev_text(route) + " is " +
           state_text(*down) + route_text(route);
  } else {
    *why = "no active RoCE port on netdev " + netdev_text(route) + route_text(route);
  }
  return std::nullopt;
}

std::optional<PortChoice> choose_forced(std::span<const PortInfo> ports, const SocketRoute& route,
                                        const std::string& device, int forced_port,
                                        std::string* why) {
  if (forced_port < 0 || forced_port > 255) {
    *why = "invalid RDMA port number " + std::to_string(forced_port);
    return std::nullopt;
  }
  const int family =
      route.local.ss_family != AF_UNSPEC ? route.local.ss_family : route.peer.ss_family;
  const std::optional<Gid> local = gid_of_address(route.local);
  // The netdev match still counts, but only as a preference: ranks off the route come after
  // all ranks on it.
  constexpr int kOffRoute = 10;
  Best best;
  bool device_seen = false;
  const PortInfo* named = nullptr;
  const PortInfo* down = nullptr;
  bool some_active = false;
  for (const PortInfo& p : ports) {
    if (p.device != device) continue;
    device_seen = true;
    if (forced_port != 0 && p.port != forced_port) continue;
    named = &p;
    if (!p.active) {
      if (down == nullptr) down = &p;
      continue;
    }
    some_active = true;
    for (const GidEntry& g : p.gids) {
      if (!p.ethernet) {
        // InfiniBand: GIDs are the port's own names; the first valid one will do.
        if (!is_zero(g.gid)) best.offer(p, g, 0);
        continue;
      }
      const int rank = roce_rank(g, local, family);
      if (rank == kUnusable) continue;
      const bool on_route = route.ifindex != 0 && g.ifindex == route.ifindex;
      best.offer(p, g, on_route ? rank : rank + kOffRoute);
    }
  }
  if (best.port != nullptr) return make_choice(best);
  if (!device_seen) {
    *why = "RDMA device " + device + " not found";
  } else if (named == nullptr) {
    *why = "RDMA device " + device + " has no port " + std::to_string(forced_port);
  } else if (!some_active) {
    *why = forced_port != 0 ? port_name(*down) + " is " + state_text(*down)
                            : "RDMA device " + device + " has no active port";
  } else if (forced_port != 0) {
    *why = port_name(*named) + " has no usable " +
           (named->ethernet ? family_gids_text(family) + " " : std::string()) + "GID";
  } else {
    *why = "RDMA device " + device + " has no active port with a usable " +
           family_gids_text(family) + " GID";
  }
  return std::nullopt;
}

}  // namespace

std::vector<PortInfo> list_ports(std::string* error) {
  error->clear();
  std::vector<PortInfo> ports;
  int count = 0;
  ibv_device** list = ::ibv_get_device_list(&count);
  if (list == nullptr) {
    // ENOSYS: the kernel offers no uverbs (no /sys/class/infiniband_verbs): simply no devices.
    if (errno != ENOSYS) *error = errno_text("ibv_get_device_list", errno);
    return ports;
  }
  for (int i = 0; i < count; ++i) add_device_ports(list[i], &ports, error);
  ::ibv_free_device_list(list);
  fill_macs(&ports);
  std::sort(ports.begin(), ports.end(), [](const PortInfo& a, const PortInfo& b) {
    return a.device != b.device ? a.device < b.device : a.port < b.port;
  });
  return ports;
}

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

std::optional<PortChoice> choose_port(std::span<const PortInfo> ports, const SocketRoute& route,
                                      const std::string& forced_device, int forced_port,
                                      std::string* why) {
  why->clear();
  if (forced_device.empty()) return choose_auto(ports, route, why);
  return choose_forced(ports, route, forced_device, forced_port, why);
}

std::string gid_string(const Gid& gid) {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET6, gid.data(), text, sizeof text);
  return text;
}

std::string mac_string(const Mac& mac) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i != 0) text += ':';
    text += kHex[mac[i] >> 4];
    text += kHex[mac[i] & 0xf];
  }
  return text;
}

std::string address_string(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(address).sin_addr, text,
                sizeof text);
    return text;
  }
  if (address.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(address);
    ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    std::string result = text;
    if (in6.sin6_scope_id != 0) result += "%" + std::to_string(in6.sin6_scope_id);
    return result;
  }
  return {};
}

}  // namespace smcpre::rdma
