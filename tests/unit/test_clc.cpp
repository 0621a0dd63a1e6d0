// CLC messages byte for byte: each message's encoding and its round trip, the RMBE size
// and Decline codes, and the chosen port's GID, MAC and QP endpoint in Proposal and Accept.
// What the parsers refuse is tested in test_clc_parse.cpp.
#include <arpa/inet.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "core/handshake.h"
#include "core/wire/clc.h"
#include "core/wire/decline.h"
#include "rdma/port_select.h"
#include "tests/unit/clc_samples.h"

TEST_CASE("CLC Proposal encodes byte-exact") {
  REQUIRE(kProposalBytes.size() == 92);
  REQUIRE(kProposalBytes.size() == clc::kProposalSize);
  CHECK(clc::encode(sample_proposal()) == kProposalBytes);
  clc::Proposal back;
  std::string error;
  REQUIRE(clc::parse_proposal(kProposalBytes, &back, &error));
  CHECK(equal(back, sample_proposal()));

  const char* two_prefixes_hex =
      "20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 00 40"
      "20 01 0D B8 00 01 00 00 00 00 00 00 00 00 00 00 40";
  SECTION("with IPv6 prefixes") {
    const Bytes expected =
        cat({hex("E2 D4 C3 D9 01 00 7E 10"), hex(kLocalHex), hex("00 28"), hex(kZeroSmcdAreaHex),
             hex("C0 A8 01 00 18 00 00 02"), hex(two_prefixes_hex), hex("E2 D4 C3 D9")});
    REQUIRE(expected.size() == 126);
    CHECK(clc::encode(sample_proposal(2)) == expected);
    REQUIRE(clc::parse_proposal(expected, &back, &error));
    CHECK(equal(back, sample_proposal(2)));
  }
  SECTION("the largest version 1 Proposal is kMaxProposalV1Size") {
    const Bytes b = clc::encode(sample_proposal(clc::kMaxIpv6Prefixes));
    CHECK(b.size() == clc::kMaxProposalV1Size);
    CHECK(b.size() == 228);
    REQUIRE(clc::parse_proposal(b, &back, &error));
    CHECK(equal(back, sample_proposal(clc::kMaxIpv6Prefixes)));
  }
  SECTION("the RFC 7609 layout (IP area offset 0) is still accepted") {
    REQUIRE(kProposalOffset0Bytes.size() == clc::kProposalMinSize);
    REQUIRE(clc::parse_proposal(kProposalOffset0Bytes, &back, &error));
    CHECK(equal(back, sample_proposal()));
    const Bytes with_prefixes =
        cat({hex("E2 D4 C3 D9 01 00 56 10"), hex(kLocalHex), hex("00 00 C0 A8 01 00 18 00 00 02"),
             hex(two_prefixes_hex), hex("E2 D4 C3 D9")});
    REQUIRE(with_prefixes.size() == 86);
    REQUIRE(clc::parse_proposal(with_prefixes, &back, &error));
    CHECK(equal(back, sample_proposal(2)));
  }
  SECTION("any IP area offset up to the SMC-D area's size; the skipped bytes are ignored") {
    for (size_t offset = 0; offset <= clc::kSmcdAreaSize; ++offset) {
      INFO("offset " << offset);
      Bytes b = kProposalOffset0Bytes;
      b.insert(b.begin() + clc::kProposalBaseSize, offset, 0xA5);
      set_length(b, b.size());
      b[39] = static_cast<uint8_t>(offset);
      REQUIRE(clc::parse_proposal(b, &back, &error));
      CHECK(equal(back, sample_proposal()));
    }
  }
}

TEST_CASE("CLC Accept and Confirm encode byte-exact") {
  REQUIRE(kAcceptBytes.size() == 68);
  CHECK(clc::encode_accept(sample_accept()) == kAcceptBytes);
  clc::AcceptConfirm back;
  std::string error;
  REQUIRE(clc::parse_accept(kAcceptBytes, &back, &error));
  CHECK(equal(back, sample_accept()));

  clc::AcceptConfirm confirm = sample_accept();
  confirm.first_contact = false;
  Bytes confirm_bytes = kAcceptBytes;
  confirm_bytes[4] = 0x03;
  confirm_bytes[7] = 0x10;
  CHECK(clc::encode_confirm(confirm) == confirm_bytes);
  REQUIRE(clc::parse_confirm(confirm_bytes, &back, &error));
  CHECK(equal(back, confirm));

  SECTION("Accept and Confirm are not interchangeable") {
    CHECK(rejection(clc::Type::kConfirm, kAcceptBytes) == "expected Confirm, got Accept");
    CHECK(rejection(clc::Type::kAccept, confirm_bytes) == "expected Accept, got Confirm");
  }
  SECTION("every RMBE size code and MTU code round trips") {
    for (uint8_t size = 0; size <= 15; ++size) {
      for (uint8_t mtu = 1; mtu <= 5; ++mtu) {
        clc::AcceptConfirm m = sample_accept();
        m.rmbe_size_code = size;
        m.qp_mtu = mtu;
        const Bytes b = clc::encode_accept(m);
        CHECK(b[50] == (size << 4 | mtu));
        REQUIRE(clc::parse_accept(b, &back, &error));
        CHECK(equal(back, m));
      }
    }
  }
}

TEST_CASE("CLC Decline encodes byte-exact") {
  REQUIRE(kDeclineBytes.size() == 28);
  CHECK(clc::encode(sample_decline()) == kDeclineBytes);
  clc::Decline back;
  std::string error;
  REQUIRE(clc::parse_decline(kDeclineBytes, &back, &error));
  CHECK(back.peer_id == sample_decline().peer_id);
  CHECK(back.diagnosis == 0x03030002);
  CHECK_FALSE(back.out_of_sync);

  SECTION("out of sync sets the flag bit") {
    clc::Decline m = sample_decline();
    m.out_of_sync = true;
    const Bytes b = clc::encode(m);
    CHECK(b[7] == 0x18);
    REQUIRE(clc::parse_decline(b, &back, &error));
    CHECK(back.out_of_sync);
  }
  SECTION("a version 2 Decline from Linux is understood") {
    REQUIRE(clc::parse_decline(kDeclineV2Bytes, &back, &error));
    CHECK(back.diagnosis == 0x03030002);
    CHECK(back.peer_id == sample_decline().peer_id);
    Bytes short_v2 = kDeclineV2Bytes;
    short_v2.resize(28);
    set_length(short_v2, 28);
    std::copy(clc::kEyecatcher.begin(), clc::kEyecatcher.end(), short_v2.end() - 4);
    CHECK(rejection(clc::Type::kDecline, short_v2) == "length 28 != 44 for version 2 Decline");
  }
  SECTION("SMC-D Declines are understood, other SMC types are not") {
    Bytes b = kDeclineBytes;
    b[7] = 0x11;
    CHECK(clc::parse_decline(b, &back, &error));
    b[7] = 0x12;
    CHECK(rejection(clc::Type::kDecline, b) == "bad SMC type 2 in Decline");
    b[7] = 0x00;
    CHECK(rejection(clc::Type::kDecline, b) == "unsupported version 0");
  }
  SECTION("a version 1 Decline has 28 bytes") {
    Bytes b = kDeclineV2Bytes;
    b[7] = 0x10;
    CHECK(rejection(clc::Type::kDecline, b) == "length 44 != 28 for version 1 Decline");
  }
}

TEST_CASE("RMBE size codes") {
  CHECK(clc::rmbe_size_code(16 * 1024) == 0);
  CHECK(clc::rmbe_size_code(256 * 1024) == 4);
  CHECK(clc::rmbe_size_code(512u * 1024 * 1024) == 15);
  for (uint32_t bad : {0u, 1u, 8192u, 16385u, 3u * 16384, 1u << 30, 0xFFFFFFFFu}) {
    CHECK(clc::rmbe_size_code(bad) == 0xFF);
  }
  CHECK(clc::rmbe_size_bytes(0) == 16384);
  CHECK(clc::rmbe_size_bytes(9) == 8u * 1024 * 1024);
  CHECK(clc::rmbe_size_bytes(15) == 512u * 1024 * 1024);
  CHECK(clc::rmbe_size_bytes(16) == 0);
  CHECK(clc::rmbe_size_bytes(0xFF) == 0);
  for (uint8_t code = 0; code <= 15; ++code) {
    CHECK(clc::rmbe_size_code(clc::rmbe_size_bytes(code)) == code);
  }
}

TEST_CASE("Decline codes have names and explanations") {
  using smcpre::core::all_decline_codes;
  using smcpre::core::decline_explanation;
  using smcpre::core::decline_name;
  CHECK(std::string(decline_name(0x01010000)) == "MEM");
  CHECK(std::string(decline_name(DeclineCode::kTimeoutCl)) == "TIMEOUT_CL");
  CHECK(std::string(decline_name(0x03030002)) == "NOSMCRDEV");
  CHECK(std::string(decline_name(0x09990003)) == "ERR_REGRMB");
  CHECK(std::string(decline_name(DeclineCode::kPeerCred)) == "PEER_CRED");
  CHECK(std::string(decline_name(DeclineCode::kLateProposal)) == "LATE_PROPOSAL");
  CHECK(std::string(decline_name(0x12345678)) == "UNKNOWN");
  CHECK(std::string(decline_explanation(0x01010000)) == "insufficient memory");
  CHECK(std::string(decline_explanation(0x12345678)) == "unknown reason code");
  const auto& codes = all_decline_codes();
  CHECK(codes.size() == 38);
  CHECK(std::string(decline_name(DeclineCode::kPolicy)) == "POLICY");
  CHECK(std::string(decline_name(DeclineCode::kPeerUnknown)) == "PEER_UNKNOWN");
  CHECK(std::string(decline_name(DeclineCode::kExcluded)) == "EXCLUDED");
  CHECK(std::string(decline_name(DeclineCode::kNoFds)) == "NO_FDS");
  CHECK(std::string(decline_name(DeclineCode::kRendezvousFull)) == "RENDEZVOUS_FULL");
  CHECK(std::string(decline_name(DeclineCode::kPendingFull)) == "PENDING_FULL");
  CHECK(std::is_sorted(codes.begin(), codes.end()));
  CHECK(std::adjacent_find(codes.begin(), codes.end()) == codes.end());
  for (uint32_t code : codes) {
    CHECK(std::string(decline_name(code)) != "UNKNOWN");
    CHECK(std::string(decline_explanation(code)) != "unknown reason code");
    // smcpre's own codes stay out of the ranges Linux uses.
    if (code >= 0x0e000000) CHECK(code < 0x0f000000);
  }
}

TEST_CASE("CLC carries the chosen RoCE port's GID and MAC and the QP endpoint byte-exactly") {
  using namespace smcpre::rdma;
  // rxe0 on veth0 (ifindex 4) as in scripts/rxe-vm; the connection leaves from 10.77.0.1.
  const Gid link_local = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x0a, 0xff, 0xfe, 0x4d, 0, 1};
  const Gid v4 = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 1};
  const Mac mac = {0x02, 0x00, 0x0a, 0x4d, 0x00, 0x01};
  PortInfo port;
  port.device = "rxe0";
  port.port = 1;
  port.active = true;
  port.ethernet = true;
  port.active_mtu = PathMtu::k1024;
  port.mac = mac;
  port.gids = {{0, link_local, GidType::kRoceV2, 4}, {1, v4, GidType::kRoceV2, 4}};
  SocketRoute route;
  auto& local = reinterpret_cast<sockaddr_in&>(route.local);
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(0x0a4d0001);
  auto& peer = reinterpret_cast<sockaddr_in&>(route.peer);
  peer.sin_family = AF_INET;
  peer.sin_addr.s_addr = htonl(0x0a4d0002);
  route.ifindex = 4;
  route.ifname = "veth0";
  std::string why;
  const auto choice = choose_port(std::span<const PortInfo>(&port, 1), route, "", 0, &why);
  REQUIRE(choice);

  clc::Proposal proposal;
  proposal.local.gid = choice->gid;
  proposal.local.mac = choice->mac;
  proposal.ipv4_subnet_be = htonl(0x0a4d0000);
  proposal.ipv4_prefix_len = 24;
  const Bytes p = clc::encode(proposal);
  CHECK(Bytes(p.begin() + 16, p.begin() + 32) == Bytes(v4.begin(), v4.end()));
  CHECK(Bytes(p.begin() + 32, p.begin() + 38) == Bytes(mac.begin(), mac.end()));

  QpEndpoint ep;
  ep.gid = choice->gid;
  ep.mac = choice->mac;
  ep.qp_num = 0xabcdef;
  ep.psn = 0x123456;
  ep.mtu = choice->mtu;
  clc::AcceptConfirm accept = sample_accept();
  smcpre::core::set_endpoint(ep, &accept);
  const Bytes a = clc::encode_accept(accept);
  CHECK(Bytes(a.begin() + 16, a.begin() + 32) == Bytes(v4.begin(), v4.end()));
  CHECK(Bytes(a.begin() + 32, a.begin() + 38) == Bytes(mac.begin(), mac.end()));
  CHECK(Bytes(a.begin() + 38, a.begin() + 41) == Bytes{0xab, 0xcd, 0xef});
  CHECK((a[50] & 0x0f) == 3);  // IB MTU enum: 1024
  CHECK(Bytes(a.begin() + 61, a.begin() + 64) == Bytes{0x12, 0x34, 0x56});
  clc::AcceptConfirm back;
  std::string error;
  REQUIRE(clc::parse_accept(a, &back, &error));
  const QpEndpoint round = smcpre::core::endpoint_of(back);
  CHECK(round.gid == ep.gid);
  CHECK(round.mac == ep.mac);
  CHECK(round.qp_num == ep.qp_num);
  CHECK(round.psn == ep.psn);
  CHECK(round.mtu == ep.mtu);
}
