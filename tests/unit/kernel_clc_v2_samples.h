// The CLC messages of two Linux 6.12 kernels doing SMC-Rv2 over Soft-RoCE, byte for byte
// as captured in scripts/rxe-vm's guest on 2026-12-06 (client 10.77.0.2, server
// 10.77.0.1, both with the UEID "SMCPRE-TEST"), and the field values they decode to. The
// encoders must reproduce these bytes from these values, and the parsers these values
// from these bytes (test_clc_v2.cpp). Both kernels ran in one guest, so both send the same
// peer id.
#pragma once

#include "core/wire/clc_v2.h"
#include "tests/unit/clc_samples.h"
#include "tests/unit/hex.h"

namespace kernel_v2 {

inline const char* kEidHex =
    "53 4D 43 50 52 45 2D 54 45 53 54 20 20 20 20 20"  // "SMCPRE-TEST", space padded
    "20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20";

// Frame 4, client -> server, 156 bytes: version 2, v2 type R, v1 type none (byte 7 0x22).
inline const Bytes kProposal = cat({
    hex("E2 D4 C3 D9 01 00 9C 22"),  // header
    hex("00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
        "00 00 00 00 00 00 00 00 00 00 00 00 00 00"),  // local block: zero (no version 1)
    hex("00 00"),                                      // IP area offset 0: no IP area
    hex("00 00 00 00 00 00 00 00 00 00"                // SMC-D area: ISM GID, CHID,
        "00 1C"                                        // the v2 extension 28 bytes on,
        "00 00 00 00 00 00 00 00 00 00 00 00 00 00"    // vendor bytes and reserved
        "00 00 00 00 00 00 00 00 00 00 00 00 00 00"),
    hex("01 00 00 10 00 00 00 00"  // v2 extension: 1 UEID, release 1, no SMC-D extension
        "00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 02"  // RoCE GID ::ffff:10.77.0.2
        "FF 02 00 01"                                      // max conns 255, links 2, features 1
        "00 00 00 00 00 00 00 00 00 00 00 00"),
    hex(kEidHex),
    hex("E2 D4 C3 D9"),
});

inline clc::ProposalV2 proposal() {
  clc::ProposalV2 m;
  m.version = 2;
  m.v1_type = clc::SmcType::kNone;
  m.v2_type = clc::SmcType::kR;
  m.v2.release = clc::kRelease1;
  m.v2.ueids = {clc::Eid{hex_array<32>(kEidHex)}};
  m.v2.roce_gid = hex_array<16>("00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 02");
  m.v2.max_conns = 255;
  m.v2.max_links = 2;
  m.v2.feature_mask = clc::kFeatureEmulatedIsm;
  return m;
}

inline const char* kPeerIdHex = "FF D9 02 00 0A 4D 00 01";

// Frame 6, server -> client, 160 bytes: version 2, first contact, SMC-R (byte 7 0x28).
inline const Bytes kAccept = cat({
    hex("E2 D4 C3 D9 02 00 A0 28"),
    hex(kPeerIdHex),
    hex("00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 01"),  // GID ::ffff:10.77.0.1
    hex("02 00 0A 4D 00 01"),                                // MAC
    hex("00 00 11"                                           // QP 0x11
        "00 00 03 6B"                                        // rkey
        "01"                                                 // RMBE index
        "00 00 00 01"                                        // alert token
        "23"                                                 // 64 KiB, MTU 1024
        "00 FF 43 F2 6E 04 6B 00 00"                         // RMB address
        "00 F1 06 18"),                                      // PSN
    hex(kEidHex),
    hex("00 00 00 00 00 00 00 00"),
    hex("80 21 00 00"  // first contact: direct, Linux, release 1
        "28 6E 6F 6E 65 29 20 20 20 20 20 20 20 20 20 20"  // host name "(none)"
        "20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20"
        "FF 02 00 01"  // max conns, links, features
        "00 00 00 00"  // vendor options
        "00 00 00 00 00 00 00 00"),
    hex("E2 D4 C3 D9"),
});

inline clc::FirstContactExt first_contact() {
  clc::FirstContactExt f;
  f.v2_direct = true;
  f.os_type = clc::kOsLinux;
  f.release = clc::kRelease1;
  f.hostname = clc::hostname_field("(none)");
  f.max_conns = 255;
  f.max_links = 2;
  f.feature_mask = clc::kFeatureEmulatedIsm;
  return f;
}

inline clc::AcceptConfirmV2 accept() {
  clc::AcceptConfirmV2 m;
  m.smcr.first_contact = true;
  m.smcr.local.peer_id = hex_array<8>(kPeerIdHex);
  m.smcr.local.gid = hex_array<16>("00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 01");
  m.smcr.local.mac = hex_array<6>("02 00 0A 4D 00 01");
  m.smcr.qp_num = 0x11;
  m.smcr.rmb_rkey = 0x36b;
  m.smcr.conn_idx = 1;
  m.smcr.rmbe_alert_token = 1;
  m.smcr.rmbe_size_code = 2;
  m.smcr.qp_mtu = 3;
  m.smcr.rmb_vaddr = 0xff43f26e046b0000;
  m.smcr.psn = 0xf10618;
  m.eid = clc::Eid{hex_array<32>(kEidHex)};
  m.fce = first_contact();
  return m;
}

// Frame 8, client -> server, 180 bytes: the Accept's layout, then the GID extension.
inline const Bytes kConfirm = cat({
    hex("E2 D4 C3 D9 03 00 B4 28"),
    hex(kPeerIdHex),
    hex("00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 02"),
    hex("02 00 0A 4D 00 02"),
    hex("00 00 11 00 00 03 CC 01 00 00 00 02 23 00 FF 43 F2 6E 05 A7 00 00 00 B9 5D 38"),
    hex(kEidHex),
    hex("00 00 00 00 00 00 00 00"),
    hex("80 21 00 00"
        "28 6E 6F 6E 65 29 20 20 20 20 20 20 20 20 20 20"
        "20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20"
        "FF 02 00 01 00 00 00 00 00 00 00 00 00 00 00 00"),
    hex("01 00 00 00"  // GID extension: 1 GID
        "00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 02"),
    hex("E2 D4 C3 D9"),
});

inline clc::AcceptConfirmV2 confirm() {
  clc::AcceptConfirmV2 m = accept();
  m.smcr.local.gid = hex_array<16>("00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 02");
  m.smcr.local.mac = hex_array<6>("02 00 0A 4D 00 02");
  m.smcr.rmb_rkey = 0x3cc;
  m.smcr.rmbe_alert_token = 2;
  m.smcr.rmb_vaddr = 0xff43f26e05a70000;
  m.smcr.psn = 0xb95d38;
  m.gids = {m.smcr.local.gid};
  return m;
}

}  // namespace kernel_v2
