// What the CLC parsers refuse, each with its reason: cut, framed or versioned wrongly, bad
// fields; parse_header's verdicts on a byte stream; and random input judged against a
// restatement of the spec.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "core/wire/clc.h"
#include "tests/unit/clc_samples.h"

TEST_CASE("CLC parsers reject malformed messages with a specific reason") {
  const struct {
    clc::Type type;
    Bytes bytes;
  } messages[] = {
      {clc::Type::kProposal, kProposalBytes},
      {clc::Type::kProposal, clc::encode(sample_proposal(3))},
      {clc::Type::kProposal, kProposalOffset0Bytes},
      {clc::Type::kAccept, kAcceptBytes},
      {clc::Type::kConfirm, clc::encode_confirm(sample_accept())},
      {clc::Type::kDecline, kDeclineBytes},
      {clc::Type::kDecline, kDeclineV2Bytes},
  };
  for (const auto& m : messages) {
    INFO("type " << static_cast<int>(m.type) << ", " << m.bytes.size() << " bytes");
    std::string error;
    REQUIRE(parse_as(m.type, m.bytes, &error));

    for (size_t n = 0; n < m.bytes.size(); ++n) {
      const Bytes cut(m.bytes.begin(), m.bytes.begin() + n);
      REQUIRE(rejection(m.type, cut).rfind("truncated", 0) == 0);
    }
    Bytes longer = m.bytes;
    longer.push_back(0);
    CHECK(rejection(m.type, longer).find("bytes given") != std::string::npos);
    for (size_t i = 0; i < 4; ++i) {
      Bytes b = m.bytes;
      b[i] ^= 0x01;
      CHECK(rejection(m.type, b).rfind("bad eyecatcher", 0) == 0);
      b = m.bytes;
      b[b.size() - 4 + i] ^= 0x01;
      CHECK(rejection(m.type, b) == "bad trailer");
    }
    for (uint8_t t : {0, 5, 0xFF}) {
      Bytes b = m.bytes;
      b[4] = t;
      CHECK(rejection(m.type, b) == "unknown CLC type " + std::to_string(t));
    }
    // A length field that disagrees with the message, but matches the bytes given.
    Bytes shorter(m.bytes.begin(), m.bytes.end() - 8);
    set_length(shorter, shorter.size());
    std::copy(clc::kEyecatcher.begin(), clc::kEyecatcher.end(), shorter.end() - 4);
    CHECK(rejection(m.type, shorter).find("length") != std::string::npos);
  }
}

TEST_CASE("CLC Proposal/Accept/Confirm must be version 1 SMC-R") {
  for (const Bytes& good : {kProposalBytes, kProposalOffset0Bytes, kAcceptBytes}) {
    const clc::Type type = static_cast<clc::Type>(good[4]);
    Bytes b = good;
    b[7] = 0x20 | (good[7] & 0x0F);
    CHECK(rejection(type, b) == "unsupported version 2");
    b[7] = 0x00;
    CHECK(rejection(type, b) == "unsupported version 0");
    b = good;
    b[7] |= 0x01;
    CHECK(rejection(type, b) == "not SMC-R (SMC type 1)");
    b[7] = static_cast<uint8_t>(good[7] | 0x03);
    CHECK(rejection(type, b) == "not SMC-R (SMC type 3)");
    b = good;
    b[7] |= 0x04;
    CHECK(rejection(type, b) == "reserved header bits set (0x04)");
  }
  Bytes b = kProposalBytes;
  b[7] |= 0x08;  // no first-contact flag in a Proposal
  CHECK(rejection(clc::Type::kProposal, b) == "reserved header bits set (0x08)");
}

TEST_CASE("CLC Proposal field validation") {
  SECTION("IP area offset") {
    Bytes b = kProposalBytes;
    b[39] = 41;
    CHECK(rejection(clc::Type::kProposal, b) == "IP area offset 41 > 40");
    b[38] = 0xFF;
    b[39] = 0xFF;
    CHECK(rejection(clc::Type::kProposal, b) == "IP area offset 65535 > 40");
    // An offset that puts the IP area elsewhere than the length says.
    b = kProposalBytes;
    b[39] = 0;
    CHECK(rejection(clc::Type::kProposal, b) ==
          "length 92 != 52 for Proposal with IP area offset 0 and 0 IPv6 prefixes");
    b = kProposalOffset0Bytes;
    b[39] = 40;  // the IP area would start beyond the message
    CHECK(rejection(clc::Type::kProposal, b) == "length 52 too short for an IP area at offset 40");
    b[39] = 1;  // the IP area would overlap the trailer
    CHECK(rejection(clc::Type::kProposal, b) == "length 52 too short for an IP area at offset 1");
  }
  SECTION("the SMC-D area's content is ignored") {
    Bytes b = kProposalBytes;
    std::fill(b.begin() + 40, b.begin() + 80, 0xFF);
    clc::Proposal back;
    REQUIRE(clc::parse_proposal(b, &back, nullptr));
    CHECK(equal(back, sample_proposal()));
  }
  SECTION("IPv6 prefix count") {
    Bytes b = kProposalBytes;
    b[87] = 9;
    CHECK(rejection(clc::Type::kProposal, b) == "too many IPv6 prefixes (9)");
    b[87] = 0xFF;
    CHECK(rejection(clc::Type::kProposal, b) == "too many IPv6 prefixes (255)");
    b[87] = 1;
    CHECK(rejection(clc::Type::kProposal, b) ==
          "length 92 != 109 for Proposal with IP area offset 40 and 1 IPv6 prefixes");
    b = clc::encode(sample_proposal(2));
    b[87] = 1;
    CHECK(rejection(clc::Type::kProposal, b) ==
          "length 126 != 109 for Proposal with IP area offset 40 and 1 IPv6 prefixes");
    b = kProposalOffset0Bytes;
    b[47] = 9;
    CHECK(rejection(clc::Type::kProposal, b) == "too many IPv6 prefixes (9)");
    b[47] = 1;
    CHECK(rejection(clc::Type::kProposal, b) ==
          "length 52 != 69 for Proposal with IP area offset 0 and 1 IPv6 prefixes");
  }
  SECTION("length bounds") {
    Bytes b = clc::encode(sample_proposal(8));
    b.push_back(0);
    set_length(b, b.size());
    CHECK(rejection(clc::Type::kProposal, b) == "length 229 > 228 for Proposal");
    b = kProposalOffset0Bytes;
    b.erase(b.begin() + 40);
    set_length(b, b.size());
    CHECK(rejection(clc::Type::kProposal, b) == "length 51 < 52 for Proposal");
  }
  SECTION("prefix lengths") {
    std::string error;
    for (const size_t ip : {size_t{80}, size_t{40}}) {
      INFO("IP area at " << ip);
      Bytes b = ip == 80 ? kProposalBytes : kProposalOffset0Bytes;
      b[ip + 4] = 32;
      CHECK(parse_as(clc::Type::kProposal, b, &error));
      b[ip + 4] = 33;
      CHECK(rejection(clc::Type::kProposal, b) == "bad IPv4 prefix length 33");
    }
    Bytes b = clc::encode(sample_proposal(2));
    b[88 + 17 + 16] = 128;
    CHECK(parse_as(clc::Type::kProposal, b, &error));
    b[88 + 17 + 16] = 129;
    CHECK(rejection(clc::Type::kProposal, b) == "bad IPv6 prefix length 129");
  }
}

TEST_CASE("CLC Accept field validation") {
  for (uint8_t mtu : {0, 6, 7, 15}) {
    Bytes b = kAcceptBytes;
    b[50] = static_cast<uint8_t>(0x40 | mtu);
    CHECK(rejection(clc::Type::kAccept, b) == "bad QP MTU code " + std::to_string(mtu));
  }
  Bytes b = kAcceptBytes;
  b[45] = 0;
  CHECK(rejection(clc::Type::kAccept, b) == "bad RMBE index 0");
  b = kAcceptBytes;
  set_length(b, 60);
  b.resize(60);
  std::copy(clc::kEyecatcher.begin(), clc::kEyecatcher.end(), b.end() - 4);
  CHECK(rejection(clc::Type::kAccept, b) == "length 60 != 68 for Accept");
  SECTION("reserved bytes are ignored") {
    b = kAcceptBytes;
    b[51] = 0xFF;
    b[60] = 0xFF;
    clc::AcceptConfirm back;
    REQUIRE(clc::parse_accept(b, &back, nullptr));
    CHECK(equal(back, sample_accept()));
  }
}

TEST_CASE("parse_header recognises CLC headers on a byte stream") {
  clc::Header h;
  SECTION("every prefix of a valid header needs more; the full header is OK") {
    for (const Bytes& msg :
         {kProposalBytes, kProposalOffset0Bytes, kAcceptBytes, kDeclineBytes, kDeclineV2Bytes}) {
      for (size_t n = 0; n < clc::kHeaderSize; ++n) {
        REQUIRE(clc::parse_header(std::span(msg.data(), n), &h) == clc::HeaderResult::kNeedMore);
      }
      for (size_t n : {clc::kHeaderSize, size_t{12}, msg.size()}) {
        REQUIRE(clc::parse_header(std::span(msg.data(), n), &h) == clc::HeaderResult::kOk);
        CHECK(static_cast<uint8_t>(h.type) == msg[4]);
        CHECK(h.length == msg.size());
        CHECK(h.version == msg[7] >> 4);
      }
    }
    REQUIRE(clc::parse_header(kAcceptBytes, &h) == clc::HeaderResult::kOk);
    CHECK(h.type == clc::Type::kAccept);
    CHECK(h.flag);
    REQUIRE(clc::parse_header(kProposalBytes, &h) == clc::HeaderResult::kOk);
    CHECK_FALSE(h.flag);
  }
  SECTION("application bytes are not CLC") {
    const std::string http = "GET / HTTP/1.1\r\n";
    const Bytes b(http.begin(), http.end());
    for (size_t n = 1; n <= b.size(); ++n) {
      CHECK(clc::parse_header(std::span(b.data(), n), &h) == clc::HeaderResult::kNotClc);
    }
  }
  SECTION("a mismatch at any eyecatcher byte is seen as soon as it arrives") {
    for (size_t i = 0; i < 4; ++i) {
      Bytes b = kAcceptBytes;
      b[i] = 0x00;
      CHECK(clc::parse_header(std::span(b.data(), i), &h) == clc::HeaderResult::kNeedMore);
      CHECK(clc::parse_header(std::span(b.data(), i + 1), &h) == clc::HeaderResult::kNotClc);
    }
    Bytes smcd = kDeclineBytes;
    smcd[3] = 0xC4;  // SMC-D eyecatcher: not ours
    CHECK(clc::parse_header(smcd, &h) == clc::HeaderResult::kNotClc);
  }
  SECTION("unknown types") {
    for (uint8_t t : {0, 5, 0x80}) {
      Bytes b = kAcceptBytes;
      b[4] = t;
      CHECK(clc::parse_header(std::span(b.data(), 5), &h) == clc::HeaderResult::kNotClc);
    }
  }
  SECTION("lengths impossible for the type") {
    Bytes b = kDeclineBytes;
    b[5] = 0x01;  // >= 256: too long for any Decline, known from the first length byte
    CHECK(clc::parse_header(std::span(b.data(), 6), &h) == clc::HeaderResult::kNotClc);
    b = kProposalBytes;
    b[5] = 0x01;  // >= 256: longer than a version 1 Proposal, not than a version 2 one
    CHECK(clc::parse_header(std::span(b.data(), 6), &h) == clc::HeaderResult::kNeedMore);
    CHECK(clc::parse_header(std::span(b.data(), 8), &h) == clc::HeaderResult::kNotClc);
    b[5] = 0x03;  // >= 768: longer than the largest Proposal of any version
    CHECK(clc::parse_header(std::span(b.data(), 6), &h) == clc::HeaderResult::kNotClc);
    b = kDeclineBytes;
    b[6] = 20;
    CHECK(clc::parse_header(std::span(b.data(), 7), &h) == clc::HeaderResult::kNotClc);
    b = kProposalBytes;
    b[6] = 51;
    CHECK(clc::parse_header(std::span(b.data(), 7), &h) == clc::HeaderResult::kNotClc);
    b = kAcceptBytes;
    b[6] = 100;  // a version 1 Accept has exactly 68 bytes ...
    CHECK(clc::parse_header(std::span(b.data(), 7), &h) == clc::HeaderResult::kNeedMore);
    CHECK(clc::parse_header(std::span(b.data(), 8), &h) == clc::HeaderResult::kNotClc);
    b[7] = 0x28;  // ... a version 2 one may be longer
    CHECK(clc::parse_header(std::span(b.data(), 8), &h) == clc::HeaderResult::kOk);
    b = kDeclineV2Bytes;
    b[7] = 0x10;  // version 1 Declines have 28 bytes ...
    CHECK(clc::parse_header(b, &h) == clc::HeaderResult::kNotClc);
    b = kDeclineBytes;
    b[7] = 0x20;  // ... version 2 ones 44
    CHECK(clc::parse_header(b, &h) == clc::HeaderResult::kNotClc);
  }
  SECTION("version 0 is not CLC") {
    Bytes b = kAcceptBytes;
    b[7] = 0x08;
    CHECK(clc::parse_header(b, &h) == clc::HeaderResult::kNotClc);
  }
}

namespace {

// Spec-level restatement of when a byte string is a valid message of `type`, used as the
// oracle for the fuzz test (written independently of clc.cpp's control flow).
bool reference_valid(clc::Type type, const Bytes& b) {
  const auto eye = [&](size_t at) {
    return std::equal(clc::kEyecatcher.begin(), clc::kEyecatcher.end(), b.begin() + at);
  };
  if (b.size() < 8 || !eye(0) || b[4] != static_cast<uint8_t>(type)) return false;
  if (static_cast<size_t>(b[5] << 8 | b[6]) != b.size()) return false;
  const uint8_t version = b[7] >> 4;
  const uint8_t smc_type = b[7] & 0x03;
  switch (type) {
    case clc::Type::kProposal: {
      if (version != 1 || smc_type != 0 || (b[7] & 0x0C) != 0 || b.size() < 52) return false;
      // The IP area (8 bytes) starts 40 + offset bytes in, offset at most 40 (Linux's
      // SMC-D area); prefixes and the trailer follow it.
      const size_t offset = static_cast<size_t>(b[38] << 8 | b[39]);
      const size_t ip = 40 + offset;
      if (offset > 40 || b.size() < ip + 12) return false;
      const size_t count = b[ip + 7];
      if (count > 8 || b.size() != ip + 8 + 17 * count + 4) return false;
      if (!eye(b.size() - 4) || b[ip + 4] > 32) return false;
      for (size_t i = 0; i < count; ++i) {
        if (b[ip + 8 + 17 * i + 16] > 128) return false;
      }
      return true;
    }
    case clc::Type::kAccept:
    case clc::Type::kConfirm:
      return version == 1 && smc_type == 0 && (b[7] & 0x04) == 0 && b.size() == 68 && eye(64) &&
             (b[50] & 0x0F) >= 1 && (b[50] & 0x0F) <= 5 && b[45] != 0;
    case clc::Type::kDecline:
      return version >= 1 && smc_type <= 1 && b.size() == (version == 1 ? 28u : 44u) &&
             eye(b.size() - 4);
  }
  return false;
}

// Re-encodes what was parsed and checks it against the input, byte for byte, except for
// the fields the parser is documented to ignore.
void check_faithful(clc::Type type, const Bytes& b) {
  Bytes expected = b;
  Bytes actual;
  switch (type) {
    case clc::Type::kProposal: {
      clc::Proposal p;
      REQUIRE(clc::parse_proposal(b, &p, nullptr));
      actual = clc::encode(p);
      // The encoder always writes IP area offset 40 and a zero SMC-D area (ignored when
      // parsing): expect the input's local block, IP area and prefixes at their place in
      // that layout, the IP area's reserved bytes zero.
      const size_t ip = 40 + static_cast<size_t>(b[38] << 8 | b[39]);
      expected.assign(b.begin(), b.begin() + 38);
      expected.insert(expected.end(), {0x00, 0x28});
      expected.insert(expected.end(), 40, 0x00);
      expected.insert(expected.end(), b.begin() + static_cast<ptrdiff_t>(ip), b.end());
      set_length(expected, expected.size());
      expected[80 + 5] = expected[80 + 6] = 0;  // reserved
      break;
    }
    case clc::Type::kAccept:
    case clc::Type::kConfirm: {
      clc::AcceptConfirm a;
      const bool ok = type == clc::Type::kAccept ? clc::parse_accept(b, &a, nullptr)
                                                 : clc::parse_confirm(b, &a, nullptr);
      REQUIRE(ok);
      actual = type == clc::Type::kAccept ? clc::encode_accept(a) : clc::encode_confirm(a);
      expected[51] = expected[60] = 0;  // reserved
      break;
    }
    case clc::Type::kDecline: {
      clc::Decline d;
      REQUIRE(clc::parse_decline(b, &d, nullptr));
      actual = clc::encode(d);
      // Only the fields a Decline carries: peer id, diagnosis, out-of-sync flag.
      REQUIRE((b[7] & 0x08) == (actual[7] & 0x08));
      expected.assign(b.begin(), b.begin() + 20);
      actual.resize(20);
      expected[5] = actual[5];
      expected[6] = actual[6];
      expected[7] = actual[7];
      break;
    }
  }
  REQUIRE(actual == expected);
}

}  // namespace

TEST_CASE("CLC parsing survives random input and never accepts an invalid message") {
  std::mt19937 rng(20240601);
  const Bytes seeds[] = {
      kProposalBytes,
      clc::encode(sample_proposal(1)),
      clc::encode(sample_proposal(8)),
      kProposalOffset0Bytes,
      kAcceptBytes,
      clc::encode_confirm(sample_accept()),
      kDeclineBytes,
      kDeclineV2Bytes,
  };
  const clc::Type types[] = {clc::Type::kProposal, clc::Type::kAccept, clc::Type::kConfirm,
                             clc::Type::kDecline};
  int accepted = 0;
  int rejected = 0;
  for (int i = 0; i < 100000; ++i) {
    Bytes b;
    if (i % 2 == 0) {
      // Random bytes, usually given a plausible frame so that parsing gets deep.
      b.resize(rng() % 250);
      for (auto& x : b) x = static_cast<uint8_t>(rng());
      if (b.size() >= 8 && rng() % 4 != 0) {
        std::copy(clc::kEyecatcher.begin(), clc::kEyecatcher.end(), b.begin());
        std::copy(clc::kEyecatcher.begin(), clc::kEyecatcher.end(), b.end() - 4);
        b[4] = static_cast<uint8_t>(1 + rng() % 4);
        set_length(b, b.size());
        b[7] = static_cast<uint8_t>(rng() % 3 << 4 | (rng() % 16));
      }
    } else {
      b = seeds[rng() % std::size(seeds)];
      for (int k = 1 + rng() % 3; k > 0; --k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
      if (rng() % 8 == 0) b.resize(rng() % 250, static_cast<uint8_t>(rng()));
    }
    clc::Header h;
    const clc::HeaderResult hr = clc::parse_header(b, &h);
    for (clc::Type type : types) {
      std::string error;
      const bool ok = parse_as(type, b, &error);
      REQUIRE(ok == reference_valid(type, b));
      if (ok) {
        ++accepted;
        check_faithful(type, b);
        // Whatever parses as a whole message is also recognised as a header.
        REQUIRE(hr == clc::HeaderResult::kOk);
        REQUIRE(h.type == type);
        REQUIRE(h.length == b.size());
      } else {
        ++rejected;
        REQUIRE_FALSE(error.empty());
      }
    }
    // The header verdict never changes from kNotClc as more bytes arrive, and kNeedMore
    // is only given to short inputs.
    bool not_clc = false;
    for (size_t n = 0; n <= std::min(b.size(), size_t{9}); ++n) {
      const clc::HeaderResult r = clc::parse_header(std::span(b.data(), n), &h);
      if (not_clc) REQUIRE(r == clc::HeaderResult::kNotClc);
      not_clc = r == clc::HeaderResult::kNotClc;
      if (r == clc::HeaderResult::kNeedMore) REQUIRE(n < clc::kHeaderSize);
    }
  }
  CHECK(accepted > 1000);
  CHECK(rejected > 1000);
}
