// smcpre-run: runs a program with smcpre, like env(1) with the right LD_PRELOAD and SMCPRE_*
// variables, then exec (the program keeps smcpre-run's pid, so a service manager or a
// shell's job control sees the program itself). Every value is checked before the exec,
// as the library will check it, so a typo is refused here instead of silently turning
// smcpre off in the program.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "tools/launch_options.h"

extern char** environ;

namespace {

using smcpre::tools::OptionMatch;
using smcpre::tools::shell_quote;

// env(1)'s convention, so that scripts can tell who failed.
constexpr int kExitUsage = 125;      // smcpre-run itself: usage, a bad value, no library
constexpr int kExitCannotRun = 126;  // PROGRAM found but not executable
constexpr int kExitNotFound = 127;   // PROGRAM not found

void print_usage() {
  std::printf(
      "usage: smcpre-run [OPTIONS] [--] PROGRAM [ARGS...]\n"
      "       smcpre-run --print-env [OPTIONS] [[--] PROGRAM [ARGS...]]\n"
      "       smcpre-run --help | --version\n"
      "\n"
      "Runs PROGRAM with smcpre, the library that moves its TCP connections onto\n"
      "SMC-R: adds libsmcpre.so to LD_PRELOAD (after the entries already there, which\n"
      "are kept; never twice), sets the SMCPRE_* variables the options name, and execs\n"
      "PROGRAM (searched in PATH) in the same process, with the same pid. Both ends of\n"
      "a connection need smcpre.\n"
      "\n"
      "Every value is checked as the library will check it, and so are the SMCPRE_*\n"
      "variables PROGRAM inherits and the policy file it will read (SMCPRE_CONFIG, else\n"
      "/etc/smcpre.conf): a bad one is refused here, naming the variable, instead of\n"
      "turning smcpre off in PROGRAM. Options end at the first argument that is not\n"
      "one, or at --.\n"
      "\n"
      "tuning options (each sets the variable in parentheses; smcpre(7) says more):\n"
      "%s"
      "\n"
      "other options:\n"
      "  --print-env\n"
      "      print the variables smcpre-run would set, one NAME=VALUE per line (values\n"
      "      quoted for sh), and exit without running PROGRAM\n"
      "  --help, -h\n"
      "      this text\n"
      "  --version\n"
      "      smcpre-run's version\n"
      "\n"
      "the library:\n"
      "  SMCPRE_LIBRARY (if set; it must exist), else the library installed beside\n"
      "  smcpre-run, as configured\n"
      "    %s\n"
      "  and found from smcpre-run's real path (a moved installation finds its own),\n"
      "  else the build tree's (../preload/libsmcpre.so from smcpre-run's directory).\n"
      "  SMCPRE_LIBRARY is not passed on to PROGRAM.\n"
      "\n"
      "exit status:\n"
      "  125  smcpre-run failed: usage error, a bad value, no library\n"
      "  126  PROGRAM was found but could not be run\n"
      "  127  PROGRAM was not found\n"
      "  else PROGRAM's own exit status\n",
      smcpre::tools::tuning_help().c_str(), smcpre::tools::installed_library_path().c_str());
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "smcpre-run: %s\n", message.c_str());
  return kExitUsage;
}

// The SMCPRE_* variables PROGRAM would inherit (the first of duplicate names, as getenv()
// and the library see them), without SMCPRE_LIBRARY, which is ours.
std::map<std::string, std::string> inherited_settings() {
  std::map<std::string, std::string> vars;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const size_t eq = entry.find('=');
    if (!entry.starts_with("SMCPRE_") || eq == std::string_view::npos) continue;
    const std::string name(entry.substr(0, eq));
    if (name != "SMCPRE_LIBRARY") vars.emplace(name, std::string(entry.substr(eq + 1)));
  }
  return vars;
}

std::string basename_of(std::string_view path) {
  return std::string(path.substr(path.rfind('/') + 1));  // npos + 1 == 0
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv, argv + argc);
  smcpre::tools::Settings settings;
  bool print_env = false;
  size_t program = args.size();  // index of PROGRAM, args.size() if none
  std::string error;
  for (size_t i = 1; i < args.size();) {
    const std::string_view arg = args[i];
    if (arg == "--") {
      program = i + 1;
      break;
    }
    if (!arg.starts_with("-") || arg == "-") {
      program = i;
      break;
    }
    if (arg == "--help" || arg == "-h") {
      print_usage();
      return 0;
    }
    if (arg == "--version") {
      std::printf("smcpre-run %s\n", SMCPRE_VERSION);
      return 0;
    }
    if (arg == "--print-env") {
      print_env = true;
      ++i;
      continue;
    }
    switch (smcpre::tools::take_tuning_option(args, &i, smcpre::tools::RelativePaths::kMakeAbsolute,
                                              &settings, &error)) {
      case OptionMatch::kTaken:
        continue;
      case OptionMatch::kError:
        return usage_error(error);
      case OptionMatch::kNoMatch:
        return usage_error("unknown option " + std::string(arg) + " (smcpre-run --help)");
    }
  }
  if (program >= args.size() && !print_env) {
    return usage_error("no PROGRAM given (smcpre-run --help)");
  }

  std::string library;
  if (!smcpre::tools::find_library(&library, &error)) return usage_error(error);
  const char* old_preload = std::getenv("LD_PRELOAD");
  std::string preload;
  const auto is_ours = [&library](std::string_view entry) {
    return entry == library || smcpre::tools::same_file(std::string(entry), library);
  };
  if (!smcpre::tools::append_preload(old_preload != nullptr ? old_preload : "", library, is_ours,
                                     &preload, &error)) {
    return usage_error(error);
  }

  // What the library in PROGRAM will read: the inherited variables with ours on top, and
  // the policy file they name (or /etc/smcpre.conf).
  smcpre::config::Environment env;
  env.variables = inherited_settings();
  for (const auto& [name, value] : settings) env.variables[name] = value;
  if (program < args.size()) env.program = basename_of(args[program]);
  const smcpre::config::Config config = smcpre::config::load(env, &error);
  if (!error.empty()) {
    return usage_error(error + "; smcpre would turn itself off in the program");
  }
  for (const std::string& name : config.unknown_variables) {
    std::fprintf(stderr, "smcpre-run: warning: unknown variable %s in the environment, ignored\n",
                 name.c_str());
  }

  if (print_env) {
    std::printf("LD_PRELOAD=%s\n", shell_quote(preload).c_str());
    for (const auto& [name, value] : settings) {
      std::printf("%s=%s\n", name.c_str(), shell_quote(value).c_str());
    }
    return std::fflush(stdout) == 0 ? 0 : kExitUsage;
  }

  if (::setenv("LD_PRELOAD", preload.c_str(), 1) != 0 || ::unsetenv("SMCPRE_LIBRARY") != 0) {
    return usage_error(std::string("setenv: ") + std::strerror(errno));
  }
  for (const auto& [name, value] : settings) {
    if (::setenv(name.c_str(), value.c_str(), 1) != 0) {
      return usage_error(std::string("setenv: ") + std::strerror(errno));
    }
  }
  ::execvp(argv[program], argv + program);
  const int err = errno;
  std::fprintf(stderr, "smcpre-run: %s: %s\n", argv[program], std::strerror(err));
  return err == ENOENT || err == ENOTDIR ? kExitNotFound : kExitCannotRun;
}
