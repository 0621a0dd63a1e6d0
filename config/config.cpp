// The SMCPRE_* environment (doc/design.md §1.1) and the policy file (policy_file.h)
// merged into one Config, each value checked by the settings table (settings_table.h); the
// first bad variable (in name order) or the first malformed file line is reported. Also
// the process's own configuration, loaded once, which sets the log up.
#include "config/config.h"

#include <errno.h>
#include <sys/auxv.h>
#include <unistd.h>

#include <atomic>

#include "config/log.h"
#include "config/policy_file.h"
#include "config/runtime_dir.h"
#include "config/settings_table.h"
#include "config/sys.h"
#include "config/value_syntax.h"

extern char** environ;

namespace smcpre::config {
namespace {

using syntax::quote_value;

// The configuration smcpre runs with after an error: disabled, with defaults, but keeping
// what is needed to report the problem where the user looks for smcpre's messages.
Config disabled_config(Config c) {
  Config disabled;
  disabled.enabled = false;
  disabled.log_level = std::move(c.log_level);
  disabled.log_file = std::move(c.log_file);
  disabled.runtime_dir = std::move(c.runtime_dir);
  disabled.unknown_variables = std::move(c.unknown_variables);
  return disabled;
}

// Applies the settings in name order; the first bad one (the environment's: the file's
// were checked line by line) goes to *first_error.
Config apply(const std::map<std::string, Given>& given, const std::string& file_path,
             std::string* first_error) {
  Config defaults;
  defaults.runtime_dir = runtime_dir::default_path();
  Config c;
  for (const auto& [name, g] : given) {
    if (!std::string_view(name).starts_with(kVariablePrefix)) continue;
    const Variable* var = find_variable(name);
    if (var == nullptr) {
      c.unknown_variables.push_back(name);
      continue;
    }
    // Parsers only assign on success, so a bad value leaves the default in place.
    std::string expected = var->parse(g.value, c);
    if (!expected.empty()) {
      if (first_error->empty()) {
        *first_error = (g.line > 0 ? file_path + ":" + std::to_string(g.line) + ": " : "") + name +
                       "=" + quote_value(g.value) + ": " + expected;
      }
      continue;
    }
    // Whether this value changes anything, for the debug listing: the same value applied
    // to the defaults alone. SMCPRE_CONFIG sets no field (the file it names is what
    // changes), so it always counts.
    Config probe = defaults;
    var->parse(g.value, probe);
    c.settings.push_back(
        Setting{name, g.value, g.line, name != "SMCPRE_CONFIG" && probe == defaults});
  }
  if (c.runtime_dir.empty()) c.runtime_dir = defaults.runtime_dir;
  return c;
}

// --- the process's configuration --------------------------------------------------------

struct Loaded {
  Config config;
  std::string error;
};

std::map<std::string, std::string> smcpre_environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    size_t eq = entry.find('=');
    if (!entry.starts_with(kVariablePrefix) || eq == std::string_view::npos) continue;
    // emplace keeps the first of duplicate names, as getenv() does.
    env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return env;
}

void write_stderr(const std::string& line) {
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = sys::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere else to report to
    done += static_cast<size_t>(n);
  }
}

// SMCPRE_LOG's canonical names (parse_log stores no other) as the logger's levels.
spdlog::level::level_enum log_level(const std::string& name) {
  if (name == "trace") return spdlog::level::trace;
  if (name == "debug") return spdlog::level::debug;
  if (name == "info") return spdlog::level::info;
  if (name == "warn") return spdlog::level::warn;
  if (name == "error") return spdlog::level::err;
  if (name == "critical") return spdlog::level::critical;
  return spdlog::level::off;
}

const Loaded& loaded() {
  // Heap-allocated and never freed: engine threads may still read the configuration while
  // static destructors run at exit.
  static const Loaded* const instance = [] {
    auto* l = new Loaded;
    Environment env;
    env.variables = smcpre_environment();
    env.program = program_invocation_short_name;
    env.secure = ::getauxval(AT_SECURE) != 0;
    l->config = load(env, &l->error);
    // Always visible, whatever SMCPRE_LOG says: the user asked for smcpre and gets TCP.
    // Before the logger's setup, so that this line comes first on stderr (a log file
    // that cannot be opened adds a line of its own).
    if (!l->error.empty()) write_stderr("smcpre: " + l->error + "; smcpre disabled\n");
    // Before any caller gets the configuration: whoever holds it logs at its level.
    log::init(log_level(l->config.log_level), l->config.log_file);
    return l;
  }();
  return *instance;
}

void report(const Loaded& l) {
  // The error is on stderr already (loaded()); into the log file too, if there is one.
  if (!l.error.empty() && !l.config.log_file.empty()) {
    SMC_LOG_ERROR("{}; smcpre disabled", l.error);
  }
  for (const std::string& name : l.config.unknown_variables) {
    SMC_LOG_WARN("unknown variable {} ignored", name);
  }
  if (log::should_log(spdlog::level::debug)) {
    for (const std::string& line : describe(l.config)) SMC_LOG_DEBUG("{}", line);
  }
}

}  // namespace

Config parse(const std::map<std::string, std::string>& env, std::string* error) {
  return parse(env, nullptr, {}, error);
}

Config parse(const std::map<std::string, std::string>& env, const FileSource* file,
             std::string_view program, std::string* error) {
  std::map<std::string, Given> given;
  std::vector<PolicyRule> rules;
  std::string first_error;
  if (file != nullptr) {
    first_error = parse_policy_file(*file, program, &given, &rules);
    // Never half-applied: a malformed file contributes nothing.
    if (!first_error.empty()) {
      given.clear();
      rules.clear();
    }
  }
  // The environment overrides the file, name by name.
  for (const auto& [name, value] : env) given[name] = Given{value, 0};
  Config c = apply(given, file != nullptr ? file->path : std::string(), &first_error);
  if (error != nullptr) *error = first_error;
  if (!first_error.empty()) return disabled_config(std::move(c));
  if (file != nullptr) c.config_file = file->path;
  c.policy = std::move(rules);
  return c;
}

Config load(const Environment& env, std::string* error) {
  std::map<std::string, std::string> vars = env.variables;
  std::string path = env.default_file;
  bool named = false;  // by SMCPRE_CONFIG: then it must exist
  if (auto it = vars.find("SMCPRE_CONFIG"); it != vars.end()) {
    if (env.secure) {
      vars.erase(it);
    } else if (!check_config_path(it->second).empty()) {
      return parse(vars, nullptr, env.program, error);  // reports the bad value
    } else {
      named = it->second != "none";
      path = named ? it->second : std::string();
    }
  }
  if (path.empty()) return parse(vars, nullptr, env.program, error);
  FileSource file;
  std::string read_error;
  switch (read_policy_file(path, &file, &read_error)) {
    case FileStatus::kRead:
      return parse(vars, &file, env.program, error);
    case FileStatus::kMissing:
      if (!named) return parse(vars, nullptr, env.program, error);  // defaults
      read_error = path + ": no such file (named by SMCPRE_CONFIG)";
      break;
    case FileStatus::kError:
      break;
  }
  if (error != nullptr) *error = read_error;
  return disabled_config(parse(vars, nullptr, env.program, nullptr));
}

std::vector<std::string> describe(const Config& c) {
  std::vector<std::string> lines;
  auto where = [&](int line) {
    return line > 0 ? c.config_file + ":" + std::to_string(line) : std::string("the environment");
  };
  if (c.config_file.empty()) {
    lines.push_back("policy file: none");
  } else {
    lines.push_back("policy file: " + c.config_file + " (" + std::to_string(c.policy.size()) +
                    (c.policy.size() == 1 ? " rule" : " rules") + " for this program)");
  }
  for (const Setting& s : c.settings) {
    if (!s.is_default) {
      lines.push_back("setting " + s.name + "=" + s.value + " (from " + where(s.line) + ")");
    }
  }
  for (const PolicyRule& r : c.policy) {
    lines.push_back("rule " + r.text + " (from " + where(r.line) + ")");
  }
  return lines;
}

const Config& current() {
  const Loaded& l = loaded();
  // Reported by exactly one caller; the others need not wait for it.
  static std::atomic<bool> reported{false};
  if (!reported.load(std::memory_order_acquire) &&
      !reported.exchange(true, std::memory_order_acq_rel)) {
    report(l);
  }
  return l.config;
}

}  // namespace smcpre::config
