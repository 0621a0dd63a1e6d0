// CLC version 2: the encoders reproduce the kernel's captured bytes from their field
// values and the parsers those values from the bytes; the other forms a kernel may send
// (version 1 and 2 offered together, version 1 only under a version 2 header, SMC-D
// offered too, no first contact) round trip.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "core/wire/clc_v2.h"
#include "tests/unit/kernel_clc_v2_samples.h"

namespace {

// Version 1 and 2 offered together, as Linux does when it has a RoCE v1 and a RoCE v2
// GID: the IP area between the SMC-D area and the version 2 extension.
clc::ProposalV2 both_versions(size_t ipv6_count, size_t eid_count) {
  const clc::Proposal v1 = sample_proposal(ipv6_count);
  clc::ProposalV2 m = kernel_v2::proposal();
  m.v1_type = clc::SmcType::kR;
  m.local = v1.local;
  m.ipv4_subnet_be = v1.ipv4_subnet_be;
  m.ipv4_prefix_len = v1.ipv4_prefix_len;
  m.ipv6_prefixes = v1.ipv6_prefixes;
  m.v2.ueids.clear();
  for (size_t i = 0; i < eid_count; ++i) {
    m.v2.ueids.push_back(clc::Eid::from_text("EID-" + std::to_string(i), nullptr).value());
  }
  return m;
}

}  // namespace

TEST_CASE("the kernel's v2 Proposal, byte for byte") {
  const clc::ProposalV2 expected = kernel_v2::proposal();
  REQUIRE(kernel_v2::kProposal.size() == 156);
  CHECK(clc::encode(expected) == kernel_v2::kProposal);
  clc::ProposalV2 back;
  std::string error;
  REQUIRE(clc::parse_any_proposal(kernel_v2::kProposal, &back, &error));
  CHECK(back == expected);
  CHECK(back.v2.ueids[0].text() == "SMCPRE-TEST");

  clc::Header h;
  REQUIRE(clc::parse_header(kernel_v2::kProposal, &h) == clc::HeaderResult::kOk);
  CHECK(h.type == clc::Type::kProposal);
  CHECK(h.length == 156);
  CHECK(h.version == 2);
  CHECK(h.typev1 == 2);  // none
  CHECK(h.typev2 == 0);  // SMC-R
  // The version 1 parser still refuses it, as before.
  clc::Proposal v1;
  CHECK_FALSE(clc::parse_proposal(kernel_v2::kProposal, &v1, &error));
}

TEST_CASE("the kernel's v2 Accept and Confirm, byte for byte") {
  std::string error;
  clc::AcceptConfirmV2 back;
  SECTION("Accept, first contact: 160 bytes") {
    REQUIRE(kernel_v2::kAccept.size() == 160);
    CHECK(clc::encode_accept(kernel_v2::accept()) == kernel_v2::kAccept);
    REQUIRE(clc::parse_accept_v2(kernel_v2::kAccept, &back, &error));
    CHECK(back == kernel_v2::accept());
    CHECK(std::string(back.fce.hostname.begin(), back.fce.hostname.begin() + 6) == "(none)");
  }
  SECTION("Confirm, first contact, with the client's GID: 180 bytes") {
    REQUIRE(kernel_v2::kConfirm.size() == 180);
    CHECK(clc::encode_confirm(kernel_v2::confirm()) == kernel_v2::kConfirm);
    REQUIRE(clc::parse_confirm_v2(kernel_v2::kConfirm, &back, &error));
    CHECK(back == kernel_v2::confirm());
  }
  SECTION("both are framed by parse_header, and not taken for each other") {
    clc::Header h;
    REQUIRE(clc::parse_header(kernel_v2::kConfirm, &h) == clc::HeaderResult::kOk);
    CHECK(h.flag);
    CHECK(h.length == 180);
    CHECK_FALSE(clc::parse_confirm_v2(kernel_v2::kAccept, &back, &error));
    CHECK(error == "expected Confirm, got Accept");
    // Nor does the version 1 parser take them.
    clc::AcceptConfirm v1;
    CHECK_FALSE(clc::parse_accept(kernel_v2::kAccept, &v1, &error));
  }
}

TEST_CASE("v2 Proposals of the other forms round trip") {
  std::string error;
  clc::ProposalV2 back;
  SECTION("versions 1 and 2 together: IP area, then the extension") {
    const clc::ProposalV2 m = both_versions(2, 3);
    const Bytes b = clc::encode(m);
    REQUIRE(b.size() == 40 + 40 + 8 + 2 * 17 + 40 + 3 * 32 + 4);
    CHECK(b[7] == 0x20);  // version 2, v2 type R, v1 type R
    CHECK(b[38] == 0x00);
    CHECK(b[39] == 40);  // IP area after the SMC-D area
    CHECK(b[50] == 0x00);
    CHECK(b[51] == 28 + 8 + 2 * 17);  // the extension right after the IP area
    CHECK(b[80 + 4] == 24);           // IPv4 prefix length
    CHECK(b[80 + 7] == 2);            // IPv6 prefixes
    CHECK(b[80 + 8 + 34] == 3);       // UEIDs
    REQUIRE(clc::parse_any_proposal(b, &back, &error));
    CHECK(back == m);
  }
  SECTION("version 1 only under a version 2 header, as Linux 5.10 and later send it") {
    clc::ProposalV2 m = both_versions(0, 0);
    m.v2_type = clc::SmcType::kNone;
    m.v2 = {};
    const Bytes expected = cat({hex("E2 D4 C3 D9 01 00 5C 28"), hex(kLocalHex), hex("00 28"),
                                hex(kZeroSmcdAreaHex), hex("C0 A8 01 00 18 00 00 00 E2 D4 C3 D9")});
    REQUIRE(expected.size() == clc::kProposalV2MinSize);
    CHECK(clc::encode(m) == expected);
    REQUIRE(clc::parse_any_proposal(expected, &back, &error));
    CHECK(back == m);
  }
  SECTION("a version 1 Proposal") {
    REQUIRE(clc::parse_any_proposal(kProposalBytes, &back, &error));
    CHECK(back.version == 1);
    CHECK(back.v1_type == clc::SmcType::kR);
    CHECK(back.v2_type == clc::SmcType::kNone);
    CHECK(back.local == sample_local());
    CHECK(back.ipv4_prefix_len == 24);
    CHECK(clc::encode(back) == kProposalBytes);
    REQUIRE(clc::parse_any_proposal(kProposalOffset0Bytes, &back, &error));
    CHECK(clc::encode(back) == kProposalBytes);
  }
  SECTION("SMC-D offered too: the SMC-D extension is bounds-checked and ignored") {
    clc::ProposalV2 m = kernel_v2::proposal();
    m.v2_type = clc::SmcType::kBoth;
    const Bytes written = clc::encode(m);
    REQUIRE(written.size() == 156 + 48);
    CHECK(written[80 + 6] == 0);
    CHECK(written[80 + 7] == 32 + 32);  // the SMC-D extension after the one UEID
    REQUIRE(clc::parse_any_proposal(written, &back, &error));
    CHECK(back == m);
    // Two ISM devices, a system EID and vendor bytes in the SMC-D area: all ignored.
    Bytes b = written;
    b[80 + 1] = 2;
    b.insert(b.end() - 4, 20, 0x5A);
    std::fill(b.begin() + 152, b.begin() + 152 + 32, 'S');
    std::fill(b.begin() + 40, b.begin() + 50, 0x77);
    set_length(b, b.size());
    REQUIRE(clc::parse_any_proposal(b, &back, &error));
    CHECK(back == m);
  }
  SECTION("the largest: 8 IPv6 prefixes, 8 UEIDs, 8 ISM devices") {
    clc::ProposalV2 m = both_versions(8, 8);
    m.v2_type = clc::SmcType::kBoth;
    Bytes b = clc::encode(m);
    b[40 + 40 + 8 + 8 * 17 + 1] = 8;
    b.insert(b.end() - 4, 8 * 10, 0x01);
    set_length(b, b.size());
    REQUIRE(b.size() == clc::kMaxMessageSize);
    REQUIRE(clc::parse_any_proposal(b, &back, &error));
    CHECK(back == m);
    clc::Header h;
    CHECK(clc::parse_header(b, &h) == clc::HeaderResult::kOk);
  }
  SECTION("a later version is taken as 2, and its number kept") {
    clc::ProposalV2 m = kernel_v2::proposal();
    m.version = 3;
    const Bytes b = clc::encode(m);
    CHECK(b[7] == 0x32);
    REQUIRE(clc::parse_any_proposal(b, &back, &error));
    CHECK(back == m);
  }
}

TEST_CASE("v2 Accept and Confirm of the other forms round trip") {
  std::string error;
  clc::AcceptConfirmV2 back;
  SECTION("no first contact: 108 bytes, no extension") {
    clc::AcceptConfirmV2 m = kernel_v2::accept();
    m.smcr.first_contact = false;
    m.fce = {};
    const Bytes b = clc::encode_accept(m);
    REQUIRE(b.size() == clc::kAcceptConfirmV2Size);
    CHECK(b[7] == 0x20);
    Bytes kernel_head(kernel_v2::kAccept.begin(), kernel_v2::kAccept.begin() + 104);
    kernel_head[6] = 108;
    kernel_head[7] = 0x20;
    CHECK(Bytes(b.begin(), b.begin() + 104) == kernel_head);
    REQUIRE(clc::parse_accept_v2(b, &back, &error));
    CHECK(back == m);
    REQUIRE(clc::parse_confirm_v2(clc::encode_confirm(m), &back, &error));
    CHECK(back == m);
  }
  SECTION("a first-contact Confirm without the GID extension, and one with 8 GIDs") {
    clc::AcceptConfirmV2 m = kernel_v2::confirm();
    m.gids.clear();
    Bytes b = clc::encode_confirm(m);
    REQUIRE(b.size() == clc::kAcceptV2FirstContactSize);
    REQUIRE(clc::parse_confirm_v2(b, &back, &error));
    CHECK(back == m);
    m.gids.assign(clc::kMaxConfirmGids, m.smcr.local.gid);
    m.gids[7][15] = 0x99;
    b = clc::encode_confirm(m);
    REQUIRE(b.size() == clc::kMaxAcceptConfirmV2Size);
    REQUIRE(clc::parse_confirm_v2(b, &back, &error));
    CHECK(back == m);
    clc::Header h;
    CHECK(clc::parse_header(b, &h) == clc::HeaderResult::kOk);
  }
  SECTION("release 0 and another OS") {
    clc::AcceptConfirmV2 m = kernel_v2::accept();
    m.fce.release = clc::kRelease0;
    m.fce.os_type = clc::kOsZos;
    m.fce.v2_direct = false;
    m.fce.max_conns = 0;
    m.fce.max_links = 0;
    m.fce.vendor_options = 0x01020304;
    const Bytes b = clc::encode_accept(m);
    CHECK(b[104] == 0x00);
    CHECK(b[105] == 0x10);
    REQUIRE(clc::parse_accept_v2(b, &back, &error));
    CHECK(back == m);
  }
}

TEST_CASE("v2 Decline") {
  clc::DeclineV2 m;
  m.peer_id = sample_decline().peer_id;
  m.diagnosis = sample_decline().diagnosis;
  CHECK(clc::encode(m) == kDeclineV2Bytes);
  clc::DeclineV2 back;
  std::string error;
  REQUIRE(clc::parse_decline_v2(kDeclineV2Bytes, &back, &error));
  CHECK(back == m);
  m.out_of_sync = true;
  m.os_type = clc::kOsAix;
  m.more_diagnosis = {1, 2, 0xFFFFFFFF, 0x03030002};
  const Bytes b = clc::encode(m);
  CHECK(b[7] == 0x28);
  CHECK(b[20] == 0x30);
  CHECK(b[39] == 0x02);
  REQUIRE(clc::parse_decline_v2(b, &back, &error));
  CHECK(back == m);
  // The version 1 parser reads its common fields, as before.
  clc::Decline v1;
  REQUIRE(clc::parse_decline(b, &v1, &error));
  CHECK(v1.out_of_sync);
  CHECK(v1.diagnosis == m.diagnosis);
  CHECK_FALSE(clc::parse_decline_v2(kDeclineBytes, &back, &error));
  CHECK(error == "version 1, not a version 2 Decline");
}
