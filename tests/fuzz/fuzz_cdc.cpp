// libFuzzer harness: the CDC codec (core/wire/cdc.h), every 44-byte control message a peer
// sends with its data. Besides crashes and sanitizer reports, it fails when:
// - peek_token (the reaping thread's routing) and decode (the worker's) disagree on
//   whether the bytes are a CDC, or on its token;
// - llc::classify, which tells CDC from LLC on a link, would not route a CDC here;
// - decode -> encode -> decode changes the message, or the re-encoding differs from the
//   input in a bit decode reads;
// - a rejection comes without a reason, or with one that is not a single printable line.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/wire/cdc.h"
#include "core/wire/llc.h"
#include "tests/fuzz/fuzz_check.h"

namespace cdc = smcpre::core::cdc;
namespace llc = smcpre::core::llc;
using smcpre::fuzz::check_only_ignored_bits_differ;
using smcpre::fuzz::one_printable_line;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  cdc::Message m;
  std::string error;
  const bool decoded = cdc::decode(in, &m, &error);
  uint32_t token = 0;
  const bool peeked = cdc::peek_token(in, &token);
  FUZZ_CHECK(decoded == peeked);
  if (!decoded) {
    FUZZ_CHECK(!error.empty() && one_printable_line(error));
    return 0;
  }
  FUZZ_CHECK(token == m.token);
  FUZZ_CHECK(llc::classify(data[0]) == llc::Type::kCdc);
  std::array<uint8_t, cdc::kSize> again{};
  cdc::encode(m, again);
  cdc::Message m2;
  FUZZ_CHECK(cdc::decode(again, &m2, &error));
  FUZZ_CHECK(m2 == m);
  std::array<uint8_t, cdc::kSize> third{};
  cdc::encode(m2, third);
  FUZZ_CHECK(third == again);
  check_only_ignored_bits_differ(in, again, [&](std::span<const uint8_t> b) {
    cdc::Message x;
    return cdc::decode(b, &x, nullptr) && x == m;
  });
  return 0;
}
