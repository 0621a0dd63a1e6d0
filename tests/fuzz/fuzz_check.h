// What the libFuzzer harnesses share: a broken invariant becomes a crash that libFuzzer
// records (with the input that caused it), and the checks that hold for every wire codec.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

// Not assert(): a fuzzing build may define NDEBUG, and the message names the invariant.
#define FUZZ_CHECK(condition)                                                                \
  do {                                                                                       \
    if (!(condition)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

namespace smcpre::fuzz {

// A reason a parser gives ends up in one log line or one stderr line: no control
// characters, so that a peer or a variable cannot forge or split log lines.
inline bool one_printable_line(std::string_view text) {
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) return false;
  }
  return true;
}

// A decoder may ignore reserved bits, so re-encoding what it decoded need not give the
// input back bit for bit; but every bit that differs must be one the decoder ignores.
// `decodes_same(bytes)` says whether `bytes` decodes to the message decoded from `input`.
// Only for messages whose re-encoding has the input's size (same layout).
template <typename DecodesSame>
void check_only_ignored_bits_differ(std::span<const uint8_t> input,
                                    std::span<const uint8_t> reencoded, DecodesSame decodes_same) {
  FUZZ_CHECK(input.size() == reencoded.size());
  std::vector<uint8_t> flipped(input.begin(), input.end());
  for (size_t i = 0; i < input.size(); ++i) {
    const uint8_t diff = input[i] ^ reencoded[i];
    for (int bit = 0; bit < 8; ++bit) {
      const auto mask = static_cast<uint8_t>(1u << bit);
      if ((diff & mask) == 0) continue;
      flipped[i] ^= mask;
      if (!decodes_same(std::span<const uint8_t>(flipped))) {
        std::fprintf(stderr, "re-encoding changed byte %zu bit %d, which the decoder reads\n", i,
                     bit);
        FUZZ_CHECK(!"re-encoding changes only ignored bits");
      }
      flipped[i] ^= mask;
    }
  }
}

}  // namespace smcpre::fuzz
