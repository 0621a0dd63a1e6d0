// libFuzzer harness: the LLC codec (core/wire/llc.h), the link-level messages a peer sends on a
// new or established link (CONFIRM LINK, TEST LINK, DELETE LINK, CONFIRM RKEY),
// classify(), which sorts every received message into CDC, an LLC type, or unknown, and
// disposition(), which says whether a link acts on it, ignores it or ends the link.
// Every input goes through all four decoders. Besides crashes and sanitizer reports, it
// fails when:
// - a decoder takes a message whose first byte classify() would route elsewhere, or more
//   than one decoder takes the same bytes;
// - disposition() ends the link for a known LLC type, or does not for anything else, or
//   does not act on a decoded CONFIRM, TEST or DELETE LINK (CONFIRM RKEY: ignore);
// - decode -> encode -> decode changes the message, the encoding is not stable, or the
//   re-encoding differs from the input in a bit the decoder reads;
// - a rejection comes without a reason, or with one that is not a single printable line.
// Linux's SMC-Rv2 LLC messages (types 0x21 and up) are unknown to smcpre's version 1:
// they end the link, as in Linux a message of a type it does not know.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/wire/llc.h"
#include "tests/fuzz/fuzz_check.h"

namespace llc = smcpre::core::llc;
using smcpre::fuzz::check_only_ignored_bits_differ;
using smcpre::fuzz::one_printable_line;

namespace {

using Bytes = std::span<const uint8_t>;

// Decodes `in` as a Message; if taken, checks the round trip and what a link does with
// it. Returns whether taken.
template <typename Message>
bool check_type(Bytes in, llc::Type type, llc::Disposition disposition) {
  Message m;
  std::string error;
  if (!llc::decode(in, &m, &error)) {
    FUZZ_CHECK(!error.empty() && one_printable_line(error));
    return false;
  }
  FUZZ_CHECK(in.size() == llc::kSize);
  FUZZ_CHECK(llc::classify(in[0]) == type);
  FUZZ_CHECK(llc::disposition(in[0]) == disposition);
  std::array<uint8_t, llc::kSize> again{};
  llc::encode(m, again);
  FUZZ_CHECK(llc::classify(again[0]) == type);
  Message m2;
  FUZZ_CHECK(llc::decode(Bytes(again), &m2, &error));
  FUZZ_CHECK(m2 == m);
  std::array<uint8_t, llc::kSize> third{};
  llc::encode(m2, third);
  FUZZ_CHECK(third == again);
  check_only_ignored_bits_differ(in, again, [&](Bytes b) {
    Message x;
    return llc::decode(b, &x, nullptr) && x == m;
  });
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Bytes in(data, size);
  if (size > 0) {
    const llc::Type type = llc::classify(data[0]);
    FUZZ_CHECK(llc::type_name(type) != nullptr);
    // Known types are exactly their own byte; everything else is kUnknown.
    if (type != llc::Type::kUnknown) FUZZ_CHECK(static_cast<uint8_t>(type) == data[0]);
    // Every LLC version 1 type is acted on or ignored; a CDC never reaches this
    // question, and anything else ends the link.
    const bool llc_v1 = type != llc::Type::kUnknown && type != llc::Type::kCdc;
    FUZZ_CHECK(llc_v1 == (llc::disposition(data[0]) != llc::Disposition::kViolation));
  }
  constexpr auto kAct = llc::Disposition::kAct;
  const int taken =
      check_type<llc::ConfirmLink>(in, llc::Type::kConfirmLink, kAct) +
      check_type<llc::TestLink>(in, llc::Type::kTestLink, kAct) +
      check_type<llc::DeleteLink>(in, llc::Type::kDeleteLink, kAct) +
      check_type<llc::ConfirmRkey>(in, llc::Type::kConfirmRkey, llc::Disposition::kIgnore);
  FUZZ_CHECK(taken <= 1);
  return 0;
}
