// The configuration's data: Config and the types of its fields, with no code. A header of
// its own so that what config.h's parser is built from (the peer rules, the policy rules,
// the settings table, the policy file) can name these types without including config.h:
// config.cpp includes them, and nothing in them includes config.h back.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace smcpre::config {

enum class DeviceChoice { kAuto, kShm, kVerbs, kNone };

inline constexpr const char* kDefaultEid = "SMCPRE";
inline constexpr size_t kMaxEids = 8;      // the kernel's SMC_CLC_MAX_UEID
inline constexpr size_t kMaxEidSize = 32;  // SMC_MAX_EID_LEN

// One SMCPRE_PEERS rule, also the ADDRESS of a policy rule: an IPv4/IPv6 subnet and an
// inclusive port range.
struct PeerRule {
  int family = AF_UNSPEC;  // AF_UNSPEC: any address
  uint8_t addr[16] = {};   // network byte order; first 4 bytes for AF_INET
  uint8_t prefix_len = 0;
  uint16_t port_min = 1;
  uint16_t port_max = 65535;
  bool operator==(const PeerRule&) const = default;
};

struct PortRange {
  uint16_t min = 0;
  uint16_t max = 0;
  bool operator==(const PortRange&) const = default;
};

// A policy rule's verdict (config/policy.h): kNone when no rule matched.
enum class PolicyAction { kNone, kSmc, kTcp };
enum class PolicyRole { kClient, kServer };

// One rule line of the policy file: ACTION PROGRAM ROLE ADDRESS[/PREFIX][:PORTS].
struct PolicyRule {
  PolicyAction action = PolicyAction::kNone;  // kSmc or kTcp once parsed
  std::string program;                        // fnmatch(3) glob on the short program name
  std::optional<PolicyRole> role;             // nullopt: `*`, both roles
  PeerRule address;
  std::string text;  // the rule's four fields, one space apart (for the log)
  int line = 0;      // its line in the file
  bool operator==(const PolicyRule&) const = default;
};

// A setting given in the environment or in the policy file, as given.
struct Setting {
  std::string name;         // SMCPRE_RMB_SIZE
  std::string value;        // 1M
  int line = 0;             // line in Config::config_file; 0: from the environment
  bool is_default = false;  // the value leaves the configuration at its default
  bool operator==(const Setting&) const = default;
};

struct Config {
  bool enabled = true;                        // SMCPRE_ENABLE=0|1
  DeviceChoice device = DeviceChoice::kAuto;  // SMCPRE_DEVICE=auto|shm|verbs|none|<ibdev>[:port]
  std::string verbs_device;                   // SMCPRE_DEVICE=<ibdev>[:port]
  int verbs_port = 0;
  uint32_t rmb_size = 512 * 1024;  // SMCPRE_RMB_SIZE, 16K..8M, power of two (CLC nibble)
  // SMCPRE_LOG, stored canonically: trace|debug|info|warn|error|critical|off ("warning" and
  // any letter case are accepted on input).
  std::string log_level = "off";
  std::string log_file;                  // SMCPRE_LOG_FILE
  uint32_t handshake_timeout_ms = 2000;  // SMCPRE_HANDSHAKE_TIMEOUT_MS, 1..600000
  // After our close, how long the peer may keep its side open before the connection is
  // torn down (TCP's tcp_fin_timeout for orphaned sockets is 60 s).
  uint32_t close_timeout_ms = 60000;  // SMCPRE_CLOSE_TIMEOUT_MS, 1..3600000
  std::string runtime_dir;            // SMCPRE_RUNTIME_DIR (default: see runtime_dir.h)
  std::string bpf_dir;                // SMCPRE_BPF_DIR ("": the default; "none": unused)
  // SMCPRE_EID: the user-defined EIDs SMC-Rv2 proposes and accepts (at most 8, each 1..32
  // of A-Z 0-9 . -, the first alphanumeric, as the kernel's smc_clc_ueid_add requires).
  // Two SMC-Rv2 ends agree only when they share one; the default lets smcpre's own ends
  // agree out of the box, a kernel peer needs its UEID set to one of these.
  std::vector<std::string> eids{std::string(kDefaultEid)};
  std::vector<PeerRule> peers;             // SMCPRE_PEERS
  std::vector<PortRange> exclude_ports;    // SMCPRE_EXCLUDE
  std::vector<uint32_t> shm_allowed_uids;  // SMCPRE_SHM_UIDS: uids besides our own and root
  bool shm_any_uid = false;                // SMCPRE_SHM_UIDS=any
  // Receive path (doc/design.md §3).
  std::optional<std::vector<int>> backlog_cpus;  // SMCPRE_BACKLOG_CPUS; nullopt = default
  bool backlog_inline = false;                   // SMCPRE_BACKLOG_CPUS=none
  uint32_t pool_size = 16384;                    // SMCPRE_POOL_SIZE receive buffers per process
  uint32_t rq_depth = 1024;                      // SMCPRE_RQ_DEPTH receive queue depth per link
  uint32_t sq_depth = 256;                       // SMCPRE_SQ_DEPTH
  // Waiting: poll up to this long before sleeping (adaptive below it).
  uint32_t spin_us = 400;     // SMCPRE_SPIN_US, 0..100000
  uint8_t rnr_retry = 7;      // SMCPRE_RNR_RETRY 0..7 (7 = forever)
  uint8_t min_rnr_timer = 5;  // SMCPRE_RNR_TIMER IB code 1..31
  // RDMA transport (verbs device). Defaults are the kernel's SMC-R settings.
  uint16_t ib_mtu = 4096;   // SMCPRE_IB_MTU 256|512|1024|2048|4096: cap on the path MTU
  uint8_t ib_timeout = 15;  // SMCPRE_IB_TIMEOUT local ACK timeout code 1..31 (4.096us*2^n)
  uint8_t ib_retry = 7;     // SMCPRE_IB_RETRY transport retries 0..7
  // Link groups: TEST LINK after this long without traffic (0 = never), and how long an
  // unused link group stays up for the next connection (0 = torn down at once).
  uint32_t keepalive_ms = 30000;  // SMCPRE_KEEPALIVE_MS 0..3600000
  uint32_t linger_ms = 600000;    // SMCPRE_LINGER_MS 0..86400000
  std::string stats;              // SMCPRE_STATS: "" (unset), "exit" or "none"
  // The policy file in force ("" = none): SMCPRE_CONFIG, or /etc/smcpre.conf if it exists.
  std::string config_file;
  // Its rules whose PROGRAM matches this process, in file order (first match wins).
  std::vector<PolicyRule> policy;
  // Every setting given, in name order, with where it came from (an environment variable
  // overrides the file's setting of the same name).
  std::vector<Setting> settings;
  // SMCPRE_* names that parse() does not know: not an error (a newer or older smcpre may
  // know them), but current() logs a warning for each.
  std::vector<std::string> unknown_variables;

  bool operator==(const Config&) const = default;
};

}  // namespace smcpre::config
