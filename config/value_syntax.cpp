#include "config/value_syntax.h"

#include <algorithm>
#include <charconv>
#include <limits>

namespace smcpre::config::syntax {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) {
             return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
           };
           return lower(x) == lower(y);
         });
}

// The value as shown in an error line: quoted, control characters escaped (the line must
// stay one line), long values shortened.
std::string quote_value(std::string_view v) {
  constexpr size_t kMaxShown = 200;
  std::string out = "\"";
  for (size_t i = 0; i < v.size() && i < kMaxShown; ++i) {
    unsigned char ch = static_cast<unsigned char>(v[i]);
    if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\') {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    } else {
      out += static_cast<char>(ch);
    }
  }
  if (v.size() > kMaxShown) out += "...";
  out += '"';
  return out;
}

// A plain decimal number: digits only (no sign, no space), at most `max`.
bool parse_uint(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.front() < '0' || s.front() > '9') return false;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v > max) return false;
  *out = v;
  return true;
}

// A decimal number with an optional binary suffix: K/KiB (x1024) and, if allow_mega,
// M/MiB (x1048576); suffix letters in any case.
bool parse_size(std::string_view s, bool allow_mega, uint64_t* out) {
  size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  std::string_view suffix = s.substr(digits);
  uint64_t mult = 1;
  if (suffix.empty()) {
    mult = 1;
  } else if (iequals(suffix, "k") || iequals(suffix, "kib")) {
    mult = uint64_t{1} << 10;
  } else if (allow_mega && (iequals(suffix, "m") || iequals(suffix, "mib"))) {
    mult = uint64_t{1} << 20;
  } else {
    return false;
  }
  uint64_t v = 0;
  if (!parse_uint(s.substr(0, digits), std::numeric_limits<uint64_t>::max() / mult, &v)) {
    return false;
  }
  *out = v * mult;
  return true;
}

// Splits a comma list; false if any item is empty ("a,,b", ",a", "a,").
bool split_list(std::string_view s, std::vector<std::string_view>* items) {
  items->clear();
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    std::string_view item =
        s.substr(start, comma == std::string_view::npos ? s.npos : comma - start);
    if (item.empty()) return false;
    items->push_back(item);
    if (comma == std::string_view::npos) return true;
    start = comma + 1;
  }
}

// `P` or `P-Q` with 1 <= P <= Q <= 65535.
bool parse_port_range(std::string_view s, uint16_t* min, uint16_t* max) {
  size_t dash = s.find('-');
  uint64_t lo = 0;
  uint64_t hi = 0;
  if (dash == std::string_view::npos) {
    if (!parse_uint(s, 65535, &lo) || lo == 0) return false;
    hi = lo;
  } else {
    if (!parse_uint(s.substr(0, dash), 65535, &lo) || lo == 0) return false;
    if (!parse_uint(s.substr(dash + 1), 65535, &hi) || hi < lo) return false;
  }
  *min = static_cast<uint16_t>(lo);
  *max = static_cast<uint16_t>(hi);
  return true;
}

// A path: non-empty, no control characters, no leading or trailing whitespace (almost
// certainly a quoting mistake). Spaces inside are legal file name characters.
bool plausible_path(std::string_view s) {
  if (s.empty() || s.front() == ' ' || s.back() == ' ') return false;
  return std::none_of(s.begin(), s.end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

}  // namespace smcpre::config::syntax
