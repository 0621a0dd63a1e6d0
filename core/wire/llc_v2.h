// LLC version 2: how Linux talks on the links of an SMC-Rv2 link group (net/smc/smc_llc.c,
// values as 6.12), checked byte for byte against a capture of two 6.12 kernels
// (tests/unit/kernel_llc_v2_samples.h; doc/design.md §1.3.1 draws the layouts).
//
// Every version 2 message starts with 0x20 | type, a 16-bit length and a flags byte
// (core/wire/llc_frame.h explains the length's byte order). CONFIRM LINK, TEST LINK,
// DELETE LINK and CONFIRM RKEY keep their 44 bytes and version 1 bodies (llc.h encodes
// them for either version). The messages here may be longer:
// - ADD LINK (0x22): the version 1 body, then an extension with the new link's GID and
//   the rkeys of the group's RMBs for it. Linux's server sends one after every first
//   contact when both sides allow two links; a client without a second path refuses it.
// - DELETE RKEY (0x29): up to 255 rkeys.
// - REQ ADD LINK (0x25): a client's GIDs, inviting the server to add a link.
//
// Receive buffers: Linux posts SMC_WR_BUF_V2_SIZE (8192) bytes for each receive of a
// version 2 link group and sends at most an ADD LINK with 255 rkeys (4152 bytes); a
// longer SEND than the buffer posted breaks the queue pair.
//
// On the data path: decode and encode do not allocate. The variable parts are decoded as
// views into the received bytes, which must outlive them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/wire/llc.h"

namespace smcpre::core::llc {

// The most a version 2 message may have (Linux SMC_WR_BUF_V2_SIZE): what a receive buffer
// of a version 2 link group must hold.
inline constexpr size_t kV2MaxSize = 8192;
// ADD LINK: the body and the extension without rkeys, then 16 bytes per rkey.
inline constexpr size_t kAddLinkExtSize = 28;
inline constexpr size_t kAddLinkRkeySize = 16;
// The largest message Linux sends: ADD LINK with an rkey for each of 255 connections.
inline constexpr size_t kV2KernelMaxSize = kSize + kAddLinkExtSize + 255 * kAddLinkRkeySize;
// DELETE RKEY: 8 bytes, then 4 per rkey (Linux reads at most 255); REQ ADD LINK: 28 bytes,
// then 16 per GID. Both at least 44.
inline constexpr size_t kDeleteRkeyHeaderSize = 8;
inline constexpr size_t kReqAddLinkHeaderSize = 28;

// What the first byte of a received message is.
enum class Family : uint8_t { kUnknown, kCdc, kLlcV1, kLlcV2 };
struct MessageKind {
  Family family = Family::kUnknown;
  Type type = Type::kUnknown;  // the LLC type (kCdc for a CDC, kUnknown for anything else)
  bool operator==(const MessageKind&) const = default;
};
// CDC for 0xFE; LLC version 1 for 0x01..0x09, version 2 for 0x21..0x29, with their type;
// kUnknown otherwise.
MessageKind classify_message(uint8_t first_byte);

// What a link of a version 2 link group does with a message that is not a CDC. Linux's
// peer acts on every one of these and waits for the answers (2 s; a missing one fails
// the connection or stalls the group's LLC), so smcpre acts on all: CONFIRM LINK, TEST
// LINK, DELETE LINK, ADD LINK (refused, add_link_reject), REQ ADD LINK (answered with
// its response), CONFIRM RKEY and DELETE RKEY. ADD LINK CONT and CONFIRM RKEY CONT in
// their version 2 bytes (0x23, 0x28) Linux neither sends nor takes (it has no handler for
// them): kIgnore. Anything else, version 1 bytes included (Linux never sends them in a
// version 2 group), is kViolation. (Linux silently drops bytes it has no handler for;
// smcpre ends the link, as for version 1.)
Disposition disposition_v2(uint8_t first_byte);

// One rkey entry of an ADD LINK extension: an RMB's rkey on the existing link, and its
// rkey and address on the new one.
struct AddLinkRkey {
  uint32_t rkey = 0;
  uint32_t rkey_new = 0;
  uint64_t vaddr_new = 0;
  bool operator==(const AddLinkRkey&) const = default;
};

// ADD LINK (version 2), request or response.
struct AddLinkV2 {
  bool response = false;
  bool reject = false;       // response: the sender refuses the new link
  rdma::Mac mac{};           // the sender's, for the new link
  rdma::Gid gid{};           // the sender's, for the new link
  uint32_t qp_num = 0;       // 24 bits: the new link's QP
  uint8_t link_num = 0;      // the new link's id (the server assigns it)
  uint8_t qp_mtu = 0;        // 4 bits, IB MTU enum (Linux refuses a request with 0)
  uint32_t initial_psn = 0;  // 24 bits
  // The extension: in a request, and in a response that accepts; not in a refusal.
  bool has_extension = false;
  bool direct = false;     // the new link needs no gateway
  rdma::Gid target_gid{};  // Linux writes the sender's new GID here
  // The rkeys announced. Linux writes its connection count, which may exceed the entries
  // it finds and sends; the receiver takes the entries present.
  uint16_t rkey_count = 0;
  // The entries present, kAddLinkRkeySize bytes each: a view into the message.
  std::span<const uint8_t> rkeys;

  size_t rkeys_present() const { return rkeys.size() / kAddLinkRkeySize; }
  AddLinkRkey rkey(size_t index) const;  // index < rkeys_present()
  size_t size() const;                   // of the encoded message
  bool operator==(const AddLinkV2& other) const;
};

// The refusal Linux's client sends when it has no second path (smc_llc_cli_add_link_reject):
// the request itself, its first 44 bytes, with the response and reject flags. The reject
// reason (1, "no alternate path") goes nowhere: in version 1 it is the low nibble of byte
// 2, which version 2 uses for the length, and Linux writes the length after it. Linux's
// server looks only at the reject flag (smc_llc_srv_add_link).
AddLinkV2 add_link_reject(const AddLinkV2& request);

// DELETE RKEY (version 2).
struct DeleteRkeyV2 {
  bool response = false;
  bool negative = false;   // response: some rkeys were unknown
  uint8_t rkey_count = 0;  // the request's; Linux's response repeats it
  // Response: how many were unknown (Linux counts them in this byte; version 1 had a mask).
  uint8_t invalid_count = 0;
  // Request: the rkeys, 4 bytes each, big-endian: a view into the message. A response
  // carries none (Linux zeroes them).
  std::span<const uint8_t> rkeys;

  uint32_t rkey(size_t index) const;  // index < rkey_count, request only
  size_t size() const;
  bool operator==(const DeleteRkeyV2& other) const;
};

// REQ ADD LINK (version 2): a client's invitation, with its GIDs. Linux's server answers
// with a response of 44 zero bytes after the header when it adds no link, and its client
// holds its link group's other LLC work until the answer (or an ADD LINK) comes.
struct ReqAddLinkV2 {
  bool response = false;
  uint8_t gid_count = 0;              // request
  std::span<const uint8_t> gids;      // request: 16 bytes each, a view into the message
  rdma::Gid gid(size_t index) const;  // index < gid_count
  size_t size() const;
  bool operator==(const ReqAddLinkV2& other) const;
};

// Each encode writes msg.size() bytes (reserved fields zero, the length little-endian) to
// out, which must hold them, and returns that size. It asserts on values that do not fit
// (24-bit and 4-bit fields, views that are not whole entries or disagree with counts, a
// response with rkeys or GIDs).
size_t encode(const AddLinkV2& msg, std::span<uint8_t> out);
size_t encode(const DeleteRkeyV2& msg, std::span<uint8_t> out);
size_t encode(const ReqAddLinkV2& msg, std::span<uint8_t> out);

// Each decode checks the version 2 frame (llc_frame.h) and that the size is exactly what
// the counts call for: ADD LINK 44, or 72 plus 16 per rkey present (no more than
// announced); DELETE RKEY and REQ ADD LINK requests the larger of 44 and their header
// plus entries, responses 44. On failure returns false and, if error is not null, a
// reason.
bool decode(std::span<const uint8_t> in, AddLinkV2* out, std::string* error);
bool decode(std::span<const uint8_t> in, DeleteRkeyV2* out, std::string* error);
bool decode(std::span<const uint8_t> in, ReqAddLinkV2* out, std::string* error);

}  // namespace smcpre::core::llc
