// CLC version 2: the handshake as Linux (5.10 and later; values as 6.12) speaks it, and
// the only form in which it does SMC-R over RoCE v2 (SMC-Rv2). Layouts as Linux's
// net/smc/smc_clc.h, checked byte for byte against a capture of two 6.12 kernels
// (tests/unit/kernel_v2_samples.h); doc/design.md §1.3.1 draws them and lists where the
// kernel's bytes differ from RFC 7609.
//
// Version 2 keeps the version 1 messages as a prefix and adds extensions:
// - Proposal: the SMC types offered per version in header byte 7; the SMC-D area is always
//   there; the IP area only when version 1 is offered; then the version 2 extension (the
//   client's UEIDs, its RoCE v2 GID, release, limits, features) and, when SMC-Dv2 is
//   offered, an SMC-D extension (ignored here: smcpre speaks SMC-R only).
// - Accept/Confirm: the version 1 SMC-R fields, the negotiated EID, and on first contact
//   the first-contact extension (OS, release, host name, limits, features); a
//   first-contact Confirm also carries the client's GIDs.
// - Decline: the OS type and four more diagnosis words.
//
// Pure encode/decode, in the style of clc.h: every parse validates the whole message and
// reports the first problem as one printable line; nothing read from the peer is trusted.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/wire/clc.h"
#include "core/wire/eid.h"
#include "rdma/device.h"

namespace smcpre::core::clc {

inline constexpr uint8_t kVersion2 = 2;

// An SMC type as header byte 7 carries it (Linux SMC_TYPE_*): which of SMC-R and SMC-D.
enum class SmcType : uint8_t { kR = 0, kD = 1, kNone = 2, kBoth = 3 };
constexpr bool offers_r(SmcType t) {
  return t == SmcType::kR || t == SmcType::kBoth;
}
constexpr bool offers_d(SmcType t) {
  return t == SmcType::kD || t == SmcType::kBoth;
}

// The release within version 2 (Linux SMC_RELEASE: 1 since 6.6, "v2.1", which added the
// limits and the feature mask below).
inline constexpr uint8_t kRelease0 = 0;
inline constexpr uint8_t kRelease1 = 1;
// OS types of the first-contact extension and the version 2 Decline.
inline constexpr uint8_t kOsZos = 1;
inline constexpr uint8_t kOsLinux = 2;
inline constexpr uint8_t kOsAix = 3;
// Supplemental features (Linux SMC_FEATURE_MASK): bit 0 = emulated ISM devices (SMC-D
// over loopback). Linux 6.12 offers it in every Proposal and Accept, SMC-R too.
inline constexpr uint16_t kFeatureEmulatedIsm = 0x0001;

inline constexpr size_t kHostnameSize = 32;
// SMC-D devices an SMC-D extension may list (Linux SMCD_CLC_MAX_V2_GID_ENTRIES).
inline constexpr size_t kMaxIsmGids = 8;
// GIDs a first-contact Confirm may carry. Linux sends its link's GID and at most one
// alternate (SMC_GIDLIST_LEN 2) and never reads them; smcpre takes up to 8.
inline constexpr size_t kMaxConfirmGids = 8;

// Sizes, which add up to the bounds in clc.h.
inline constexpr size_t kSmcdAreaOffset = kProposalBaseSize;  // 40
inline constexpr size_t kV2ExtensionSize = 40;                // without the EIDs
inline constexpr size_t kSmcdV2ExtensionSize = 48;            // without the GIDs
inline constexpr size_t kIsmGidChidSize = 10;                 // GID u64, CHID u16
inline constexpr size_t kAcceptConfirmV2Size = 108;           // no extension
inline constexpr size_t kFirstContactExtSize = 52;            // Linux's "v2x" form
inline constexpr size_t kGidExtHeaderSize = 4;                // count, 3 reserved
inline constexpr size_t kAcceptV2FirstContactSize =
    kAcceptConfirmV2Size + kFirstContactExtSize;  // 160
static_assert(kProposalV2MinSize == kProposalBaseSize + kSmcdAreaSize + kIpAreaSize + kTrailerSize);
static_assert(kMaxAcceptConfirmV2Size ==
              kAcceptV2FirstContactSize + kGidExtHeaderSize + kMaxConfirmGids * 16);
static_assert(kMaxMessageSize == kProposalBaseSize + kSmcdAreaSize + kIpAreaSize +
                                     kMaxIpv6Prefixes * kIpv6PrefixSize + kV2ExtensionSize +
                                     kMaxUeids * kEidSize + kSmcdV2ExtensionSize +
                                     kMaxIsmGids * kIsmGidChidSize + kTrailerSize);

// The version 2 extension of a Proposal.
struct ProposalV2Extension {
  uint8_t release = kRelease1;  // 4 bits
  bool seid = false;            // the client offers its system EID (SMC-D only)
  std::vector<Eid> ueids;       // at most kMaxUeids, in the client's order
  rdma::Gid roce_gid{};         // the client's RoCE v2 GID (IPv4-mapped), for SMC-Rv2
  uint8_t max_conns = 0;        // connections per link group the client allows (release 1)
  uint8_t max_links = 0;        // links per link group the client allows (release 1)
  uint16_t feature_mask = 0;
  bool operator==(const ProposalV2Extension&) const = default;
};

// A Proposal of any version, as a server sees it. Linux since 5.10 writes version 2 into
// every Proposal, also when it offers version 1 only (v2_type kNone); a version 1 Proposal
// (older Linux, smcpre) has v1_type kR and v2_type kNone.
struct ProposalV2 {
  uint8_t version = kVersion2;  // what the header says; Linux takes any above 2 as 2
  SmcType v1_type = SmcType::kNone;
  SmcType v2_type = SmcType::kR;
  // The version 1 identity (peer id, RoCE GID, MAC). Linux fills it only when it offers
  // SMC-R version 1, and zeroes it in a version 2 only Proposal.
  LocalInfo local;
  // The IP area, there when version 1 is offered (v1_type not kNone).
  uint32_t ipv4_subnet_be = 0;
  uint8_t ipv4_prefix_len = 0;
  std::vector<Ipv6Prefix> ipv6_prefixes;
  // The version 2 extension: there when version 2 is offered (v2_type not kNone); left
  // default by the parser, and not written, otherwise.
  ProposalV2Extension v2;
  bool operator==(const ProposalV2&) const = default;
};

// The first-contact extension of a version 2 Accept or Confirm, in the 52-byte form Linux
// sends for SMC-R at every release.
struct FirstContactExt {
  bool v2_direct = true;        // the sender reaches the peer without a gateway (Linux: the
                                // client then takes the peer's MAC from the local block)
  uint8_t os_type = kOsLinux;   // 4 bits
  uint8_t release = kRelease1;  // 4 bits: the release both sides will use
  std::array<uint8_t, kHostnameSize> hostname{};  // Linux: its node name, space padded
  uint8_t max_conns = 0;  // release 1: the connections per link group agreed on
  uint8_t max_links = 0;  // release 1: the links per link group agreed on
  uint16_t feature_mask = 0;
  uint32_t vendor_options = 0;
  bool operator==(const FirstContactExt&) const = default;
};

// A version 2 SMC-R Accept (server -> client) or Confirm (client -> server).
struct AcceptConfirmV2 {
  uint8_t version = kVersion2;
  // The fields version 1 has; smcr.first_contact says whether fce is sent.
  AcceptConfirm smcr;
  Eid eid;  // the EID the server settled on; the client's Confirm repeats it
  // There on first contact; left default by the parser, and not written, otherwise.
  FirstContactExt fce;
  // A first-contact Confirm's GID extension: the client's RoCE GIDs, its link's first (at
  // most kMaxConfirmGids; empty: none sent). Never in an Accept, nor without first contact.
  std::vector<rdma::Gid> gids;
  bool operator==(const AcceptConfirmV2&) const = default;
};

// A version 2 Decline (44 bytes).
struct DeclineV2 {
  uint8_t version = kVersion2;
  std::array<uint8_t, 8> peer_id{};
  uint32_t diagnosis = 0;  // a DeclineCode value or a peer's own code
  bool out_of_sync = false;
  uint8_t os_type = kOsLinux;                // 4 bits
  std::array<uint32_t, 4> more_diagnosis{};  // Linux sends zeros
  bool operator==(const DeclineV2&) const = default;
};

// A host name field: the name's first 32 bytes, space padded, as Linux fills it from
// utsname (a name-less system sends "(none)").
std::array<uint8_t, kHostnameSize> hostname_field(std::string_view name);

// Encoders. They assert on values that do not fit their fields or contradict the types
// offered (more than 8 UEIDs or IPv6 prefixes, nothing offered, version 1 with version 2
// parts, GIDs in an Accept or without first contact, 4-bit fields). A ProposalV2 of
// version 1 is written as clc::encode(Proposal) writes it. The SMC-D parts smcpre does
// not speak are written empty: no ISM GID or CHID, an SMC-D extension without devices.
std::vector<uint8_t> encode(const ProposalV2& proposal);
std::vector<uint8_t> encode_accept(const AcceptConfirmV2& accept);
std::vector<uint8_t> encode_confirm(const AcceptConfirmV2& confirm);
std::vector<uint8_t> encode(const DeclineV2& decline);

// Parses a Proposal of any version, the one call a server needs: version 1 by
// parse_proposal's rules, version 2 and later by Linux's (smc_clc_msg_prop_valid) plus
// the checks it leaves out: every offset points where the length says the part is, every
// count fits, every UEID is valid. The SMC-D area and extension are bounds-checked and
// their content ignored.
bool parse_any_proposal(std::span<const uint8_t> msg, ProposalV2* out, std::string* error);
// Version 2 and later, SMC-R (SMC-D ones are refused: smcpre declines them). On first
// contact the extension must be there, and only then; a Confirm's GID extension is
// optional.
bool parse_accept_v2(std::span<const uint8_t> msg, AcceptConfirmV2* out, std::string* error);
bool parse_confirm_v2(std::span<const uint8_t> msg, AcceptConfirmV2* out, std::string* error);
// Version 2 and later, 44 bytes, SMC-R or SMC-D.
bool parse_decline_v2(std::span<const uint8_t> msg, DeclineV2* out, std::string* error);

}  // namespace smcpre::core::clc
