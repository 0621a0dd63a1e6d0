// Reading a systemd service as systemd does, for smcpre-systemd: the drop-in it writes
// must carry the unit's own LD_PRELOAD (Environment= assignments replace each other), so
// it needs the unit's search paths, drop-in directories and their order, line
// continuations, and the quoting and escapes of Environment= (systemd.unit(5),
// systemd.exec(5)), implemented for exactly what that decision needs. Everything is read
// under a root directory (an image, a container), as systemctl --root does.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace smcpre::tools::systemd {

// The name of smcpre's drop-in: where it sorts among the unit's drop-ins decides which
// settings it builds on and which override it.
inline constexpr std::string_view kDropInName = "smcpre.conf";

// The system manager's unit search path, highest priority first (systemd.unit(5)).
inline constexpr std::string_view kUnitDirs[] = {
    "/etc/systemd/system",     "/run/systemd/system", "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system", "/lib/systemd/system",
};
inline constexpr std::string_view kEtcUnitDir = "/etc/systemd/system";

// A string for a message or a comment line: control characters shown as \xHH.
std::string printable(std::string_view s);

// ---------------------------------------------------------------------------------------------
// Unit names (systemd.unit(5): at most 255 bytes, [A-Za-z0-9:_.\-] and @ for templates)

struct UnitName {
  std::string name;      // foo@bar.service
  std::string prefix;    // foo (before the first @)
  std::string instance;  // bar ("" for plain units and templates)
  std::string template_name() const { return prefix + "@.service"; }
};

// A unit name from the command line: without a unit type suffix it means NAME.service;
// another unit type is refused (only services have an environment to set). False with *error
// (naming the argument) for a name systemd would not accept.
bool parse_unit_name(std::string_view arg, UnitName* out, std::string* error);

// ---------------------------------------------------------------------------------------------
// Files under the root

struct Root {
  std::string dir;  // "" for this system's own root
  std::string path(std::string_view absolute) const { return dir + std::string(absolute); }
};

// Follows the symlinks of a file inside the root (absolute targets are inside the root,
// as systemctl --root reads them). Returns the path to open, or nullopt if there is no
// file; *masked when the chain ends at /dev/null (systemctl mask). Directories on the
// way are taken as they are.
std::optional<std::string> resolve_in_root(const Root& root, std::string path, bool* masked);

// Reads a whole file (a path on this system). More than 4 MiB is refused: unit files are
// small text, so such a file is none, and it is not worth holding in memory.
bool read_file(const std::string& path, std::string* text, std::string* error);

// ---------------------------------------------------------------------------------------------
// Unit file syntax

// One variable set by an Environment= line. The value is as systemd has it after quotes
// and escapes are removed, before specifier expansion: "%%" stays "%%", so that it means
// the same when written back into a unit file.
struct Assignment {
  std::string name;
  std::string value;
};

// An Environment= or EnvironmentFile= line of the [Service] section.
struct ServiceLine {
  std::string file;  // as shown to the user (the path inside the root)
  int line = 0;
  std::string key;  // "Environment" or "EnvironmentFile"
  std::string value;
  std::vector<Assignment> assignments;  // Environment= only; none: a reset
  std::string where() const { return file + ":" + std::to_string(line); }
};

// The Environment= and EnvironmentFile= lines of a unit file's [Service] section(s);
// `shown` is the file's name for ServiceLine::file. An Environment= line systemd would
// ignore as invalid syntax is left out with a warning in *warnings.
std::vector<ServiceLine> service_lines(const std::string& text, const std::string& shown,
                                       std::vector<std::string>* warnings);

// One Environment= assignment as a unit file line's word, for systemd to read back
// exactly: double quotes around it, backslashes and quotes escaped, control characters as
// C escapes. The value's specifiers must already be escaped (% as %%).
std::string quote_assignment(std::string_view name, std::string_view value);

// A literal value for a unit file: systemd expands %X specifiers and turns %% into %.
std::string escape_specifiers(std::string_view value);

// ---------------------------------------------------------------------------------------------
// What the unit already sets

struct Setting {
  std::string value;  // specifiers as written
  std::string where;  // file:line
};

struct UnitView {
  std::optional<std::string> fragment;  // the unit file, as the user knows it (inside root)
  bool masked = false;
  // The environment as systemd builds it up to our drop-in (the unit file, then the
  // drop-ins sorted before smcpre.conf).
  std::map<std::string, Setting> before;
  // Lines that will be read after ours: drop-ins sorted after smcpre.conf.
  std::vector<ServiceLine> after;
  // EnvironmentFile= settings in force (they override every Environment=).
  std::vector<ServiceLine> env_files;
  std::vector<std::string> masked_dropins;  // other smcpre.conf files ours hides
  std::vector<std::string> warnings;
};

// Reads unit `u` under `root` as systemd would, around our drop-in `our_dropin` (its path
// inside the root): that one is replaced on enable, so it is not built upon. No unit file
// is no error (view->fragment stays empty); false with *error only when a file that
// exists cannot be read, since a view without it could be wrong.
bool read_unit(const Root& root, const UnitName& u, const std::string& our_dropin, UnitView* view,
               std::string* error);

// Warnings for settings systemd applies after ours: later drop-ins and environment files.
// `ours` are the variables smcpre.conf sets.
std::vector<std::string> override_warnings(const Root& root, const UnitView& view,
                                           const std::set<std::string>& ours);

}  // namespace smcpre::tools::systemd
