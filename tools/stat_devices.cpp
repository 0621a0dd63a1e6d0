// smcpre-stat devices: every RDMA port and its GID table, as text or JSON, and with
// --route the kernel's route for a connection and the port smcpre would pick for it, each
// port not picked with the reason why (SMCPRE_DEVICE read as the library reads it).
#include <net/if.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "rdma/port_select.h"
#include "tools/stat_commands.h"

namespace smcpre::tools::smcpre_stat {
namespace {

using smcpre::rdma::PortChoice;
using smcpre::rdma::PortInfo;
using smcpre::rdma::SocketRoute;

std::string netdev_name(uint32_t ifindex) {
  char name[IF_NAMESIZE] = {};
  if (ifindex == 0) return "";
  if (::if_indextoname(ifindex, name) == nullptr) return "ifindex " + std::to_string(ifindex);
  return name;
}

unsigned mtu_bytes(smcpre::rdma::PathMtu mtu) {
  return 128u << static_cast<unsigned>(mtu);
}

// What SMCPRE_DEVICE asks for, read the way the library reads it (but only that variable:
// another bad SMCPRE_* value must not hide the device diagnostics).
struct DeviceSetting {
  std::string text = "auto";  // as given
  smcpre::config::DeviceChoice choice = smcpre::config::DeviceChoice::kAuto;
  std::string device;  // forced ibdev, or ""
  int port = 0;
};

bool read_device_setting(DeviceSetting* setting, std::string* error) {
  const char* value = std::getenv("SMCPRE_DEVICE");
  if (value == nullptr) return true;
  std::string parse_error;
  const smcpre::config::Config c = smcpre::config::parse({{"SMCPRE_DEVICE", value}}, &parse_error);
  if (!parse_error.empty()) {
    *error = parse_error;
    return false;
  }
  setting->text = value;
  setting->choice = c.device;
  setting->device = c.verbs_device;
  setting->port = c.verbs_port;
  return true;
}

void print_ports_text(const std::vector<PortInfo>& ports) {
  if (ports.empty()) {
    std::printf("no RDMA devices\n");
    return;
  }
  for (const PortInfo& p : ports) {
    std::printf("%s port %u: %s, %s, active MTU %u", p.device.c_str(), p.port, p.state.c_str(),
                p.ethernet ? "Ethernet" : "InfiniBand", mtu_bytes(p.active_mtu));
    if (p.ethernet) {
      std::printf(", netdev %s, MAC %s", p.ifindex != 0 ? netdev_name(p.ifindex).c_str() : "-",
                  smcpre::rdma::mac_string(p.mac).c_str());
    }
    std::printf("\n");
    if (p.gids.empty()) std::printf("  no GIDs\n");
    for (const auto& g : p.gids) {
      std::printf("  GID %3u  %-39s  %-6s  %s\n", g.index, smcpre::rdma::gid_string(g.gid).c_str(),
                  smcpre::rdma::to_string(g.type),
                  g.ifindex != 0 ? netdev_name(g.ifindex).c_str() : "-");
    }
  }
}

std::string ports_json(const std::vector<PortInfo>& ports) {
  std::string out = "[";
  for (size_t i = 0; i < ports.size(); ++i) {
    const PortInfo& p = ports[i];
    if (i != 0) out += ",";
    out += "{\"device\":" + json_string(p.device) + ",\"port\":" + std::to_string(p.port) +
           ",\"state\":" + json_string(p.state) + ",\"active\":" + (p.active ? "true" : "false") +
           ",\"link_layer\":" + (p.ethernet ? "\"Ethernet\"" : "\"InfiniBand\"") +
           ",\"active_mtu\":" + std::to_string(mtu_bytes(p.active_mtu));
    if (p.ethernet) {
      out += ",\"netdev\":" + json_string(netdev_name(p.ifindex)) +
             ",\"ifindex\":" + std::to_string(p.ifindex) +
             ",\"mac\":" + json_string(smcpre::rdma::mac_string(p.mac));
    }
    out += ",\"gids\":[";
    for (size_t j = 0; j < p.gids.size(); ++j) {
      const auto& g = p.gids[j];
      if (j != 0) out += ",";
      out += "{\"index\":" + std::to_string(g.index) +
             ",\"gid\":" + json_string(smcpre::rdma::gid_string(g.gid)) +
             ",\"type\":" + json_string(smcpre::rdma::to_string(g.type)) +
             ",\"netdev\":" + json_string(netdev_name(g.ifindex)) +
             ",\"ifindex\":" + std::to_string(g.ifindex) + "}";
    }
    out += "]}";
  }
  return out + "]";
}

bool carries_route(const PortInfo& p, const SocketRoute& route) {
  return std::any_of(p.gids.begin(), p.gids.end(),
                     [&](const auto& g) { return g.ifindex == route.ifindex; });
}

// One line per port that was not chosen, saying why (the chosen one is described above it).
std::vector<std::string> port_remarks(const std::vector<PortInfo>& ports, const SocketRoute& route,
                                      const DeviceSetting& setting,
                                      const std::optional<PortChoice>& choice) {
  std::vector<std::string> remarks;
  for (const PortInfo& p : ports) {
    const std::string name = p.device + " port " + std::to_string(p.port);
    if (choice && choice->device == p.device && choice->port == p.port) continue;
    if (!setting.device.empty() &&
        (p.device != setting.device || (setting.port != 0 && p.port != setting.port))) {
      remarks.push_back(name + ": not the one SMCPRE_DEVICE names");
    } else if (!p.active) {
      remarks.push_back(name + ": not active (" + p.state + ")");
    } else if (!p.ethernet && setting.device.empty()) {
      remarks.push_back(name + ": InfiniBand, used only when SMCPRE_DEVICE names it");
    } else if (p.ethernet && !carries_route(p, route)) {
      remarks.push_back(name + ": its netdev " + netdev_name(p.ifindex) +
                        " does not carry the route");
    } else if (choice) {
      remarks.push_back(name + ": also usable; " + choice->device + " port " +
                        std::to_string(choice->port) + " has a better GID or comes first");
    } else {
      remarks.push_back(name + ": has no GID that fits the connection");
    }
  }
  return remarks;
}

std::string choice_text(const PortChoice& c, const std::vector<PortInfo>& ports) {
  std::string type = "?";
  for (const PortInfo& p : ports) {
    if (p.device != c.device || p.port != c.port) continue;
    for (const auto& g : p.gids) {
      if (g.index == c.gid_index) type = smcpre::rdma::to_string(g.type);
    }
  }
  return c.device + " port " + std::to_string(c.port) + ", GID " + std::to_string(c.gid_index) +
         " " + smcpre::rdma::gid_string(c.gid) + " (" + type + "), MAC " +
         smcpre::rdma::mac_string(c.mac) + ", MTU " + std::to_string(mtu_bytes(c.mtu));
}

// Everything --route found out, printed as text or JSON.
struct RouteReport {
  std::string destination;
  std::string error;  // the route lookup failed
  SocketRoute route;
  DeviceSetting setting;
  std::optional<PortChoice> choice;
  std::string why;
  std::vector<std::string> remarks;
  bool rdma_off = false;  // SMCPRE_DEVICE=shm or none
};

RouteReport examine_route(const DevicesOptions& options, const DeviceSetting& setting,
                          const std::vector<PortInfo>& ports) {
  RouteReport r;
  r.destination = smcpre::rdma::address_string(*options.route);
  r.setting = setting;
  const auto* dst = reinterpret_cast<const sockaddr*>(&*options.route);
  const auto* src = options.from ? reinterpret_cast<const sockaddr*>(&*options.from) : nullptr;
  if (!smcpre::rdma::route_to(dst, src, &r.route, &r.error)) return r;
  r.choice = smcpre::rdma::choose_port(ports, r.route, setting.device, setting.port, &r.why);
  r.remarks = port_remarks(ports, r.route, setting, r.choice);
  r.rdma_off = setting.choice == smcpre::config::DeviceChoice::kShm ||
               setting.choice == smcpre::config::DeviceChoice::kNone;
  return r;
}

void print_route_text(const RouteReport& r, const std::vector<PortInfo>& ports) {
  const std::string local = smcpre::rdma::address_string(r.route.local);
  std::printf("\nroute to %s from %s: netdev %s (ifindex %u)\n",
              smcpre::rdma::address_string(r.route.peer).c_str(),
              local.empty() ? "(kernel's choice)" : local.c_str(), r.route.ifname.c_str(),
              r.route.ifindex);
  if (r.rdma_off) {
    std::printf("SMCPRE_DEVICE=%s: smcpre does not use RDMA; with SMCPRE_DEVICE=auto:\n",
                r.setting.text.c_str());
  }
  const std::string label =
      r.setting.device.empty() ? "RDMA port" : "RDMA port (SMCPRE_DEVICE=" + r.setting.text + ")";
  if (r.choice) {
    std::printf("%s: %s\n", label.c_str(), choice_text(*r.choice, ports).c_str());
  } else {
    std::printf("%s: none: %s\n", label.c_str(), r.why.c_str());
  }
  for (const std::string& remark : r.remarks) std::printf("  %s\n", remark.c_str());
}

std::string route_json(const RouteReport& r) {
  std::string json = "{\"destination\":" + json_string(r.destination);
  if (!r.error.empty()) return json + ",\"error\":" + json_string(r.error) + "}";
  json += ",\"source\":" + json_string(smcpre::rdma::address_string(r.route.local)) +
          ",\"netdev\":" + json_string(r.route.ifname) +
          ",\"ifindex\":" + std::to_string(r.route.ifindex) +
          ",\"smcpre_device\":" + json_string(r.setting.text) +
          ",\"rdma_used\":" + (r.rdma_off ? "false" : "true") + ",\"choice\":";
  if (r.choice) {
    json += "{\"device\":" + json_string(r.choice->device) +
            ",\"port\":" + std::to_string(r.choice->port) +
            ",\"gid_index\":" + std::to_string(r.choice->gid_index) +
            ",\"gid\":" + json_string(smcpre::rdma::gid_string(r.choice->gid)) +
            ",\"mac\":" + json_string(smcpre::rdma::mac_string(r.choice->mac)) +
            ",\"mtu\":" + std::to_string(mtu_bytes(r.choice->mtu)) + "}";
  } else {
    json += "null,\"reason\":" + json_string(r.why);
  }
  json += ",\"remarks\":[";
  for (size_t i = 0; i < r.remarks.size(); ++i) {
    json += (i != 0 ? "," : "") + json_string(r.remarks[i]);
  }
  return json + "]}";
}

}  // namespace

int cmd_devices(const DevicesOptions& options) {
  DeviceSetting setting;
  if (std::string error; options.route && !read_device_setting(&setting, &error)) {
    std::fprintf(stderr, "smcpre-stat: %s\n", error.c_str());
    return kExitUsage;
  }
  std::string list_error;
  const std::vector<PortInfo> ports = smcpre::rdma::list_ports(&list_error);
  std::optional<RouteReport> report;
  if (options.route) report = examine_route(options, setting, ports);

  if (options.json) {
    std::string json = "{\"devices\":" + ports_json(ports);
    if (!list_error.empty()) json += ",\"error\":" + json_string(list_error);
    if (report) json += ",\"route\":" + route_json(*report);
    std::printf("%s}\n", json.c_str());
  } else {
    print_ports_text(ports);
    if (report && report->error.empty()) print_route_text(*report, ports);
  }
  int status = kExitOk;
  if (!list_error.empty()) {
    std::fprintf(stderr, "smcpre-stat: %s\n", list_error.c_str());
    status = kExitFailure;
  }
  if (report && !report->error.empty()) {
    std::fprintf(stderr, "smcpre-stat: %s\n", report->error.c_str());
    status = kExitFailure;
  }
  return status;
}

}  // namespace smcpre::tools::smcpre_stat
