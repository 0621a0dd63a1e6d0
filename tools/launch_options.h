// What smcpre-run and smcpre-systemd share: the command-line options that set SMCPRE_*
// variables (each value checked by config::parse() before anything runs, so a typo is
// refused with the variable named instead of disabling smcpre in the started program),
// the lookup of libsmcpre.so, and appending it to an existing LD_PRELOAD.
#pragma once

#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>

namespace smcpre::tools {

inline constexpr std::string_view kLibraryName = "libsmcpre.so";

// One tuning option: --<option> VALUE (or --<option>=VALUE) sets <variable>.
struct TuningOption {
  std::string_view option;    // without the dashes: "pool-size"
  std::string_view variable;  // "SMCPRE_POOL_SIZE"
  std::string_view metavar;   // "N"
  std::string_view help;      // what it does, in a few words (the --help line)
  bool path = false;          // the value is a file or directory path
};

// The option setting `variable`, or null (a variable only --set reaches).
const TuningOption* option_for_variable(std::string_view variable);

// The --help block of the tuning options and --set, lines indented by two spaces.
std::string tuning_help();

// How a relative path in a path-valued setting is treated: smcpre-run execs in the
// current directory, so it makes the path absolute; a service does not run there, so
// smcpre-systemd refuses it.
enum class RelativePaths { kMakeAbsolute, kRefuse };

// Settings from the command line, variable -> value; a later option for the same
// variable replaces an earlier one (wrappers can put defaults first).
using Settings = std::map<std::string, std::string>;

enum class OptionMatch {
  kNoMatch,  // args[*i] is not this option (or no tuning option): the caller's to handle
  kTaken,    // stored in *settings; *i advanced past the option and its value
  kError,    // *error says why, naming the option and the variable
};

// Looks at args[*i]: --<option> VALUE, --<option>=VALUE, --set NAME=VALUE or
// --set=NAME=VALUE. The value must pass check_setting(); --set accepts only variables that
// config::parse() knows (a typo in a name would otherwise be ignored by the library).
OptionMatch take_tuning_option(std::span<const std::string_view> args, size_t* i,
                               RelativePaths relative, Settings* settings, std::string* error);

// "" if config::parse() accepts `value` for `variable`, else its one-line error (which
// names the variable). An unknown variable is an error here.
std::string check_setting(std::string_view variable, std::string_view value);

// Any option with a value: if args[*i] is `--name VALUE` or `--name=VALUE`, stores VALUE,
// advances *i past it and returns kTaken; kError if the value is missing.
OptionMatch take_value_option(std::span<const std::string_view> args, size_t* i,
                              std::string_view name, std::string* value, std::string* error);

// A value as sh reads it back: bare when it holds only harmless characters, else in
// single quotes (for the command lines the tools print).
std::string shell_quote(std::string_view value);

// The library path as installed: <prefix>/<libdir>/libsmcpre.so from configure time.
std::string installed_library_path();

// Finds libsmcpre.so for this program: $SMCPRE_LIBRARY (must exist; made absolute), else
// the installed library beside the running executable (its real path, /proc/self/exe,
// plus the configured bindir -> libdir relation, so a relocated or --destdir installation
// finds its own library), else the build tree (<exe dir>/../preload/libsmcpre.so).
// On failure *error lists every place looked at. The path is absolute and usable in
// LD_PRELOAD (no space or colon, which ld.so would take for separators).
bool find_library(std::string* path, std::string* error);

// ld.so can split LD_PRELOAD only at spaces and colons and has no escaping: a path with
// either cannot be preloaded. "" if `path` is usable, else why not.
std::string preload_path_problem(std::string_view path);

// Appends `library` to the LD_PRELOAD value `existing` (entries separated by spaces or
// colons; every existing entry is kept, and so are the separators). `same_library(entry)`
// tells whether an entry already is our library (same path or same file): then nothing is
// added. An entry that is another libsmcpre.so is an error: two copies of the interposer
// in one process cannot work.
bool append_preload(std::string_view existing, std::string_view library,
                    const std::function<bool(std::string_view entry)>& same_library,
                    std::string* out, std::string* error);

// True if `a` and `b` name the same existing file (device and inode).
bool same_file(const std::string& a, const std::string& b);

}  // namespace smcpre::tools
