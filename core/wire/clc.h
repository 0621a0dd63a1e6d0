// CLC (Connection Layer Control) messages: the SMC-R handshake carried on the TCP
// connection before any application byte (RFC 7609; layouts and values as in Linux
// net/smc/smc_clc.h, SMC version 1, so that captures decode as SMC). The version 2 forms
// Linux speaks over RoCE v2 (SMC-Rv2) are in core/wire/clc_v2.h; parse_header here
// recognises both.
//
// Pure encode/decode. Every parse_* validates the whole message and reports the first
// problem as a human-readable reason; nothing read from the peer is trusted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/wire/clc_types.h"

namespace smcpre::core::clc {

enum class HeaderResult { kOk, kNeedMore, kNotClc };

// Looks at the start of a byte stream. kNeedMore: fewer than kHeaderSize bytes, all of
// them consistent with a CLC header. kNotClc: the bytes cannot start a CLC message
// (eyecatcher mismatch at any available byte, unknown type, version 0, length impossible
// for the type and version: exact in version 1, within the bounds in clc_types.h in
// version 2 and later). kOk: *out is filled; the message is header.length bytes.
HeaderResult parse_header(std::span<const uint8_t> bytes, Header* out);

// Encoders write version 1, SMC-R. A Proposal gets IP area offset 40 and a zeroed SMC-D
// area: the layout Linux uses when it proposes SMC-R only. They assert on values that do
// not fit their wire fields (24-bit qp_num/psn, 4-bit codes, prefix lengths, more than 8
// IPv6 prefixes).
std::vector<uint8_t> encode(const Proposal& proposal);
std::vector<uint8_t> encode_accept(const AcceptConfirm& accept);
std::vector<uint8_t> encode_confirm(const AcceptConfirm& confirm);
std::vector<uint8_t> encode(const Decline& decline);

// Each parses exactly one whole message (msg.size() must equal the header's length) and
// returns false with a reason in *error (if error is not null) on any malformation.
// Proposal/Accept/Confirm must be version 1, SMC-R (for version 2: clc_v2.h); a Decline
// of any version >= 1 is accepted (its version-2 extension is ignored). A Proposal's IP
// area offset may be 0 to kSmcdAreaSize (as Linux accepts); the SMC-D area's content is
// ignored.
bool parse_proposal(std::span<const uint8_t> msg, Proposal* out, std::string* error);
bool parse_accept(std::span<const uint8_t> msg, AcceptConfirm* out, std::string* error);
bool parse_confirm(std::span<const uint8_t> msg, AcceptConfirm* out, std::string* error);
bool parse_decline(std::span<const uint8_t> msg, Decline* out, std::string* error);

// RMBE size in the compressed notation of Accept/Confirm: bytes = 16 KiB << code.
// rmbe_size_code returns 0xFF unless bytes is exactly 16 KiB << n for n in 0..15;
// rmbe_size_bytes returns 0 for a code above 15.
uint8_t rmbe_size_code(uint32_t bytes);
uint32_t rmbe_size_bytes(uint8_t code);

}  // namespace smcpre::core::clc
