// smcpre's configuration: environment variables (doc/design.md §1.1) and the policy file
// (/etc/smcpre.conf or SMCPRE_CONFIG, smcpre.conf(5)) parsed strictly into one immutable
// Config. A bad value or a malformed file line is reported in one line naming the variable
// or the file and line, and disables smcpre for the process (the application runs as plain
// TCP). Config and its fields' types are in config/config_types.h; the policy rules are
// matched by config/policy.h, SMCPRE_PEERS by config/peer_rules.h.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "config/config_types.h"
#include "config/policy_file.h"

namespace smcpre::config {

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

}  // namespace smcpre::config
