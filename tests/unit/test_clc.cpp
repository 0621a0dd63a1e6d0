#include <arpa/inet.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/handshake.h"
#include "core/wire/clc.h"
#include "core/wire/decline.h"
#include "rdma/port_select.h"
#include "tests/unit/hex.h"

namespace clc = smcpre::core::clc;
using smcpre::core::DeclineCode;

namespace {

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

const char* kLocalHex =
    "01 02 A0 B1 C2 D3 E4 F5"                          // peer id
    "FE 80 00 00 00 00 00 00 02 11 22 FF FE 33 44 55"  // GID
    "02 11 22 33 44 55";                               // MAC

clc::LocalInfo sample_local() {
  clc::LocalInfo l;
  l.peer_id = {0x01, 0x02, 0xA0, 0xB1, 0xC2, 0xD3, 0xE4, 0xF5};
  l.gid = {0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x11, 0x22, 0xFF, 0xFE, 0x33, 0x44, 0x55};
  l.mac = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
  return l;
}

bool equal(const clc::LocalInfo& a, const clc::LocalInfo& b) {
  return a.peer_id == b.peer_id && a.gid == b.gid && a.mac == b.mac;
}

clc::Proposal sample_proposal(size_t ipv6_count = 0) {
  clc::Proposal m;
  m.local = sample_local();
  m.ipv4_subnet_be = htonl(0xC0A80100);  // 192.168.1.0
  m.ipv4_prefix_len = 24;
  for (size_t i = 0; i < ipv6_count; ++i) {
    clc::Ipv6Prefix p;
    p.prefix = {0x20, 0x01, 0x0D, 0xB8, 0, static_cast<uint8_t>(i)};
    p.prefix_len = 64;
    m.ipv6_prefixes.push_back(p);
  }
  return m;
}

bool equal(const clc::Proposal& a, const clc::Proposal& b) {
  if (!equal(a.local, b.local) || a.ipv4_subnet_be != b.ipv4_subnet_be ||
      a.ipv4_prefix_len != b.ipv4_prefix_len || a.ipv6_prefixes.size() != b.ipv6_prefixes.size()) {
    return false;
  }
  for (size_t i = 0; i < a.ipv6_prefixes.size(); ++i) {
    if (a.ipv6_prefixes[i].prefix != b.ipv6_prefixes[i].prefix ||
        a.ipv6_prefixes[i].prefix_len != b.ipv6_prefixes[i].prefix_len) {
      return false;
    }
  }
  return true;
}

clc::AcceptConfirm sample_accept() {
  clc::AcceptConfirm m;
  m.first_contact = true;
  m.local = sample_local();
  m.qp_num = 0x123456;
  m.rmb_rkey = 0xDEADBEEF;
  m.conn_idx = 1;
  m.rmbe_alert_token = 0x00001001;
  m.rmbe_size_code = 4;  // 256 KiB
  m.qp_mtu = 3;          // 1024
  m.rmb_vaddr = 0x00007F1234567800;
  m.psn = 0xABCDEF;
  return m;
}

bool equal(const clc::AcceptConfirm& a, const clc::AcceptConfirm& b) {
  return a.first_contact == b.first_contact && equal(a.local, b.local) && a.qp_num == b.qp_num &&
         a.rmb_rkey == b.rmb_rkey && a.conn_idx == b.conn_idx &&
         a.rmbe_alert_token == b.rmbe_alert_token && a.rmbe_size_code == b.rmbe_size_code &&
         a.qp_mtu == b.qp_mtu && a.rmb_vaddr == b.rmb_vaddr && a.psn == b.psn;
}

clc::Decline sample_decline() {
  clc::Decline m;
  m.peer_id = {0x01, 0x02, 0xA0, 0xB1, 0xC2, 0xD3, 0xE4, 0xF5};
  m.diagnosis = static_cast<uint32_t>(DeclineCode::kNoSmcRDev);
  return m;
}

// The SMC-D information area of an SMC-R-only Proposal as Linux sends it: ISM GID and
// CHID, version 2 extension offset, vendor OUI and options, reserved -- all zero.
const char* kZeroSmcdAreaHex =
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";

// IP area offset 40, then the SMC-D area, the IP area (192.168.1.0/24, no IPv6
// prefixes) and the trailer.
const Bytes kProposalBytes =
    cat({hex("E2 D4 C3 D9 01 00 5C 10"), hex(kLocalHex), hex("00 28"), hex(kZeroSmcdAreaHex),
         hex("C0 A8 01 00 18 00 00 00 E2 D4 C3 D9")});

// The same Proposal in the RFC 7609 layout (IP area offset 0) that Linux before 5.10 sent
// for SMC-R only, and smcpre before it: still accepted.
const Bytes kProposalOffset0Bytes = cat({hex("E2 D4 C3 D9 01 00 34 10"), hex(kLocalHex),
                                         hex("00 00 C0 A8 01 00 18 00 00 00 E2 D4 C3 D9")});

const Bytes kAcceptBytes = cat({hex("E2 D4 C3 D9 02 00 44 18"), hex(kLocalHex),
                                hex("12 34 56 DE AD BE EF 01 00 00 10 01 43 00"
                                    "00 00 7F 12 34 56 78 00 00 AB CD EF E2 D4 C3 D9")});

const Bytes kDeclineBytes =
    hex("E2 D4 C3 D9 04 00 1C 10 01 02 A0 B1 C2 D3 E4 F5 03 03 00 02 00 00 00 00 E2 D4 C3 D9");

// What Linux sends as a version 2 Decline: os_type Linux in the reserved nibble and four
// more diagnosis words.
const Bytes kDeclineV2Bytes =
    hex("E2 D4 C3 D9 04 00 2C 20 01 02 A0 B1 C2 D3 E4 F5 03 03 00 02 20 00 00 00"
        "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 E2 D4 C3 D9");

// Parses msg as `type` with the matching parser; returns whether it was accepted.
bool parse_as(clc::Type type, const Bytes& msg, std::string* error) {
  switch (type) {
    case clc::Type::kProposal: {
      clc::Proposal p;
      return clc::parse_proposal(msg, &p, error);
    }
    case clc::Type::kAccept: {
      clc::AcceptConfirm a;
      return clc::parse_accept(msg, &a, error);
    }
    case clc::Type::kConfirm: {
      clc::AcceptConfirm a;
      return clc::parse_confirm(msg, &a, error);
    }
    case clc::Type::kDecline: {
      clc::Decline d;
      return clc::parse_decline(msg, &d, error);
    }
  }
  return false;
}

std::string rejection(clc::Type type, const Bytes& msg) {
  std::string error;
  REQUIRE_FALSE(parse_as(type, msg, &error));
  REQUIRE_FALSE(error.empty());
  return error;
}

void set_length(Bytes& b, size_t length) {
  b[5] = static_cast<uint8_t>(length >> 8);
  b[6] = static_cast<uint8_t>(length);
}

}  // namespace

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
  SECTION("the largest Proposal is kMaxMessageSize") {
    const Bytes b = clc::encode(sample_proposal(clc::kMaxIpv6Prefixes));
    CHECK(b.size() == clc::kMaxMessageSize);
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
    b[5] = 0x01;  // >= 256: longer than the largest Proposal
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
  CHECK(codes.size() == 33);
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
