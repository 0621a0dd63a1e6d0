// Sample CLC messages (a Proposal, an Accept/Confirm, Declines of both versions) as
// structs and as their exact bytes, and the helpers that parse or refuse them, shared by
// test_clc.cpp and test_clc_parse.cpp.
#pragma once

#include <arpa/inet.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "core/wire/clc.h"
#include "core/wire/decline.h"
#include "tests/unit/hex.h"

namespace clc = smcpre::core::clc;
using smcpre::core::DeclineCode;

inline const char* kLocalHex =
    "01 02 A0 B1 C2 D3 E4 F5"                          // peer id
    "FE 80 00 00 00 00 00 00 02 11 22 FF FE 33 44 55"  // GID
    "02 11 22 33 44 55";                               // MAC

inline clc::LocalInfo sample_local() {
  clc::LocalInfo l;
  l.peer_id = {0x01, 0x02, 0xA0, 0xB1, 0xC2, 0xD3, 0xE4, 0xF5};
  l.gid = {0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x11, 0x22, 0xFF, 0xFE, 0x33, 0x44, 0x55};
  l.mac = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
  return l;
}

inline bool equal(const clc::LocalInfo& a, const clc::LocalInfo& b) {
  return a.peer_id == b.peer_id && a.gid == b.gid && a.mac == b.mac;
}

inline clc::Proposal sample_proposal(size_t ipv6_count = 0) {
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

inline bool equal(const clc::Proposal& a, const clc::Proposal& b) {
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

inline clc::AcceptConfirm sample_accept() {
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

inline bool equal(const clc::AcceptConfirm& a, const clc::AcceptConfirm& b) {
  return a.first_contact == b.first_contact && equal(a.local, b.local) && a.qp_num == b.qp_num &&
         a.rmb_rkey == b.rmb_rkey && a.conn_idx == b.conn_idx &&
         a.rmbe_alert_token == b.rmbe_alert_token && a.rmbe_size_code == b.rmbe_size_code &&
         a.qp_mtu == b.qp_mtu && a.rmb_vaddr == b.rmb_vaddr && a.psn == b.psn;
}

inline clc::Decline sample_decline() {
  clc::Decline m;
  m.peer_id = {0x01, 0x02, 0xA0, 0xB1, 0xC2, 0xD3, 0xE4, 0xF5};
  m.diagnosis = static_cast<uint32_t>(DeclineCode::kNoSmcRDev);
  return m;
}

// The SMC-D information area of an SMC-R-only Proposal as Linux sends it: ISM GID and
// CHID, version 2 extension offset, vendor OUI and options, reserved -- all zero.
inline const char* kZeroSmcdAreaHex =
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";

// IP area offset 40, then the SMC-D area, the IP area (192.168.1.0/24, no IPv6
// prefixes) and the trailer.
inline const Bytes kProposalBytes =
    cat({hex("E2 D4 C3 D9 01 00 5C 10"), hex(kLocalHex), hex("00 28"), hex(kZeroSmcdAreaHex),
         hex("C0 A8 01 00 18 00 00 00 E2 D4 C3 D9")});

// The same Proposal in the RFC 7609 layout (IP area offset 0) that Linux before 5.10 sent
// for SMC-R only, and smcpre before it: still accepted.
inline const Bytes kProposalOffset0Bytes = cat({hex("E2 D4 C3 D9 01 00 34 10"), hex(kLocalHex),
                                                hex("00 00 C0 A8 01 00 18 00 00 00 E2 D4 C3 D9")});

inline const Bytes kAcceptBytes = cat({hex("E2 D4 C3 D9 02 00 44 18"), hex(kLocalHex),
                                       hex("12 34 56 DE AD BE EF 01 00 00 10 01 43 00"
                                           "00 00 7F 12 34 56 78 00 00 AB CD EF E2 D4 C3 D9")});

inline const Bytes kDeclineBytes =
    hex("E2 D4 C3 D9 04 00 1C 10 01 02 A0 B1 C2 D3 E4 F5 03 03 00 02 00 00 00 00 E2 D4 C3 D9");

// What Linux sends as a version 2 Decline: os_type Linux in the reserved nibble and four
// more diagnosis words.
inline const Bytes kDeclineV2Bytes =
    hex("E2 D4 C3 D9 04 00 2C 20 01 02 A0 B1 C2 D3 E4 F5 03 03 00 02 20 00 00 00"
        "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 E2 D4 C3 D9");

// Parses msg as `type` with the matching parser; returns whether it was accepted.
inline bool parse_as(clc::Type type, const Bytes& msg, std::string* error) {
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

inline std::string rejection(clc::Type type, const Bytes& msg) {
  std::string error;
  REQUIRE_FALSE(parse_as(type, msg, &error));
  REQUIRE_FALSE(error.empty());
  return error;
}

inline void set_length(Bytes& b, size_t length) {
  b[5] = static_cast<uint8_t>(length >> 8);
  b[6] = static_cast<uint8_t>(length);
}
