// CLC (Connection Layer Control) messages: the SMC-R handshake carried on the TCP
// connection before any application byte (RFC 7609; layouts and values as in Linux
// net/smc/smc_clc.h, SMC version 1, so that captures decode as SMC).
//
// Pure encode/decode. Every parse_* validates the whole message and reports the first
// problem as a human-readable reason; nothing read from the peer is trusted.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rdma/device.h"

namespace smcpre::core::clc {

// "SMCR" in EBCDIC: starts and ends every SMC-R CLC message.
inline constexpr std::array<uint8_t, 4> kEyecatcher{0xE2, 0xD4, 0xC3, 0xD9};
inline constexpr uint8_t kVersion = 1;

enum class Type : uint8_t { kProposal = 1, kAccept = 2, kConfirm = 3, kDecline = 4 };

inline constexpr size_t kHeaderSize = 8;
inline constexpr size_t kTrailerSize = 4;
inline constexpr size_t kMaxIpv6Prefixes = 8;
inline constexpr size_t kIpv6PrefixSize = 17;  // 16-byte prefix + 1-byte length
// A Proposal is: header, local block and the u16 IP area offset (kProposalBaseSize), an
// SMC-D information area of "IP area offset" bytes, the IP area (IPv4 subnet u32, prefix
// length u8, 2 reserved, IPv6 prefix count u8), the IPv6 prefixes, the trailer. RFC 7609
// and Linux before 5.10 put the IP area right after the offset field (offset 0) in an
// SMC-R-only Proposal; Linux since 5.10 always sends the 40-byte SMC-D area (zeroed when
// SMC-D is not offered), and so does smcpre, since Wireshark decodes only that layout.
// (Linux 5.10+ also writes version 2 in a Proposal's header, with "no version 2 type" if
// it offers version 1 only; smcpre writes version 1, which Linux takes in this layout.)
inline constexpr size_t kProposalBaseSize = 40;
inline constexpr size_t kSmcdAreaSize = 40;  // Linux struct smc_clc_msg_smcd
inline constexpr size_t kIpAreaSize = 8;
// The smallest Proposal: IP area offset 0, no IPv6 prefixes.
inline constexpr size_t kProposalMinSize = kProposalBaseSize + kIpAreaSize + kTrailerSize;  // 52
// What encode(Proposal) writes when there are no IPv6 prefixes (IP area offset 40).
inline constexpr size_t kProposalSize = kProposalMinSize + kSmcdAreaSize;  // 92
inline constexpr size_t kAcceptConfirmSize = 68;
inline constexpr size_t kDeclineSize = 28;
// Version >= 2 Declines carry four more diagnosis words (Linux smc_clc_msg_decline_v2).
inline constexpr size_t kDeclineV2Size = 44;
// The largest message smcpre reads: a Proposal with the SMC-D area and the most IPv6
// prefixes.
inline constexpr size_t kMaxMessageSize =
    kProposalSize + kMaxIpv6Prefixes * kIpv6PrefixSize;  // 228

// The sender's identity and RoCE port ("local" block of Proposal/Accept/Confirm).
struct LocalInfo {
  std::array<uint8_t, 8> peer_id{};  // 2 random bytes + 6-byte MAC: the system instance
  rdma::Gid gid{};
  rdma::Mac mac{};
  bool operator==(const LocalInfo&) const = default;
};

struct Ipv6Prefix {
  std::array<uint8_t, 16> prefix{};
  uint8_t prefix_len = 0;  // 0..128
  bool operator==(const Ipv6Prefix&) const = default;
};

struct Proposal {
  LocalInfo local;
  uint32_t ipv4_subnet_be = 0;            // network-order value, as in in_addr.s_addr
  uint8_t ipv4_prefix_len = 0;            // 0..32
  std::vector<Ipv6Prefix> ipv6_prefixes;  // at most kMaxIpv6Prefixes
  bool operator==(const Proposal&) const = default;
};

// Accept (server -> client) and Confirm (client -> server) share one layout.
struct AcceptConfirm {
  bool first_contact = false;
  LocalInfo local;
  uint32_t qp_num = 0;  // 24 bits
  uint32_t rmb_rkey = 0;
  uint8_t conn_idx = 1;  // RMBE index inside the RMB, 1-based
  uint32_t rmbe_alert_token = 0;
  uint8_t rmbe_size_code = 0;  // 4 bits: RMBE size = 16 KiB << code
  uint8_t qp_mtu = 0;          // 4 bits: IB MTU enum 1 (256) .. 5 (4096)
  uint64_t rmb_vaddr = 0;
  uint32_t psn = 0;  // 24 bits, initial packet sequence number
  bool operator==(const AcceptConfirm&) const = default;
};

struct Decline {
  std::array<uint8_t, 8> peer_id{};
  uint32_t diagnosis = 0;  // a DeclineCode value (core/wire/decline.h) or a peer's own code
  bool out_of_sync = false;
  bool operator==(const Decline&) const = default;
};

struct Header {
  Type type = Type::kProposal;
  uint16_t length = 0;  // of the whole message, header and trailer included
  uint8_t version = 0;
  bool flag = false;  // Accept/Confirm: first contact; Decline: out of sync
};

enum class HeaderResult { kOk, kNeedMore, kNotClc };

// Looks at the start of a byte stream. kNeedMore: fewer than kHeaderSize bytes, all of
// them consistent with a CLC header. kNotClc: the bytes cannot start a CLC message
// (eyecatcher mismatch at any available byte, unknown type, version 0, length impossible
// for the type and version). kOk: *out is filled; the message is header.length bytes.
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
// Proposal/Accept/Confirm must be version 1, SMC-R; a Decline of any version >= 1 is
// accepted (its version-2 extension is ignored). A Proposal's IP area offset may be 0 to
// kSmcdAreaSize (as Linux accepts); the SMC-D area's content is ignored.
bool parse_proposal(std::span<const uint8_t> msg, Proposal* out, std::string* error);
bool parse_accept(std::span<const uint8_t> msg, AcceptConfirm* out, std::string* error);
bool parse_confirm(std::span<const uint8_t> msg, AcceptConfirm* out, std::string* error);
bool parse_decline(std::span<const uint8_t> msg, Decline* out, std::string* error);

// RMBE size in the compressed notation of Accept/Confirm: bytes = 16 KiB << code.
// rmbe_size_code returns 0xFF unless bytes is exactly 16 KiB << n for n in 0..15;
// rmbe_size_bytes returns 0 for a code above 15.
inline constexpr uint8_t kMaxRmbeSizeCode = 15;
uint8_t rmbe_size_code(uint32_t bytes);
uint32_t rmbe_size_bytes(uint8_t code);

}  // namespace smcpre::core::clc
