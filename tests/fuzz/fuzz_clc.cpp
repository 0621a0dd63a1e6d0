// libFuzzer harness: the CLC message parsers (core/wire/clc.h), the first bytes a stranger
// sends. Every input goes through parse_header and all four message parsers, as a server
// or a client would see it. Besides crashes and sanitizer reports, it fails when:
// - parse_header contradicts itself over the input's prefixes (a stream reader would
//   decide differently depending on how the bytes arrive), or accepts fewer than 8 bytes;
// - a message that a parser takes is not one the stream reader would deliver (its header
//   not recognised with the same type, length and version);
// - more than one parser takes the same bytes;
// - decode -> encode -> decode changes the message, the encoding is not stable, or the
//   re-encoding differs from the input in a bit the parser reads;
// - a rejection comes without a reason, or with one that is not a single printable line.
// Version 2 messages (as Linux sends them) must be rejected: smcpre then declines.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/wire/clc.h"
#include "tests/fuzz/fuzz_check.h"

namespace clc = smcpre::core::clc;
using smcpre::fuzz::check_only_ignored_bits_differ;
using smcpre::fuzz::one_printable_line;

namespace {

using Bytes = std::span<const uint8_t>;

// parse_header on every prefix of the first 8 bytes agrees with its answer on them all.
void check_header_over_prefixes(Bytes in) {
  clc::Header full_header;
  const clc::HeaderResult full = clc::parse_header(in, &full_header);
  if (in.size() >= clc::kHeaderSize) FUZZ_CHECK(full != clc::HeaderResult::kNeedMore);
  for (size_t k = 0; k < std::min(in.size(), clc::kHeaderSize); ++k) {
    clc::Header h;
    const clc::HeaderResult part = clc::parse_header(in.first(k), &h);
    FUZZ_CHECK(part != clc::HeaderResult::kOk);  // a header is 8 bytes
    // Bytes that cannot start a message never become one; bytes that may start one were
    // never refused on the way.
    if (part == clc::HeaderResult::kNotClc) FUZZ_CHECK(full == clc::HeaderResult::kNotClc);
    if (full != clc::HeaderResult::kNotClc) FUZZ_CHECK(part == clc::HeaderResult::kNeedMore);
  }
  if (full == clc::HeaderResult::kOk) {
    FUZZ_CHECK(full_header.version >= 1);
    FUZZ_CHECK(full_header.length >= clc::kDeclineSize);
    FUZZ_CHECK(full_header.length <= clc::kMaxMessageSize);
  }
}

// What every parser that takes `in` guarantees about its framing.
void check_framed(Bytes in, clc::Type type) {
  clc::Header h;
  FUZZ_CHECK(clc::parse_header(in, &h) == clc::HeaderResult::kOk);
  FUZZ_CHECK(h.type == type);
  FUZZ_CHECK(h.length == in.size());
  if (type != clc::Type::kDecline) FUZZ_CHECK(h.version == clc::kVersion);
  FUZZ_CHECK(std::equal(clc::kEyecatcher.begin(), clc::kEyecatcher.end(), in.end() - 4));
}

// Parses `in` as a Message of `type`; if taken, checks its framing and the round trip.
// (The encoders assert that every field fits its wire field: a parser that let through a
// value the encoder cannot write fails there.) Returns whether `in` was taken.
template <typename Message, typename Parse, typename Encode>
bool check_message(Bytes in, clc::Type type, Parse parse, Encode encode) {
  Message m;
  std::string error;
  if (!parse(in, &m, &error)) {
    FUZZ_CHECK(!error.empty());
    FUZZ_CHECK(one_printable_line(error));
    return false;
  }
  check_framed(in, type);
  const std::vector<uint8_t> again = encode(m);
  Message m2;
  FUZZ_CHECK(parse(again, &m2, &error));
  FUZZ_CHECK(m2 == m);
  FUZZ_CHECK(encode(m2) == again);
  // A Proposal in RFC 7609's layout (IP area offset 0) is re-encoded in Linux's (offset
  // 40), a version 2 Decline in version 1: another size, nothing to compare bit by bit.
  if (again.size() == in.size()) {
    check_only_ignored_bits_differ(in, again, [&](Bytes b) {
      Message x;
      return parse(b, &x, nullptr) && x == m;
    });
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Bytes in(data, size);
  check_header_over_prefixes(in);
  const int taken =
      check_message<clc::Proposal>(in, clc::Type::kProposal, clc::parse_proposal,
                                   [](const clc::Proposal& m) { return clc::encode(m); }) +
      check_message<clc::AcceptConfirm>(in, clc::Type::kAccept, clc::parse_accept,
                                        clc::encode_accept) +
      check_message<clc::AcceptConfirm>(in, clc::Type::kConfirm, clc::parse_confirm,
                                        clc::encode_confirm) +
      check_message<clc::Decline>(in, clc::Type::kDecline, clc::parse_decline,
                                  [](const clc::Decline& m) { return clc::encode(m); });
  FUZZ_CHECK(taken <= 1);
  return 0;
}
