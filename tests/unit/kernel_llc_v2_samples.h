// The LLC messages of two Linux 6.12 kernels on the first link of an SMC-Rv2 link group
// over Soft-RoCE, byte for byte as captured in scripts/rxe-vm's guest on 2026-12-06 (the capture's
// frames 9-12: the RoCE payload after the 12-byte BTH, without the ICRC), and the field
// values they decode to (test_llc_v2.cpp). Server 10.77.0.1, client 10.77.0.2, both on
// x86: every 16-bit length is little-endian.
#pragma once

#include "core/wire/llc_v2.h"
#include "tests/unit/hex.h"

namespace kernel_v2 {

namespace llc = smcpre::core::llc;

inline const char* kServerGidHex = "00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 01";
inline const char* kClientGidHex = "00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 02";

// Frame 9, server -> client: CONFIRM LINK v2 request. Length 44 written 2C 00; flags 0x03
// (no RMBE eyecatchers); max links 2, max conns 255 after the link user id.
inline const Bytes kConfirmLink =
    hex("21 2C 00 03"
        "02 00 0A 4D 00 01"                                // MAC
        "00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 01"  // GID
        "00 00 11"                                         // QP
        "01"                                               // link number
        "00 00 01 01"                                      // link user id
        "02 FF"                                            // max links, max conns
        "00 00 00 00 00 00 00 00");

inline llc::ConfirmLink confirm_link() {
  llc::ConfirmLink m;
  m.mac = hex_array<6>("02 00 0A 4D 00 01");
  m.gid = hex_array<16>(kServerGidHex);
  m.qp_num = 0x11;
  m.link_num = 1;
  m.link_uid = 0x101;
  m.max_links = 2;
  m.max_conns = 255;
  return m;
}

// Frame 10, client -> server: the CONFIRM LINK v2 response (flags 0x83).
inline const Bytes kConfirmLinkResponse =
    hex("21 2C 00 83"
        "02 00 0A 4D 00 02"
        "00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 02"
        "00 00 11 01 00 00 02 01 02 FF"
        "00 00 00 00 00 00 00 00");

inline llc::ConfirmLink confirm_link_response() {
  llc::ConfirmLink m = confirm_link();
  m.response = true;
  m.mac = hex_array<6>("02 00 0A 4D 00 02");
  m.gid = hex_array<16>(kClientGidHex);
  m.link_uid = 0x201;
  return m;
}

// Frame 11, server -> client: ADD LINK v2 request, 88 bytes (58 00), offering a second
// link on the same device (QP 0x12, link 2) with the rkey of the one RMB in use.
inline const Bytes kAddLink =
    hex("22 58 00 00"
        "02 00 0A 4D 00 01 00 00"                          // MAC, reserved
        "00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 01"  // GID
        "00 00 12"                                         // QP
        "02"                                               // link number
        "03"                                               // MTU 1024
        "3E 82 5A"                                         // PSN
        "00 00 00 00 00 00 00 00"
        "80 00"                                            // extension: direct
        "00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 01"  // target GID
        "00 00 00 00 00 00 00 00"
        "01 00"  // 1 rkey, little-endian
        "00 00 03 6B 00 00 05 66 FF 43 F2 6E 04 6B 00 00");

inline llc::AddLinkRkey add_link_rkey() {
  return llc::AddLinkRkey{0x36b, 0x566, 0xff43f26e046b0000};
}

// The decoded request; its rkeys view is set by the caller to the message's last 16 bytes.
inline llc::AddLinkV2 add_link(const Bytes& message) {
  llc::AddLinkV2 m;
  m.mac = hex_array<6>("02 00 0A 4D 00 01");
  m.gid = hex_array<16>(kServerGidHex);
  m.qp_num = 0x12;
  m.link_num = 2;
  m.qp_mtu = 3;
  m.initial_psn = 0x3e825a;
  m.has_extension = true;
  m.direct = true;
  m.target_gid = hex_array<16>(kServerGidHex);
  m.rkey_count = 1;
  m.rkeys = std::span<const uint8_t>(message).last(llc::kAddLinkRkeySize);
  return m;
}

// Frame 12, client -> server: the client's refusal, having no second path: the request's
// first 44 bytes sent back with flags 0xC0 (response, reject) and length 44.
inline const Bytes kAddLinkReject =
    hex("22 2C 00 C0"
        "02 00 0A 4D 00 01 00 00"
        "00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 01"
        "00 00 12 02 03 3E 82 5A"
        "00 00 00 00 00 00 00 00");

}  // namespace kernel_v2
