// smcpre's configuration: environment variables (doc/design.md §1.1) and the policy file
// (/etc/smcpre.conf or SMCPRE_CONFIG, smcpre.conf(5)) parsed strictly into one immutable
// Config. A bad value or a malformed file line is reported in one line naming the variable
// or the file and line, and disables smcpre for the process (the application runs as plain
// TCP). The policy rules are matched by config/policy.h.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace smcpre::config {

enum class DeviceChoice { kAuto, kShm, kVerbs, kNone };

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
  uint32_t close_timeout_ms = 60000;       // SMCPRE_CLOSE_TIMEOUT_MS, 1..3600000
  std::string runtime_dir;                 // SMCPRE_RUNTIME_DIR (default: see runtime_dir.h)
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
  uint32_t spin_us = 200;     // SMCPRE_SPIN_US, 0..100000
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

// A policy file's path and contents, as read (config/policy.h: read_policy_file).
struct FileSource {
  std::string path;
  std::string text;
};

// Parses `env` (name -> value; names absent from the map are unset; names without the
// SMCPRE_ prefix are ignored). Sets *error (if not null) to "" on success. On a bad value,
// returns a default Config with enabled=false (keeping only log_level, log_file,
// runtime_dir and unknown_variables) and sets *error to one line naming the first bad
// variable (in name order), its value and what is expected. SMCPRE_CONFIG is checked, not
// read: no file is involved.
Config parse(const std::map<std::string, std::string>& env, std::string* error);

// parse() with a policy file's text as well (`file` may be null: no file). The file's
// settings apply unless `env` sets the same name; its rules are kept when their PROGRAM
// matches `program`. Any malformed line (smcpre.conf(5)) disables smcpre as a bad value
// does, the file ignored as a whole; *error is then "<path>:<line>: <what was expected>"
// (or "<path>: ..." for the whole file).
Config parse(const std::map<std::string, std::string>& env, const FileSource* file,
             std::string_view program, std::string* error);

// What load() reads the configuration from; current() fills it in from the process.
struct Environment {
  std::map<std::string, std::string> variables;  // the SMCPRE_* variables
  std::string program;                           // program_invocation_short_name
  std::string default_file = "/etc/smcpre.conf";
  // A set-user-ID or otherwise secure-mode process (AT_SECURE) does not let its caller
  // name the file it reads: SMCPRE_CONFIG is ignored and default_file is read.
  bool secure = false;
};

// Reads the policy file (SMCPRE_CONFIG, `none` for no file, else default_file if it
// exists) and parses it with the variables. A file that cannot be read, or one named by
// SMCPRE_CONFIG that does not exist, disables smcpre as a malformed line does.
Config load(const Environment& env, std::string* error);

// What the configuration changes from the defaults, one line each, for the debug log: the
// policy file, each setting that differs from its default with where it came from, and
// the rules in force for this program. E.g. "setting SMCPRE_RMB_SIZE=1M (from
// /etc/smcpre.conf:3)", "rule smc redis-server server *:6379 (from /etc/smcpre.conf:7)".
std::vector<std::string> describe(const Config& c);

// The process's configuration, loaded once from environ and the policy file on first use
// (thread-safe), which also sets the log up (log::init) with SMCPRE_LOG and
// SMCPRE_LOG_FILE: nothing is logged before the first call. The first call reports
// problems: a bad value or file goes to stderr as "smcpre: <error>; smcpre disabled"
// whatever SMCPRE_LOG says (and to the log too when SMCPRE_LOG_FILE is set); unknown
// variables are logged as warnings; at debug level, describe()'s lines are logged.
const Config& current();

// Parses one SMCPRE_PEERS rule (ADDR[/PREFIX][:PORTS], [IPV6][/PREFIX][:PORTS] or
// *[:PORTS]; PORTS is P, P-Q or *). Returns "" on success, else what was expected.
std::string parse_peer_rule(std::string_view rule, PeerRule* out);

// True if the destination (a sockaddr_in or sockaddr_in6; an IPv4-mapped IPv6 address
// matches IPv4 rules) matches the rule, or any of the rules.
bool peer_rule_matches(const PeerRule& rule, const sockaddr* addr);
bool peer_rules_match(const std::vector<PeerRule>& rules, const sockaddr* addr);
bool port_excluded(const std::vector<PortRange>& ranges, uint16_t port);

}  // namespace smcpre::config
