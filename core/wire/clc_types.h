// The CLC messages' types, sizes and decoded forms, shared by the codecs of both versions
// (core/wire/clc.h for version 1, clc_v2.h for version 2; clc_frame.h inside core/wire).
// Include clc.h or clc_v2.h rather than this.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
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
// The largest version 1 Proposal: the SMC-D area and the most IPv6 prefixes.
inline constexpr size_t kMaxProposalV1Size =
    kProposalSize + kMaxIpv6Prefixes * kIpv6PrefixSize;  // 228
// Version 2 bounds that parse_header applies (the layouts, and how these sizes add up:
// core/wire/clc_v2.h). The smallest Proposal offers version 1 only (an IP area and no
// version 2 extension); the smallest Accept/Confirm is SMC-D's, which smcpre declines but
// must still see framed; the largest Confirm carries the first-contact extension and 8
// GIDs.
inline constexpr size_t kProposalV2MinSize = 92;
inline constexpr size_t kAcceptConfirmV2MinSize = 78;
inline constexpr size_t kMaxAcceptConfirmV2Size = 292;
// The largest message smcpre reads, and the buffer a stream reader needs: a version 2
// Proposal with 8 IPv6 prefixes, 8 user EIDs and an SMC-D extension with 8 ISM devices,
// Linux's struct smc_clc_msg_proposal_area.
inline constexpr size_t kMaxMessageSize = 652;

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
  // The two bit pairs of byte 7 as Linux names them. typev1: the SMC type (0 R, 1 D; in a
  // version 2 Proposal the type offered for version 1, 2 = none, 3 = both); typev2: in a
  // version 2 Proposal the type offered for version 2, else the flag and a reserved bit.
  uint8_t typev1 = 0;
  uint8_t typev2 = 0;
};

// RMBE size in the compressed notation of Accept/Confirm: bytes = 16 KiB << code.
inline constexpr uint8_t kMaxRmbeSizeCode = 15;

}  // namespace smcpre::core::clc
