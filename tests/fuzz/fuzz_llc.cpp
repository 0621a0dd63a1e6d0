// libFuzzer harness: the LLC codec (core/wire/llc.h, llc_v2.h), the link-level messages a
// peer sends on a new or established link: CONFIRM LINK, TEST LINK, DELETE LINK and
// CONFIRM RKEY in both versions, and version 2's ADD LINK, DELETE RKEY and REQ ADD LINK;
// classify() and classify_message(), which sort every received message into CDC, an LLC
// type of either version, or unknown; and disposition() and disposition_v2(), which say
// whether a link of a version 1 or 2 group acts on it, ignores it or ends the link. Every
// input goes through all eleven decoders. Besides crashes and sanitizer reports, it fails
// when:
// - a decoder takes a message whose first byte the classifiers would route elsewhere, or
//   more than one decoder takes the same bytes;
// - a disposition ends the link for a known LLC type of its version, or does not for
//   anything else, or does not act on what smcpre must answer;
// - decode -> encode -> decode changes the message, the encoding is not stable, or the
//   re-encoding differs from the input in a bit the decoder reads (a version 2 length or
//   rkey count taken big-endian is compared as the little-endian smcpre writes);
// - a rejection comes without a reason, or with one that is not a single printable line.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/wire/llc.h"
#include "core/wire/llc_v2.h"
#include "tests/fuzz/fuzz_check.h"

namespace llc = smcpre::core::llc;
using smcpre::fuzz::check_only_ignored_bits_differ;
using smcpre::fuzz::one_printable_line;

namespace {

using Bytes = std::span<const uint8_t>;

// A copy of a message its decoder took, with a version 2 length (and an ADD LINK's rkey
// count) that came big-endian written little-endian, as the encoder writes them: bytes
// that mean the same either way are no difference. Version 1 messages stay as they are.
std::vector<uint8_t> little_endian(Bytes in, bool swap_rkey_count) {
  std::vector<uint8_t> out(in.begin(), in.end());
  if ((in[0] & 0xF0) != 0x20) return out;
  const size_t le = static_cast<size_t>(in[1] | in[2] << 8);
  if (le == in.size()) return out;
  out[1] = static_cast<uint8_t>(in.size());
  out[2] = static_cast<uint8_t>(in.size() >> 8);
  constexpr size_t kRkeyCount = llc::kSize + 26;
  if (swap_rkey_count) std::swap(out[kRkeyCount], out[kRkeyCount + 1]);
  return out;
}

// Decodes `in` as a Message of either version; if taken, checks the round trip and what a
// link does with it. Returns whether taken.
template <typename Message>
bool check_type(Bytes in, llc::Version version, llc::Type type, llc::Disposition disposition) {
  Message m;
  std::string error;
  if (!llc::decode(in, version, &m, &error)) {
    FUZZ_CHECK(!error.empty() && one_printable_line(error));
    return false;
  }
  FUZZ_CHECK(in.size() == llc::kSize);
  const llc::Family family =
      version == llc::Version::kV1 ? llc::Family::kLlcV1 : llc::Family::kLlcV2;
  FUZZ_CHECK((llc::classify_message(in[0]) == llc::MessageKind{family, type}));
  if (version == llc::Version::kV1) {
    FUZZ_CHECK(llc::classify(in[0]) == type);
    FUZZ_CHECK(llc::disposition(in[0]) == disposition);
  } else {
    FUZZ_CHECK(llc::disposition_v2(in[0]) == llc::Disposition::kAct);
  }
  std::array<uint8_t, llc::kSize> again{};
  llc::encode(m, version, again);
  FUZZ_CHECK(llc::classify_message(again[0]) == llc::classify_message(in[0]));
  Message m2;
  FUZZ_CHECK(llc::decode(Bytes(again), version, &m2, &error));
  FUZZ_CHECK(m2 == m);
  std::array<uint8_t, llc::kSize> third{};
  llc::encode(m2, version, third);
  FUZZ_CHECK(third == again);
  const std::vector<uint8_t> input = little_endian(in, false);
  check_only_ignored_bits_differ(input, again, [&](Bytes b) {
    Message x;
    return llc::decode(b, version, &x, nullptr) && x == m;
  });
  return true;
}

// The same for the version 2 messages that may be longer than 44 bytes.
template <typename Message>
bool check_v2_type(Bytes in, llc::Type type, bool has_rkey_count) {
  Message m;
  std::string error;
  if (!llc::decode(in, &m, &error)) {
    FUZZ_CHECK(!error.empty() && one_printable_line(error));
    return false;
  }
  FUZZ_CHECK(in.size() >= llc::kSize && in.size() <= llc::kV2MaxSize);
  FUZZ_CHECK((llc::classify_message(in[0]) == llc::MessageKind{llc::Family::kLlcV2, type}));
  FUZZ_CHECK(llc::disposition_v2(in[0]) == llc::Disposition::kAct);
  FUZZ_CHECK(m.size() == in.size());
  std::vector<uint8_t> again(llc::kV2MaxSize);
  again.resize(llc::encode(m, again));
  FUZZ_CHECK(again.size() == in.size());
  Message m2;
  FUZZ_CHECK(llc::decode(Bytes(again), &m2, &error));
  FUZZ_CHECK(m2 == m);
  std::vector<uint8_t> third(llc::kV2MaxSize);
  third.resize(llc::encode(m2, third));
  FUZZ_CHECK(third == again);
  const std::vector<uint8_t> input = little_endian(in, has_rkey_count && in.size() > llc::kSize);
  check_only_ignored_bits_differ(input, again, [&](Bytes b) {
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
    // classify_message agrees with classify on version 1 and CDC, and finds version 2
    // exactly at 0x20 | type; a version 2 group ends the link for anything else.
    const llc::MessageKind kind = llc::classify_message(data[0]);
    FUZZ_CHECK((kind.family == llc::Family::kCdc) == (type == llc::Type::kCdc));
    FUZZ_CHECK((kind.family == llc::Family::kLlcV1) == llc_v1);
    if (kind.family == llc::Family::kLlcV1) FUZZ_CHECK(kind.type == type);
    const bool llc_v2 = data[0] >= 0x21 && data[0] <= 0x29;
    FUZZ_CHECK((kind.family == llc::Family::kLlcV2) == llc_v2);
    if (llc_v2) FUZZ_CHECK(static_cast<uint8_t>(0x20 | static_cast<uint8_t>(kind.type)) == data[0]);
    FUZZ_CHECK(llc_v2 == (llc::disposition_v2(data[0]) != llc::Disposition::kViolation));
  }
  constexpr auto kAct = llc::Disposition::kAct;
  int taken = 0;
  for (const llc::Version v : {llc::Version::kV1, llc::Version::kV2}) {
    taken +=
        check_type<llc::ConfirmLink>(in, v, llc::Type::kConfirmLink, kAct) +
        check_type<llc::TestLink>(in, v, llc::Type::kTestLink, kAct) +
        check_type<llc::DeleteLink>(in, v, llc::Type::kDeleteLink, kAct) +
        check_type<llc::ConfirmRkey>(in, v, llc::Type::kConfirmRkey, llc::Disposition::kIgnore);
  }
  taken += check_v2_type<llc::AddLinkV2>(in, llc::Type::kAddLink, true) +
           check_v2_type<llc::DeleteRkeyV2>(in, llc::Type::kDeleteRkey, false) +
           check_v2_type<llc::ReqAddLinkV2>(in, llc::Type::kReqAddLink, false);
  FUZZ_CHECK(taken <= 1);
  return 0;
}
