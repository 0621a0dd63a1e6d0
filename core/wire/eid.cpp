#include "core/wire/eid.h"

#include <algorithm>

#include "core/wire/bytes.h"

namespace smcpre::core::clc {
namespace {

using wire::fail;

constexpr uint8_t kPad = ' ';

bool letter_or_digit(uint8_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool eid_char(uint8_t c) {
  return letter_or_digit(c) || c == '.' || c == '-';
}

// The characters before the padding.
size_t text_length(const std::array<uint8_t, kEidSize>& bytes) {
  size_t n = bytes.size();
  while (n > 0 && bytes[n - 1] == kPad) --n;
  return n;
}

// Checks `text` (without padding) by the kernel's rule; `what` names it in the reason.
bool check_chars(std::span<const uint8_t> text, const char* what, std::string* error) {
  if (text.empty()) return fail(error, "%s is empty", what);
  if (!letter_or_digit(text[0])) {
    return fail(error, "%s starts with byte 0x%02x, not a capital letter or digit", what, text[0]);
  }
  for (size_t i = 0; i < text.size(); ++i) {
    if (!eid_char(text[i])) {
      return fail(error, "%s has byte 0x%02x at %zu (only A-Z, 0-9, '.', '-')", what, text[i], i);
    }
  }
  return true;
}

}  // namespace

std::optional<Eid> Eid::from_text(std::string_view text, std::string* error) {
  if (text.size() > kEidSize) {
    fail(error, "EID of %zu characters (at most %zu)", text.size(), kEidSize);
    return std::nullopt;
  }
  const std::span<const uint8_t> chars(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  if (!check_chars(chars, "EID", error)) return std::nullopt;
  Eid eid;
  eid.bytes.fill(kPad);
  std::copy(chars.begin(), chars.end(), eid.bytes.begin());
  return eid;
}

std::string_view Eid::text() const {
  return std::string_view(reinterpret_cast<const char*>(bytes.data()), text_length(bytes));
}

bool valid_eid(const Eid& eid, std::string* error) {
  return check_chars(std::span(eid.bytes.data(), text_length(eid.bytes)), "EID", error);
}

std::optional<Eid> match_eid(std::span<const Eid> client_ueids, std::span<const Eid> server_ueids) {
  for (const Eid& offered : client_ueids) {
    if (std::find(server_ueids.begin(), server_ueids.end(), offered) != server_ueids.end()) {
      return offered;
    }
  }
  return std::nullopt;
}

}  // namespace smcpre::core::clc
