// libFuzzer harness: the CLC message parsers (core/wire/clc.h, clc_v2.h), the first bytes
// a stranger sends. Every input goes through parse_header and all eight message parsers
// (version 1, and version 2 as Linux speaks it), as a server or a client would see it.
// Besides crashes and sanitizer reports, it fails when:
// - parse_header contradicts itself over the input's prefixes (a stream reader would
//   decide differently depending on how the bytes arrive), or accepts fewer than 8 bytes;
// - a message that a parser takes is not one the stream reader would deliver (its header
//   not recognised with the same type, length and version);
// - more than one version 1 parser, or more than one version 2 parser, takes the same
//   bytes; a version 1 Proposal is not taken alike by parse_any_proposal, or a version 2
//   Decline alike by the version 1 parser (which reads its common part);
// - decode -> encode -> decode changes the message, the encoding is not stable, or the
//   re-encoding differs from the input in a bit the parser reads;
// - a rejection comes without a reason, or with one that is not a single printable line.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/wire/clc.h"
#include "core/wire/clc_v2.h"
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

// The versions a parser takes: version 1 only, 2 and later only, or any.
enum class Versions { kV1, kV2, kAny };

// What every parser that takes `in` guarantees about its framing.
void check_framed(Bytes in, clc::Type type, Versions versions) {
  clc::Header h;
  FUZZ_CHECK(clc::parse_header(in, &h) == clc::HeaderResult::kOk);
  FUZZ_CHECK(h.type == type);
  FUZZ_CHECK(h.length == in.size());
  if (versions == Versions::kV1) FUZZ_CHECK(h.version == clc::kVersion);
  if (versions == Versions::kV2) FUZZ_CHECK(h.version >= clc::kVersion2);
  FUZZ_CHECK(h.version >= 1);
  FUZZ_CHECK(std::equal(clc::kEyecatcher.begin(), clc::kEyecatcher.end(), in.end() - 4));
}

// Parses `in` as a Message of `type`; if taken, checks its framing and the round trip.
// (The encoders assert that every field fits its wire field: a parser that let through a
// value the encoder cannot write fails there.) Returns whether `in` was taken, and the
// message in *taken.
template <typename Message, typename Parse, typename Encode>
bool check_message(Bytes in, clc::Type type, Versions versions, Parse parse, Encode encode,
                   Message* taken = nullptr) {
  Message m;
  std::string error;
  if (!parse(in, &m, &error)) {
    FUZZ_CHECK(!error.empty());
    FUZZ_CHECK(one_printable_line(error));
    return false;
  }
  check_framed(in, type, versions);
  const std::vector<uint8_t> again = encode(m);
  Message m2;
  FUZZ_CHECK(parse(again, &m2, &error));
  FUZZ_CHECK(m2 == m);
  FUZZ_CHECK(encode(m2) == again);
  // A Proposal in RFC 7609's layout (IP area offset 0) is re-encoded in Linux's (offset
  // 40), a version 2 Decline by the version 1 encoder in version 1, an SMC-D extension
  // without its devices: another size, nothing to compare bit by bit.
  if (again.size() == in.size()) {
    check_only_ignored_bits_differ(in, again, [&](Bytes b) {
      Message x;
      return parse(b, &x, nullptr) && x == m;
    });
  }
  if (taken != nullptr) *taken = std::move(m);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Bytes in(data, size);
  check_header_over_prefixes(in);
  clc::Proposal v1_proposal;
  clc::Decline v1_decline;
  const bool took_v1_proposal = check_message<clc::Proposal>(
      in, clc::Type::kProposal, Versions::kV1, clc::parse_proposal,
      [](const clc::Proposal& m) { return clc::encode(m); }, &v1_proposal);
  const bool took_v1_decline = check_message<clc::Decline>(
      in, clc::Type::kDecline, Versions::kAny, clc::parse_decline,
      [](const clc::Decline& m) { return clc::encode(m); }, &v1_decline);
  const int v1_taken = took_v1_proposal + took_v1_decline +
                       check_message<clc::AcceptConfirm>(
                           in, clc::Type::kAccept, Versions::kV1, clc::parse_accept,
                           [](const clc::AcceptConfirm& m) { return clc::encode_accept(m); }) +
                       check_message<clc::AcceptConfirm>(
                           in, clc::Type::kConfirm, Versions::kV1, clc::parse_confirm,
                           [](const clc::AcceptConfirm& m) { return clc::encode_confirm(m); });
  FUZZ_CHECK(v1_taken <= 1);

  clc::ProposalV2 any_proposal;
  clc::DeclineV2 v2_decline;
  const bool took_any_proposal = check_message<clc::ProposalV2>(
      in, clc::Type::kProposal, Versions::kAny, clc::parse_any_proposal,
      [](const clc::ProposalV2& m) { return clc::encode(m); }, &any_proposal);
  const bool took_v2_decline = check_message<clc::DeclineV2>(
      in, clc::Type::kDecline, Versions::kV2, clc::parse_decline_v2,
      [](const clc::DeclineV2& m) { return clc::encode(m); }, &v2_decline);
  const int v2_taken = took_any_proposal + took_v2_decline +
                       check_message<clc::AcceptConfirmV2>(
                           in, clc::Type::kAccept, Versions::kV2, clc::parse_accept_v2,
                           [](const clc::AcceptConfirmV2& m) { return clc::encode_accept(m); }) +
                       check_message<clc::AcceptConfirmV2>(
                           in, clc::Type::kConfirm, Versions::kV2, clc::parse_confirm_v2,
                           [](const clc::AcceptConfirmV2& m) { return clc::encode_confirm(m); });
  FUZZ_CHECK(v2_taken <= 1);

  // Version 1 Proposals mean the same to both Proposal parsers.
  if (took_v1_proposal) {
    FUZZ_CHECK(took_any_proposal);
    FUZZ_CHECK(any_proposal.version == clc::kVersion);
    FUZZ_CHECK(any_proposal.v1_type == clc::SmcType::kR);
    FUZZ_CHECK(any_proposal.v2_type == clc::SmcType::kNone);
    FUZZ_CHECK(any_proposal.local == v1_proposal.local);
    FUZZ_CHECK(any_proposal.ipv4_subnet_be == v1_proposal.ipv4_subnet_be);
    FUZZ_CHECK(any_proposal.ipv4_prefix_len == v1_proposal.ipv4_prefix_len);
    FUZZ_CHECK(any_proposal.ipv6_prefixes == v1_proposal.ipv6_prefixes);
  } else if (took_any_proposal) {
    FUZZ_CHECK(any_proposal.version >= clc::kVersion2);
  }
  // A version 2 Decline's common part reads the same to the version 1 parser.
  if (took_v2_decline) {
    FUZZ_CHECK(took_v1_decline);
    FUZZ_CHECK(v1_decline.peer_id == v2_decline.peer_id);
    FUZZ_CHECK(v1_decline.diagnosis == v2_decline.diagnosis);
    FUZZ_CHECK(v1_decline.out_of_sync == v2_decline.out_of_sync);
  }
  return 0;
}
