// RDMA port selection, what the host has: every port of every device with its GIDs (libibverbs)
// and its netdev's MAC (getifaddrs). See port_select.h; the route is in port_route.cpp, the
// choice in port_select.cpp.
#include <ifaddrs.h>
#include <infiniband/verbs.h>
#include <net/if.h>
#include <netpacket/packet.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "rdma/port_select.h"
#include "rdma/port_select_common.h"

namespace smcpre::rdma {
namespace {

using port_select_detail::errno_text;

void add_problem(std::string* problems, const std::string& text) {
  if (!problems->empty()) *problems += "; ";
  *problems += text;
}

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

}  // namespace smcpre::rdma
