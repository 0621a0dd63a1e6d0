// LLC (Link Layer Control) messages: 44-byte control messages between the two ends of a
// link, sent with RDMA SEND on the same queue pair as CDC (RFC 7609; layouts and values as
// Linux net/smc/smc_llc.c). The four messages smcpre exchanges in every link group, in
// both versions: version 1, and the version 2 framing Linux uses in SMC-Rv2 link groups
// (type byte 0x20 | type, a 16-bit length; llc_frame.h). The messages only version 2 has,
// and how version 2 traffic is sorted: core/wire/llc_v2.h.
//
// On the data path: encode and decode do not allocate on the success path. The first
// byte of every received message tells CDC from LLC (classify).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/wire/llc_types.h"

namespace smcpre::core::llc {

// kCdc for 0xFE, the LLC version 1 type for 0x01..0x09, kUnknown for anything else (the
// version 2 bytes included: classify_message in llc_v2.h tells them apart).
Type classify(uint8_t first_byte);

// What a link does with a received message that is not a CDC. smcpre acts on CONFIRM
// LINK, TEST LINK and DELETE LINK (kAct: decode it; a malformed one is a violation too);
// the other LLC version 1 types, which a Linux peer may send to a single-link group, are
// ignored (kIgnore); anything else is no LLC message at all (kViolation), which ends the
// link as Linux does (smc_llc_protocol_violation). For a version 2 link group:
// disposition_v2 in llc_v2.h.
enum class Disposition { kAct, kIgnore, kViolation };
Disposition disposition(uint8_t first_byte);

// Each encode writes all 44 bytes (reserved fields zero), in version 1 unless told.
void encode(const ConfirmLink& msg, std::span<uint8_t, kSize> out);
void encode(const TestLink& msg, std::span<uint8_t, kSize> out);
void encode(const DeleteLink& msg, std::span<uint8_t, kSize> out);
void encode(const ConfirmRkey& msg, std::span<uint8_t, kSize> out);
void encode(const ConfirmLink& msg, Version version, std::span<uint8_t, kSize> out);
void encode(const TestLink& msg, Version version, std::span<uint8_t, kSize> out);
void encode(const DeleteLink& msg, Version version, std::span<uint8_t, kSize> out);
void encode(const ConfirmRkey& msg, Version version, std::span<uint8_t, kSize> out);

// Each decode requires in.size() == 44, the message's own type byte and length (version
// 1 unless told: the byte 44; version 2: the 16-bit 44 in either byte order), plus the
// checks its type needs. On failure returns false and, if error is not null, sets a
// reason.
bool decode(std::span<const uint8_t> in, ConfirmLink* out, std::string* error);
bool decode(std::span<const uint8_t> in, TestLink* out, std::string* error);
bool decode(std::span<const uint8_t> in, DeleteLink* out, std::string* error);
bool decode(std::span<const uint8_t> in, ConfirmRkey* out, std::string* error);
bool decode(std::span<const uint8_t> in, Version version, ConfirmLink* out, std::string* error);
bool decode(std::span<const uint8_t> in, Version version, TestLink* out, std::string* error);
bool decode(std::span<const uint8_t> in, Version version, DeleteLink* out, std::string* error);
bool decode(std::span<const uint8_t> in, Version version, ConfirmRkey* out, std::string* error);

}  // namespace smcpre::core::llc
