// The LLC messages' types, sizes and decoded forms, shared by the codecs of both versions
// (core/wire/llc.h, llc_v2.h; llc_frame.h inside core/wire). Include llc.h or llc_v2.h
// rather than this.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "rdma/device.h"

namespace smcpre::core::llc {

// Every LLC version 1 message, every version 2 message but ADD LINK, DELETE RKEY and
// REQ ADD LINK (llc_v2.h), and every CDC.
inline constexpr size_t kSize = 44;

// A message's LLC type: version 1 writes it as the first byte, version 2 as the low nibble
// of the first byte under 0x20; CDC is 0xFE in both.
enum class Type : uint8_t {
  kUnknown = 0x00,
  kConfirmLink = 0x01,
  kAddLink = 0x02,
  kAddLinkCont = 0x03,
  kDeleteLink = 0x04,
  kReqAddLink = 0x05,
  kConfirmRkey = 0x06,
  kTestLink = 0x07,
  kConfirmRkeyCont = 0x08,
  kDeleteRkey = 0x09,
  kCdc = 0xFE,  // not LLC: a CDC message (core/wire/cdc.h)
};

// The LLC version of a link group: Linux writes version 2 LLC in every SMC-Rv2 link group
// (the version of its CLC handshake) and version 1 in the others.
enum class Version : uint8_t { kV1 = 1, kV2 = 2 };

// "CONFIRM_LINK", "TEST_LINK", ..., "CDC", "UNKNOWN": for logs.
const char* type_name(Type type);

// DELETE LINK reason codes (Linux values).
enum class DeleteReason : uint32_t {
  kLostPath = 0x00010000,
  kOperatorTerminated = 0x00020000,
  kProgramTerminated = 0x00030000,  // orderly end of the link group
  kProtocolViolation = 0x00040000,
  kNoAsymmetricNeeded = 0x00050000,
  kUnknownLink = 0x00100000,  // response: no such link
  kUnknownLinkGroup = 0x00200000,
};

// CONFIRM LINK: sent by the server over a new link on first contact, answered by the
// client. Always marks "no RMBE eyecatchers" (Linux refuses links without that flag).
struct ConfirmLink {
  bool response = false;
  rdma::Mac mac{};        // sender's
  rdma::Gid gid{};        // sender's
  uint32_t qp_num = 0;    // sender's, 24 bits
  uint8_t link_num = 0;   // link id inside the link group
  uint32_t link_uid = 0;  // link group id (4 bytes on the wire)
  uint8_t max_links = 1;  // links the sender supports in the group
  // Version 2 (release 1): the connections per link group the handshake agreed on. Linux
  // fills it, and max_links with the agreed number, only then; in version 1 the byte is
  // reserved, written as given and read as 0.
  uint8_t max_conns = 0;
  bool operator==(const ConfirmLink&) const = default;
};

// TEST LINK: keepalive; the response echoes the user data.
struct TestLink {
  bool response = false;
  std::array<uint8_t, 16> user_data{};
  bool operator==(const TestLink&) const = default;
};

// DELETE LINK: ends a link (all = the whole link group; orderly = after pending work).
struct DeleteLink {
  bool response = false;
  bool all = false;
  bool orderly = false;
  uint8_t link_num = 0;
  uint32_t reason = 0;  // a DeleteReason value
  bool operator==(const DeleteLink&) const = default;
};

// CONFIRM RKEY: announces an RMB added to the link group after first contact, for the
// link it is sent on (rkeys for further links of a multi-link group are ignored on
// decode and never sent: smcpre uses one link per group). The same 44 bytes in version 2.
struct ConfirmRkey {
  bool response = false;
  bool negative = false;  // response: the peer could not use the rkey
  uint32_t rkey = 0;
  uint64_t vaddr = 0;
  bool operator==(const ConfirmRkey&) const = default;
};

}  // namespace smcpre::core::llc
