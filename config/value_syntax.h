// The lexical rules every setting's value follows (config.cpp's variables, the policy
// file, the peer rules): plain decimal numbers, sizes with binary suffixes, comma lists,
// port ranges, paths; and how a bad value is shown in an error line. Internal to config/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace smcpre::config::syntax {

// ASCII case-insensitive equality.
bool iequals(std::string_view a, std::string_view b);
// The value as shown in an error line: quoted, control characters escaped (the line must
// stay one line), long values shortened.
std::string quote_value(std::string_view v);
// A plain decimal number: digits only (no sign, no space), at most `max`.
bool parse_uint(std::string_view s, uint64_t max, uint64_t* out);
// A decimal number with an optional binary suffix: K/KiB (x1024) and, if allow_mega,
// M/MiB (x1048576); suffix letters in any case.
bool parse_size(std::string_view s, bool allow_mega, uint64_t* out);
// Splits a comma list; false if any item is empty ("a,,b", ",a", "a,").
bool split_list(std::string_view s, std::vector<std::string_view>* items);
// `P` or `P-Q` with 1 <= P <= Q <= 65535.
bool parse_port_range(std::string_view s, uint16_t* min, uint16_t* max);
// A path: non-empty, no control characters, no leading or trailing whitespace (almost
// certainly a quoting mistake). Spaces inside are legal file name characters.
bool plausible_path(std::string_view s);

}  // namespace smcpre::config::syntax
