// Reading a systemd service under a root as systemd does (systemd_unit.h): unit names,
// files under the root, unit file syntax and what the unit already sets. An ordinary
// program's code: plain libc and exceptions-free std::filesystem calls (error_code
// overloads) are fine here.
#include "tools/systemd_unit.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace smcpre::tools::systemd {
namespace {

namespace fs = std::filesystem;

// systemd's own limits: a unit name has at most 255 bytes; unit files are small text.
constexpr size_t kUnitNameMax = 255;
constexpr size_t kMaxUnitFileBytes = 4 << 20;

constexpr std::string_view kUnitTypes[] = {"service", "socket",    "target", "device",
                                           "mount",   "automount", "swap",   "timer",
                                           "path",    "slice",     "scope"};

}  // namespace

std::string printable(std::string_view s) {
  std::string out;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Unit names (systemd.unit(5): at most 255 bytes, [A-Za-z0-9:_.\-] and @ for templates)

bool parse_unit_name(std::string_view arg, UnitName* out, std::string* error) {
  std::string name(arg);
  const size_t dot = name.rfind('.');
  if (dot != std::string::npos && dot > 0) {
    const std::string_view type = std::string_view(name).substr(dot + 1);
    if (std::find(std::begin(kUnitTypes), std::end(kUnitTypes), type) != std::end(kUnitTypes)) {
      if (type != "service") {
        *error = "unit \"" + printable(arg) +
                 "\" is no service: smcpre-systemd sets the environment of services only";
        return false;
      }
      name.resize(dot);
    }
  }
  const std::string stem = name;  // without ".service"
  name += ".service";
  const auto bad = [&](const std::string& why) {
    *error = "bad unit name \"" + printable(arg) + "\": " + why;
    return false;
  };
  if (stem.empty()) return bad("empty");
  if (name.size() > kUnitNameMax) return bad("longer than 255 bytes");
  for (char ch : stem) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == ':' || ch == '_' || ch == '.' || ch == '-' ||
                    ch == '\\' || ch == '@';
    if (!ok) {
      return bad("'" + printable(std::string_view(&ch, 1)) +
                 "' is not allowed (letters, digits, : _ . - \\ and @; systemd-escape(1) makes "
                 "a valid name)");
    }
  }
  const size_t at = stem.find('@');
  if (at == 0) return bad("nothing before the @");
  out->name = name;
  out->prefix = stem.substr(0, at);
  out->instance = at == std::string::npos ? std::string() : stem.substr(at + 1);
  return true;
}

namespace {

// Drop-in directory names for the unit, most specific first: UNIT.d, the template's,
// then the prefixes ending at each dash (foo-bar-.service.d, foo-.service.d), then
// service.d (every service).
std::vector<std::string> dropin_dir_names(const UnitName& u) {
  std::vector<std::string> names = {u.name + ".d"};
  if (!u.instance.empty()) names.push_back(u.template_name() + ".d");
  for (size_t dash = u.prefix.rfind('-'); dash != std::string::npos && dash > 0;
       dash = u.prefix.rfind('-', dash - 1)) {
    names.push_back(u.prefix.substr(0, dash + 1) + ".service.d");
  }
  names.push_back("service.d");
  return names;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Files under the root

std::optional<std::string> resolve_in_root(const Root& root, std::string path, bool* masked) {
  *masked = false;
  for (int hops = 0; hops < 32; ++hops) {
    if (path == "/dev/null") {
      *masked = true;
      return std::nullopt;
    }
    const std::string host = root.path(path);
    struct stat st;
    if (::lstat(host.c_str(), &st) != 0) return std::nullopt;
    if (!S_ISLNK(st.st_mode)) {
      if (!S_ISREG(st.st_mode)) return std::nullopt;
      return host;
    }
    std::error_code ec;
    const fs::path target = fs::read_symlink(host, ec);
    if (ec) return std::nullopt;
    path = (target.is_absolute() ? target : fs::path(path).parent_path() / target)
               .lexically_normal()
               .string();
  }
  return std::nullopt;  // a symlink loop
}

bool read_file(const std::string& path, std::string* text, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": " + std::generic_category().message(errno);
    return false;
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) {
    *error = path + ": read error";
    return false;
  }
  *text = buf.str();
  if (text->size() > kMaxUnitFileBytes) {
    *error = path + ": larger than 4 MiB, not a unit file";
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Unit file syntax

namespace {

// Decodes one backslash escape at text[*i] (just after the backslash) as systemd does
// (C escapes, \s for a space, \xHH, \NNN octal, \uXXXX, \UXXXXXXXX; never NUL). False for
// anything else: systemd then ignores the whole line as invalid syntax.
bool unescape_one(std::string_view text, size_t* i, std::string* out) {
  if (*i >= text.size()) return false;
  const char c = text[(*i)++];
  const auto digits = [&](size_t n, int base, uint32_t* value) {
    if (*i + n > text.size()) return false;
    *value = 0;
    for (size_t k = 0; k < n; ++k) {
      const char d = text[*i + k];
      int v = -1;
      if (d >= '0' && d <= '9') v = d - '0';
      if (d >= 'a' && d <= 'f') v = d - 'a' + 10;
      if (d >= 'A' && d <= 'F') v = d - 'A' + 10;
      if (v < 0 || v >= base) return false;
      *value = *value * static_cast<uint32_t>(base) + static_cast<uint32_t>(v);
    }
    *i += n;
    return *value != 0;
  };
  uint32_t code = 0;
  switch (c) {
    case 'a':
      *out += '\a';
      return true;
    case 'b':
      *out += '\b';
      return true;
    case 'f':
      *out += '\f';
      return true;
    case 'n':
      *out += '\n';
      return true;
    case 'r':
      *out += '\r';
      return true;
    case 't':
      *out += '\t';
      return true;
    case 'v':
      *out += '\v';
      return true;
    case 's':
      *out += ' ';
      return true;
    case '\\':
    case '"':
    case '\'':
      *out += c;
      return true;
    case 'x':
      if (!digits(2, 16, &code)) return false;
      *out += static_cast<char>(code);
      return true;
    case 'u':
    case 'U':
      if (!digits(c == 'u' ? 4 : 8, 16, &code) || code > 0x10ffff ||
          (code >= 0xd800 && code <= 0xdfff)) {
        return false;
      }
      // UTF-8, as systemd stores the character.
      if (code < 0x80) {
        *out += static_cast<char>(code);
      } else if (code < 0x800) {
        *out += static_cast<char>(0xc0 | (code >> 6));
        *out += static_cast<char>(0x80 | (code & 0x3f));
      } else if (code < 0x10000) {
        *out += static_cast<char>(0xe0 | (code >> 12));
        *out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
        *out += static_cast<char>(0x80 | (code & 0x3f));
      } else {
        *out += static_cast<char>(0xf0 | (code >> 18));
        *out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
        *out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
        *out += static_cast<char>(0x80 | (code & 0x3f));
      }
      return true;
    default:
      --*i;  // the first of three octal digits
      if (!digits(3, 8, &code) || code > 0xff) return false;
      *out += static_cast<char>(code);
      return true;
  }
}

// Splits an Environment= value into its words as systemd does: blanks separate words,
// single or double quotes group (and are removed), backslash escapes are decoded inside
// and outside quotes. False on unbalanced quotes or a bad escape (systemd ignores such a
// line).
bool split_words(std::string_view text, std::vector<std::string>* words) {
  words->clear();
  size_t i = 0;
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (true) {
    while (i < text.size() && blank(text[i])) ++i;
    if (i >= text.size()) return true;
    std::string word;
    char quote = 0;
    while (i < text.size() && (quote != 0 || !blank(text[i]))) {
      const char c = text[i++];
      if (c == '\\') {
        if (!unescape_one(text, &i, &word)) return false;
      } else if (quote != 0 && c == quote) {
        quote = 0;
      } else if (quote == 0 && (c == '"' || c == '\'')) {
        quote = c;
      } else {
        word += c;
      }
    }
    if (quote != 0) return false;
    words->push_back(std::move(word));
  }
}

bool valid_env_name(std::string_view name) {
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

// The Environment= and EnvironmentFile= lines of a unit file's [Service] section(s).
// Comment lines (# or ;) are skipped, also inside a continued line; a line ending in a
// backslash continues on the next, the backslash replaced by a space.
std::vector<ServiceLine> service_lines(const std::string& text, const std::string& shown,
                                       std::vector<std::string>* warnings) {
  std::vector<ServiceLine> out;
  std::istringstream in(text);
  std::string raw;
  std::string pending;
  int line_no = 0;
  int first_line = 0;
  bool in_service = false;
  const auto trim = [](std::string_view s) {
    const size_t b = s.find_first_not_of(" \t\r");
    if (b == std::string_view::npos) return std::string_view();
    return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
  };
  while (std::getline(in, raw)) {
    ++line_no;
    std::string_view line = trim(raw);
    if (pending.empty() && (line.empty() || line.front() == '#' || line.front() == ';')) continue;
    if (!pending.empty() && !line.empty() && (line.front() == '#' || line.front() == ';')) {
      continue;
    }
    if (pending.empty()) first_line = line_no;
    if (!line.empty() && line.back() == '\\') {
      pending += std::string(line.substr(0, line.size() - 1)) + " ";
      continue;
    }
    std::string full = pending + std::string(line);
    pending.clear();
    if (full.starts_with("[")) {
      in_service = full == "[Service]";
      continue;
    }
    if (!in_service) continue;
    const size_t eq = full.find('=');
    if (eq == std::string::npos) continue;
    const std::string key(trim(std::string_view(full).substr(0, eq)));
    if (key != "Environment" && key != "EnvironmentFile") continue;
    ServiceLine sl;
    sl.file = shown;
    sl.line = first_line;
    sl.key = key;
    sl.value = std::string(trim(std::string_view(full).substr(eq + 1)));
    if (key == "Environment") {
      std::vector<std::string> words;
      if (!split_words(sl.value, &words)) {
        warnings->push_back(sl.where() +
                            ": invalid syntax (quotes or escapes); systemd ignores "
                            "this line");
        continue;
      }
      for (const std::string& w : words) {
        const size_t weq = w.find('=');
        if (weq == std::string::npos || !valid_env_name(std::string_view(w).substr(0, weq))) {
          continue;  // systemd ignores an invalid assignment (and logs it)
        }
        sl.assignments.push_back({w.substr(0, weq), w.substr(weq + 1)});
      }
      // An empty Environment= resets the list; words that all were invalid do not.
      if (sl.assignments.empty() && !words.empty()) continue;
    }
    out.push_back(std::move(sl));
  }
  return out;
}

std::string quote_assignment(std::string_view name, std::string_view value) {
  std::string out = "\"";
  const std::string text = std::string(name) + "=" + std::string(value);
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '\\' || ch == '"') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string escape_specifiers(std::string_view value) {
  std::string out;
  for (char ch : value) {
    out += ch;
    if (ch == '%') out += '%';
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// What the unit already sets

namespace {

// Applies one line as systemd does: EnvironmentFile= adds a file (an empty one clears the
// list), Environment= sets its variables (an empty one clears them all).
void apply(const ServiceLine& l, std::map<std::string, Setting>* env,
           std::vector<ServiceLine>* env_files) {
  if (l.key == "EnvironmentFile") {
    if (l.value.empty()) {
      env_files->clear();
    } else {
      env_files->push_back(l);
    }
    return;
  }
  if (l.assignments.empty()) {
    env->clear();
    return;
  }
  for (const Assignment& a : l.assignments) (*env)[a.name] = {a.value, l.where()};
}

// Keys an environment file sets (systemd.exec(5) EnvironmentFile=: KEY=VALUE lines,
// comments with # or ;). Only the names matter here.
std::set<std::string> env_file_keys(const std::string& text) {
  std::set<std::string> keys;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos || line[b] == '#' || line[b] == ';') continue;
    std::string_view rest = std::string_view(line).substr(b);
    if (rest.starts_with("export ")) rest.remove_prefix(7);
    const size_t eq = rest.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = rest.substr(0, eq);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.remove_suffix(1);
    keys.emplace(key);
  }
  return keys;
}

}  // namespace

bool read_unit(const Root& root, const UnitName& u, const std::string& our_dropin, UnitView* view,
               std::string* error) {
  // The unit file: the name itself in every directory, then (for an instance) its template.
  std::vector<std::string> names = {u.name};
  if (!u.instance.empty()) names.push_back(u.template_name());
  for (const std::string& name : names) {
    for (std::string_view dir : kUnitDirs) {
      const std::string path = std::string(dir) + "/" + name;
      bool masked = false;
      const std::optional<std::string> host = resolve_in_root(root, path, &masked);
      if (masked) {
        view->masked = true;
        view->fragment = path;
        break;
      }
      if (host) {
        view->fragment = path;
        std::string text;
        if (!read_file(*host, &text, error)) return false;
        for (const ServiceLine& l : service_lines(text, path, &view->warnings)) {
          apply(l, &view->before, &view->env_files);
        }
        break;
      }
    }
    if (view->fragment) break;
  }

  // Drop-ins: a file name in a higher-priority directory hides the same name in lower
  // ones; all are then applied in file name order.
  std::map<std::string, std::string> dropins;  // file name -> path inside the root
  for (std::string_view dir : kUnitDirs) {
    for (const std::string& d : dropin_dir_names(u)) {
      const std::string dir_path = std::string(dir) + "/" + d;
      std::error_code ec;
      for (fs::directory_iterator it(root.path(dir_path), ec), end; !ec && it != end;
           it.increment(ec)) {
        const std::string file = it->path().filename().string();
        if (!file.ends_with(".conf")) continue;
        const std::string path = dir_path + "/" + file;
        if (file == kDropInName && path != our_dropin) {
          view->masked_dropins.push_back(path);
          continue;
        }
        dropins.emplace(file, path);
      }
    }
  }
  for (const auto& [file, path] : dropins) {
    if (file == kDropInName) continue;  // ours: replaced, not built upon
    bool masked = false;
    const std::optional<std::string> host = resolve_in_root(root, path, &masked);
    if (!host) continue;  // a drop-in linked to /dev/null masks nothing but itself
    std::string text;
    if (!read_file(*host, &text, error)) return false;
    for (ServiceLine& l : service_lines(text, path, &view->warnings)) {
      if (file < kDropInName) {
        apply(l, &view->before, &view->env_files);
      } else {
        if (l.key == "EnvironmentFile") apply(l, &view->before, &view->env_files);
        view->after.push_back(std::move(l));
      }
    }
  }
  return true;
}

std::vector<std::string> override_warnings(const Root& root, const UnitView& view,
                                           const std::set<std::string>& ours) {
  std::vector<std::string> out;
  for (const ServiceLine& l : view.after) {
    if (l.key != "Environment") continue;
    if (l.assignments.empty()) {
      out.push_back(l.where() +
                    ": an empty Environment= after smcpre.conf (drop-ins apply in "
                    "file name order) drops every variable smcpre.conf sets");
      continue;
    }
    for (const Assignment& a : l.assignments) {
      if (ours.count(a.name) != 0) {
        out.push_back(l.where() + ": sets " + a.name + " after smcpre.conf (drop-ins apply in " +
                      "file name order), replacing smcpre's value");
      }
    }
  }
  for (const ServiceLine& l : view.env_files) {
    std::string path = l.value;
    if (path.starts_with("-")) path.erase(0, 1);
    if (path.find('%') != std::string::npos || !path.starts_with("/")) continue;  // unknowable
    bool masked = false;
    const std::optional<std::string> host = resolve_in_root(root, path, &masked);
    std::string text;
    std::string ignored;
    if (!host || !read_file(*host, &text, &ignored)) continue;
    for (const std::string& key : env_file_keys(text)) {
      if (ours.count(key) != 0) {
        out.push_back(l.where() + ": EnvironmentFile=" + path + " sets " + key +
                      ", which overrides Environment= (so smcpre.conf's " + key +
                      "); put smcpre's value into that file instead");
      }
    }
  }
  return out;
}

}  // namespace smcpre::tools::systemd
