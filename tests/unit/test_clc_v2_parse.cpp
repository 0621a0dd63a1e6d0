// What the CLC version 2 parsers refuse, each with its reason: every truncation, a length
// field that lies, bad eyecatchers, offsets that point elsewhere, counts too big, bad EIDs,
// wrong versions and types; and random damage to valid messages, which is either refused
// or parses to a message that re-encodes to the same fields and is framed alike by
// parse_header.
#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/wire/clc_v2.h"
#include "tests/unit/kernel_clc_v2_samples.h"

namespace {

enum class Kind { kProposal, kAccept, kConfirm, kDecline };

bool parse_v2(Kind kind, const Bytes& b, std::string* error) {
  switch (kind) {
    case Kind::kProposal: {
      clc::ProposalV2 m;
      return clc::parse_any_proposal(b, &m, error);
    }
    case Kind::kAccept: {
      clc::AcceptConfirmV2 m;
      return clc::parse_accept_v2(b, &m, error);
    }
    case Kind::kConfirm: {
      clc::AcceptConfirmV2 m;
      return clc::parse_confirm_v2(b, &m, error);
    }
    case Kind::kDecline: {
      clc::DeclineV2 m;
      return clc::parse_decline_v2(b, &m, error);
    }
  }
  return false;
}

std::string refused(Kind kind, const Bytes& b) {
  std::string error;
  REQUIRE_FALSE(parse_v2(kind, b, &error));
  REQUIRE_FALSE(error.empty());
  return error;
}

clc::ProposalV2 both_versions() {
  clc::ProposalV2 m = kernel_v2::proposal();
  const clc::Proposal v1 = sample_proposal(2);
  m.v1_type = clc::SmcType::kR;
  m.local = v1.local;
  m.ipv4_subnet_be = v1.ipv4_subnet_be;
  m.ipv4_prefix_len = v1.ipv4_prefix_len;
  m.ipv6_prefixes = v1.ipv6_prefixes;
  return m;
}

clc::ProposalV2 with_smcd() {
  clc::ProposalV2 m = kernel_v2::proposal();
  m.v2_type = clc::SmcType::kBoth;
  return m;
}

clc::DeclineV2 decline() {
  clc::DeclineV2 m;
  m.peer_id = sample_decline().peer_id;
  m.diagnosis = 0x05000000;
  return m;
}

struct Sample {
  Kind kind;
  Bytes bytes;
};

std::vector<Sample> samples() {
  clc::AcceptConfirmV2 later = kernel_v2::accept();
  later.smcr.first_contact = false;
  later.fce = {};
  return {
      {Kind::kProposal, kernel_v2::kProposal},      {Kind::kProposal, clc::encode(both_versions())},
      {Kind::kProposal, clc::encode(with_smcd())},  {Kind::kAccept, kernel_v2::kAccept},
      {Kind::kAccept, clc::encode_accept(later)},   {Kind::kConfirm, kernel_v2::kConfirm},
      {Kind::kConfirm, clc::encode_confirm(later)}, {Kind::kDecline, clc::encode(decline())},
  };
}

}  // namespace

TEST_CASE("CLC v2 parsers refuse cut, padded, mislabelled and lying frames") {
  for (const Sample& s : samples()) {
    INFO("kind " << static_cast<int>(s.kind) << ", " << s.bytes.size() << " bytes");
    std::string error;
    REQUIRE(parse_v2(s.kind, s.bytes, &error));
    for (size_t n = 0; n < s.bytes.size(); ++n) {
      const Bytes cut(s.bytes.begin(), s.bytes.begin() + n);
      REQUIRE(refused(s.kind, cut).rfind("truncated", 0) == 0);
    }
    Bytes longer = s.bytes;
    longer.push_back(0);
    CHECK(refused(s.kind, longer).find("bytes given") != std::string::npos);
    for (size_t i = 0; i < 4; ++i) {
      Bytes b = s.bytes;
      b[i] ^= 0x01;
      CHECK(refused(s.kind, b).rfind("bad eyecatcher", 0) == 0);
      b = s.bytes;
      b[b.size() - 4 + i] ^= 0x01;
      CHECK(refused(s.kind, b) == "bad trailer");
    }
    // The length field says less or more than the message has (the trailer moved along):
    // by every amount up to 40 bytes, leaving at least the header and the trailer.
    constexpr size_t kHeaderAndTrailer = clc::kHeaderSize + clc::kTrailerSize;
    for (size_t d = 1; d <= 40 && d + kHeaderAndTrailer <= s.bytes.size(); ++d) {
      // 20 bytes off a first-contact Confirm leave a valid one without its GID extension.
      if (s.kind == Kind::kConfirm && s.bytes.size() == 180 && d == 20) continue;
      Bytes shorter(s.bytes.begin(), s.bytes.end() - d);
      set_length(shorter, shorter.size());
      std::copy(clc::kEyecatcher.begin(), clc::kEyecatcher.end(), shorter.end() - 4);
      INFO("shorter by " << d);
      CHECK(refused(s.kind, shorter).find("length") != std::string::npos);
      Bytes padded = s.bytes;
      padded.insert(padded.end() - 4, d, 0);
      set_length(padded, padded.size());
      INFO("longer by " << d);
      CHECK(refused(s.kind, padded).find("length") != std::string::npos);
    }
    Bytes b = s.bytes;
    if (s.kind != Kind::kProposal) {  // parse_any_proposal takes version 1 by its rules
      b[7] = static_cast<uint8_t>(0x10 | (b[7] & 0x0F));
      CHECK(refused(s.kind, b).find("version 1") != std::string::npos);
    }
    b[7] &= 0x0F;
    CHECK(refused(s.kind, b).find("version 0") != std::string::npos);
  }
}

TEST_CASE("CLC v2 Proposal: offsets, counts and EIDs are checked") {
  const Bytes kernel = kernel_v2::kProposal;  // IP area offset at 38, extension at 80
  const Bytes both = clc::encode(both_versions());
  const size_t both_ext = 80 + 8 + 2 * 17;
  Bytes b;
  SECTION("nothing offered") {
    b = kernel;
    b[7] = 0x2A;
    CHECK(refused(Kind::kProposal, b) == "Proposal offers neither SMC version 1 nor 2");
  }
  SECTION("IP area offset") {
    b = kernel;
    b[39] = 41;
    CHECK(refused(Kind::kProposal, b) == "IP area offset 41 > 40");
    b[39] = 40;  // nothing reads it when version 1 is not offered
    clc::ProposalV2 m;
    std::string error;
    CHECK(clc::parse_any_proposal(b, &m, &error));
    b = both;
    b[39] = 0;
    CHECK(refused(Kind::kProposal, b) == "IP area offset 0, not 40 after the SMC-D area");
    b[38] = 1;
    b[39] = 40;
    CHECK(refused(Kind::kProposal, b) == "IP area offset 296 > 40");
  }
  SECTION("version 2 extension offset") {
    for (int offset : {0, 27, 29, 0x011C}) {
      b = kernel;
      b[50] = static_cast<uint8_t>(offset >> 8);
      b[51] = static_cast<uint8_t>(offset);
      CHECK(refused(Kind::kProposal, b) == "version 2 extension offset " + std::to_string(offset) +
                                               ", not 28 (right after the SMC-D area)");
    }
    b = both;
    b[51] = 28;
    CHECK(refused(Kind::kProposal, b) ==
          "version 2 extension offset 28, not 70 (right after the IP area)");
  }
  SECTION("counts") {
    b = kernel;
    b[80] = 9;
    CHECK(refused(Kind::kProposal, b) == "too many UEIDs (9)");
    b[80] = 2;
    CHECK(refused(Kind::kProposal, b) ==
          "length 156 != 188 for a version 2 Proposal offering none (v1) and SMC-R (v2) with 0 "
          "IPv6 prefixes, 2 UEIDs and 0 ISM devices");
    b[80] = 0;
    CHECK(refused(Kind::kProposal, b).rfind("length 156 != 124", 0) == 0);
    b = both;
    b[87] = 9;
    CHECK(refused(Kind::kProposal, b) == "too many IPv6 prefixes (9)");
    b[87] = 3;  // a third prefix would be where the extension is
    CHECK(refused(Kind::kProposal, b) ==
          "version 2 extension offset 70, not 87 (right after the IP area)");
    b[51] = 87;  // where a third prefix would end: the UEID count is read from there
    CHECK(refused(Kind::kProposal, b).rfind("length 198 != 183", 0) == 0);
    b = clc::encode(with_smcd());
    b[81] = 9;
    CHECK(refused(Kind::kProposal, b) == "too many ISM devices (9)");
    b[81] = 1;
    CHECK(refused(Kind::kProposal, b).rfind("length 204 != 214", 0) == 0);
    // Without SMC-Dv2 offered the ISM count means nothing.
    b = kernel;
    b[81] = 200;
    clc::ProposalV2 m;
    std::string error;
    CHECK(clc::parse_any_proposal(b, &m, &error));
  }
  SECTION("SMC-D extension offset") {
    b = clc::encode(with_smcd());
    b[87] = 32;
    CHECK(refused(Kind::kProposal, b) ==
          "SMC-D extension offset 32, not 64 (right after the UEIDs)");
  }
  SECTION("prefix lengths") {
    b = both;
    b[84] = 33;
    CHECK(refused(Kind::kProposal, b) == "bad IPv4 prefix length 33");
    b = both;
    b[88 + 16] = 129;
    CHECK(refused(Kind::kProposal, b) == "bad IPv6 prefix length 129");
  }
  SECTION("EIDs") {
    const size_t at = both_ext + 40;
    const struct {
      size_t index;
      uint8_t byte;
      const char* reason;
    } bad[] = {
        {0, 's', "UEID 1: EID starts with byte 0x73, not a capital letter or digit"},
        {0, '-', "UEID 1: EID starts with byte 0x2d, not a capital letter or digit"},
        {0, ' ', "UEID 1: EID starts with byte 0x20, not a capital letter or digit"},
        {3, 'p', "UEID 1: EID has byte 0x70 at 3 (only A-Z, 0-9, '.', '-')"},
        {6, ' ', "UEID 1: EID has byte 0x20 at 6 (only A-Z, 0-9, '.', '-')"},
        // Zero is no padding: the spaces before it become part of the name.
        {31, 0x00, "UEID 1: EID has byte 0x20 at 11 (only A-Z, 0-9, '.', '-')"},
        {11, 0x80, "UEID 1: EID has byte 0x80 at 11 (only A-Z, 0-9, '.', '-')"},
    };
    for (const auto& x : bad) {
      b = both;
      b[at + x.index] = x.byte;
      CHECK(refused(Kind::kProposal, b) == x.reason);
    }
    b = both;
    std::fill(b.begin() + at, b.begin() + at + 32, ' ');
    CHECK(refused(Kind::kProposal, b) == "UEID 1: EID is empty");
  }
}

TEST_CASE("CLC v2 Accept/Confirm: type, first contact, GIDs and fields are checked") {
  Bytes b;
  SECTION("SMC-D and the reserved bit") {
    b = kernel_v2::kAccept;
    b[7] |= 0x01;
    CHECK(refused(Kind::kAccept, b) == "not SMC-R (SMC type 1)");
    b = kernel_v2::kAccept;
    b[7] |= 0x04;
    CHECK(refused(Kind::kAccept, b) == "reserved header bits set (0x04)");
  }
  SECTION("the first-contact extension comes with first contact, and only then") {
    b = kernel_v2::kAccept;
    b[7] = 0x20;
    CHECK(refused(Kind::kAccept, b) == "length 160 != 108 for a version 2 Accept");
    b = clc::encode_accept([] {
      clc::AcceptConfirmV2 m = kernel_v2::accept();
      m.smcr.first_contact = false;
      return m;
    }());
    b[7] = 0x28;
    CHECK(refused(Kind::kAccept, b) == "length 108 != 160 for a version 2 Accept on first contact");
    b.resize(100);
    set_length(b, 100);
    b.insert(b.end(), clc::kEyecatcher.begin(), clc::kEyecatcher.end());
    set_length(b, b.size());
    CHECK(refused(Kind::kAccept, b) == "length 104 < 108 for a version 2 Accept");
  }
  SECTION("no GID extension in an Accept") {
    b = kernel_v2::kConfirm;
    b[4] = 2;
    CHECK(refused(Kind::kAccept, b) == "length 180 != 160 for a version 2 Accept on first contact");
  }
  SECTION("GID counts") {
    b = kernel_v2::kConfirm;
    b[156] = 0;
    CHECK(refused(Kind::kConfirm, b) == "GID extension without GIDs");
    b[156] = 9;
    CHECK(refused(Kind::kConfirm, b) == "too many GIDs (9)");
    b[156] = 2;
    CHECK(refused(Kind::kConfirm, b) ==
          "length 180 != 196 for a version 2 Confirm on first contact");
    b = kernel_v2::kConfirm;
    b.erase(b.begin() + 162, b.begin() + 162 + 18);
    set_length(b, b.size());
    CHECK(refused(Kind::kConfirm, b) == "length 162 too short for a GID extension");
  }
  SECTION("the version 1 fields and the EID") {
    b = kernel_v2::kAccept;
    b[50] = 0x20;
    CHECK(refused(Kind::kAccept, b) == "bad QP MTU code 0");
    b = kernel_v2::kAccept;
    b[45] = 0;
    CHECK(refused(Kind::kAccept, b) == "bad RMBE index 0");
    b = kernel_v2::kAccept;
    b[64] = 'x';
    CHECK(refused(Kind::kAccept, b) == "EID starts with byte 0x78, not a capital letter or digit");
    std::fill(b.begin() + 64, b.begin() + 96, 0);
    CHECK(refused(Kind::kAccept, b) == "EID starts with byte 0x00, not a capital letter or digit");
  }
}

TEST_CASE("CLC v2 Decline: type and length are checked") {
  Bytes b = clc::encode(decline());
  b[7] |= 0x02;
  CHECK(refused(Kind::kDecline, b) == "bad SMC type 2 in Decline");
  b = kDeclineBytes;
  b[7] = 0x20;
  CHECK(refused(Kind::kDecline, b) == "length 28 != 44 for a version 2 Decline");
  b = clc::encode(decline());
  b[7] |= 0x01;  // SMC-D's Declines mean the same
  clc::DeclineV2 m;
  std::string error;
  CHECK(clc::parse_decline_v2(b, &m, &error));
}

TEST_CASE("random damage to v2 messages is refused or survives a round trip") {
  std::mt19937 rng(20261207);
  const std::vector<Sample> seeds = samples();
  int accepted = 0;
  int refused_count = 0;
  for (int i = 0; i < 60000; ++i) {
    const Sample& seed = seeds[rng() % seeds.size()];
    Bytes b = seed.bytes;
    for (int k = 1 + rng() % 3; k > 0; --k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    if (rng() % 8 == 0) b.resize(rng() % 300, static_cast<uint8_t>(rng()));
    std::string error;
    clc::Header h;
    const clc::HeaderResult hr = clc::parse_header(b, &h);
    bool ok = false;
    Bytes again;
    switch (seed.kind) {
      case Kind::kProposal: {
        clc::ProposalV2 m, m2;
        ok = clc::parse_any_proposal(b, &m, &error);
        if (ok) {
          again = clc::encode(m);
          REQUIRE(clc::parse_any_proposal(again, &m2, &error));
          REQUIRE(m2 == m);
        }
        break;
      }
      case Kind::kAccept:
      case Kind::kConfirm: {
        const bool accept = seed.kind == Kind::kAccept;
        clc::AcceptConfirmV2 m, m2;
        ok = accept ? clc::parse_accept_v2(b, &m, &error) : clc::parse_confirm_v2(b, &m, &error);
        if (ok) {
          again = accept ? clc::encode_accept(m) : clc::encode_confirm(m);
          REQUIRE((accept ? clc::parse_accept_v2(again, &m2, &error)
                          : clc::parse_confirm_v2(again, &m2, &error)));
          REQUIRE(m2 == m);
          REQUIRE(again.size() == b.size());
        }
        break;
      }
      case Kind::kDecline: {
        clc::DeclineV2 m, m2;
        ok = clc::parse_decline_v2(b, &m, &error);
        if (ok) {
          again = clc::encode(m);
          REQUIRE(clc::parse_decline_v2(again, &m2, &error));
          REQUIRE(m2 == m);
        }
        break;
      }
    }
    if (ok) {
      ++accepted;
      // Whatever parses whole is framed alike by the stream reader.
      REQUIRE(hr == clc::HeaderResult::kOk);
      REQUIRE(h.length == b.size());
    } else {
      ++refused_count;
      REQUIRE_FALSE(error.empty());
    }
  }
  CHECK(accepted > 1000);
  CHECK(refused_count > 1000);
}
