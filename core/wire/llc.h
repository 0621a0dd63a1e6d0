// LLC (Link Layer Control) messages: 44-byte control messages between the two ends of a
// link, sent with RDMA SEND on the same queue pair as CDC (RFC 7609; layouts and values as
// Linux net/smc/smc_llc.c, LLC version 1).
//
// On the data path: encode and decode do not allocate on the success path. The first
// byte of every received message tells CDC from LLC (classify).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "rdma/device.h"

namespace smcpre::core::llc {

inline constexpr size_t kSize = 44;

// The first byte of a message received on a link.
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

// kCdc for 0xFE, the LLC version 1 type for 0x01..0x09, kUnknown for anything else.
Type classify(uint8_t first_byte);
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
// decode and never sent: smcpre uses one link per group).
struct ConfirmRkey {
  bool response = false;
  bool negative = false;  // response: the peer could not use the rkey
  uint32_t rkey = 0;
  uint64_t vaddr = 0;
  bool operator==(const ConfirmRkey&) const = default;
};

// What a link does with a received message that is not a CDC. smcpre acts on CONFIRM
// LINK, TEST LINK and DELETE LINK (kAct: decode it; a malformed one is a violation too);
// the other LLC version 1 types, which a Linux peer may send to a single-link group, are
// ignored (kIgnore); anything else is no LLC message at all (kViolation), which ends the
// link as Linux does (smc_llc_protocol_violation).
enum class Disposition { kAct, kIgnore, kViolation };
Disposition disposition(uint8_t first_byte);

// Each encode writes all 44 bytes (reserved fields zero).
void encode(const ConfirmLink& msg, std::span<uint8_t, kSize> out);
void encode(const TestLink& msg, std::span<uint8_t, kSize> out);
void encode(const DeleteLink& msg, std::span<uint8_t, kSize> out);
void encode(const ConfirmRkey& msg, std::span<uint8_t, kSize> out);

// Each decode requires in.size() == 44, the message's own type byte and length byte 44,
// plus the checks its type needs. On failure returns false and, if error is not null,
// sets a reason.
bool decode(std::span<const uint8_t> in, ConfirmLink* out, std::string* error);
bool decode(std::span<const uint8_t> in, TestLink* out, std::string* error);
bool decode(std::span<const uint8_t> in, DeleteLink* out, std::string* error);
bool decode(std::span<const uint8_t> in, ConfirmRkey* out, std::string* error);

}  // namespace smcpre::core::llc
