#include "core/wire/clc.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "core/wire/bytes.h"
#include "core/wire/clc_frame.h"

namespace smcpre::core::clc {
namespace {

using frame::check_frame;
using frame::check_trailer;
using frame::kFlagBit;
using frame::kSmcTypeD;
using frame::kSmcTypeMask;
using frame::kSmcTypeR;
using frame::kUnusedBit;
using frame::put_trailer;
using frame::type_name;
using wire::fail;
using wire::get_be16;
using wire::get_be32;
using wire::put_be16;
using wire::put_be32;

using frame::kOffDeclPeerId;
using frame::kOffDiagnosis;
using frame::kOffIpareaOffset;

constexpr uint32_t kMinRmbeSize = 16 * 1024;

// The lengths a message of this type can have, whatever its version: the bounds used to
// recognise a CLC header before its version byte is available.
struct LengthRange {
  size_t min;
  size_t max;
};
LengthRange any_version_range(Type type) {
  switch (type) {
    case Type::kProposal:
      return {kProposalMinSize, kMaxMessageSize};
    case Type::kAccept:
    case Type::kConfirm:
      return {kAcceptConfirmSize, kMaxAcceptConfirmV2Size};
    case Type::kDecline:
      return {kDeclineSize, kDeclineV2Size};
  }
  return {0, 0};
}

// Version 1 lengths are exact (a Proposal's depends on its IPv6 prefix count, checked
// when parsing). Version 2 messages have extensions of their own sizes: bound them by the
// largest each type can have (core/wire/clc_v2.h). Linux treats every version above 2 as
// 2, and so does this.
bool length_possible(Type type, uint8_t version, size_t length) {
  if (version == 1) {
    switch (type) {
      case Type::kProposal:
        return length >= kProposalMinSize && length <= kMaxProposalV1Size;
      case Type::kAccept:
      case Type::kConfirm:
        return length == kAcceptConfirmSize;
      case Type::kDecline:
        return length == kDeclineSize;
    }
    return false;
  }
  switch (type) {
    case Type::kProposal:
      return length >= kProposalV2MinSize && length <= kMaxMessageSize;
    case Type::kAccept:
    case Type::kConfirm:
      return length >= kAcceptConfirmV2MinSize && length <= kMaxAcceptConfirmV2Size;
    case Type::kDecline:
      return length == kDeclineV2Size;
  }
  return false;
}

// Version 1, SMC-R: the only form smcpre speaks for Proposal/Accept/Confirm.
bool check_v1_smcr(std::span<const uint8_t> msg, const Header& hdr, uint8_t reserved_bits,
                   std::string* error) {
  if (hdr.version != kVersion) return fail(error, "unsupported version %u", hdr.version);
  if ((msg[7] & kSmcTypeMask) != kSmcTypeR) {
    return fail(error, "not SMC-R (SMC type %u)", msg[7] & kSmcTypeMask);
  }
  if ((msg[7] & reserved_bits) != 0) {
    return fail(error, "reserved header bits set (0x%02x)", msg[7] & reserved_bits);
  }
  return true;
}

uint8_t v1_type_byte(bool flag) {
  return static_cast<uint8_t>(kVersion << 4 | (flag ? kFlagBit : 0) | kSmcTypeR);
}

std::vector<uint8_t> encode_accept_confirm(Type type, const AcceptConfirm& m) {
  std::vector<uint8_t> out(kAcceptConfirmSize, 0);
  uint8_t* p = out.data();
  frame::put_header(p, type, out.size(), v1_type_byte(m.first_contact));
  frame::put_smcr_fields(p, m);
  put_trailer(out);
  return out;
}

bool parse_accept_confirm(std::span<const uint8_t> msg, Type type, AcceptConfirm* out,
                          std::string* error) {
  Header hdr;
  if (!check_frame(msg, type, &hdr, error)) return false;
  if (!check_v1_smcr(msg, hdr, kUnusedBit, error)) return false;
  if (hdr.length != kAcceptConfirmSize) {
    return fail(error, "length %u != %zu for %s", hdr.length, kAcceptConfirmSize, type_name(type));
  }
  if (!check_trailer(msg, error)) return false;
  AcceptConfirm m;
  m.first_contact = hdr.flag;
  if (!frame::get_smcr_fields(msg.data(), &m, error)) return false;
  *out = m;
  return true;
}

}  // namespace

HeaderResult parse_header(std::span<const uint8_t> bytes, Header* out) {
  const size_t n = std::min(bytes.size(), kHeaderSize);
  for (size_t i = 0; i < n && i < kEyecatcher.size(); ++i) {
    if (bytes[i] != kEyecatcher[i]) return HeaderResult::kNotClc;
  }
  if (n <= 4) return HeaderResult::kNeedMore;
  if (!frame::known_type(bytes[4])) return HeaderResult::kNotClc;
  const Type type = static_cast<Type>(bytes[4]);
  const LengthRange range = any_version_range(type);
  if (n == 5) return HeaderResult::kNeedMore;
  // With only the length's high byte, every length it allows may already be too long.
  if (static_cast<size_t>(bytes[5]) << 8 > range.max) return HeaderResult::kNotClc;
  if (n == 6) return HeaderResult::kNeedMore;
  const uint16_t length = get_be16(&bytes[5]);
  if (length < range.min || length > range.max) return HeaderResult::kNotClc;
  if (n == 7) return HeaderResult::kNeedMore;
  const uint8_t version = bytes[7] >> 4;
  if (version == 0 || !length_possible(type, version, length)) return HeaderResult::kNotClc;
  out->type = type;
  out->length = length;
  frame::split_type_byte(bytes[7], out);
  return HeaderResult::kOk;
}

std::vector<uint8_t> encode(const Proposal& m) {
  const size_t count = std::min(m.ipv6_prefixes.size(), kMaxIpv6Prefixes);
  std::vector<uint8_t> out(kProposalSize + count * kIpv6PrefixSize, 0);
  uint8_t* p = out.data();
  frame::put_header(p, Type::kProposal, out.size(), v1_type_byte(false));
  frame::put_local(p, m.local);
  // The SMC-D area stays zero: no ISM GID/CHID (SMC-D is not offered) and no version 2
  // extension offset, as in what Linux sends when it proposes SMC-R only.
  put_be16(p + kOffIpareaOffset, static_cast<uint16_t>(kSmcdAreaSize));
  frame::put_ip_area(p + kProposalBaseSize + kSmcdAreaSize, m.ipv4_subnet_be, m.ipv4_prefix_len,
                     m.ipv6_prefixes);
  put_trailer(out);
  return out;
}

std::vector<uint8_t> encode_accept(const AcceptConfirm& accept) {
  return encode_accept_confirm(Type::kAccept, accept);
}

std::vector<uint8_t> encode_confirm(const AcceptConfirm& confirm) {
  return encode_accept_confirm(Type::kConfirm, confirm);
}

std::vector<uint8_t> encode(const Decline& m) {
  std::vector<uint8_t> out(kDeclineSize, 0);
  uint8_t* p = out.data();
  frame::put_header(p, Type::kDecline, out.size(), v1_type_byte(m.out_of_sync));
  std::memcpy(p + kOffDeclPeerId, m.peer_id.data(), m.peer_id.size());
  put_be32(p + kOffDiagnosis, m.diagnosis);
  put_trailer(out);
  return out;
}

bool parse_proposal(std::span<const uint8_t> msg, Proposal* out, std::string* error) {
  Header hdr;
  if (!check_frame(msg, Type::kProposal, &hdr, error)) return false;
  // The flag bit means nothing in a Proposal: both typev2 bits must be clear.
  if (!check_v1_smcr(msg, hdr, kFlagBit | kUnusedBit, error)) return false;
  if (hdr.length < kProposalMinSize) {
    return fail(error, "length %u < %zu for Proposal", hdr.length, kProposalMinSize);
  }
  if (hdr.length > kMaxProposalV1Size) {
    return fail(error, "length %u > %zu for Proposal", hdr.length, kMaxProposalV1Size);
  }
  const uint8_t* p = msg.data();
  // 0: the IP area follows the offset field (RFC 7609); 40: after Linux's SMC-D area.
  // Linux takes anything up to the SMC-D area's size, and so do we: more would be a
  // layout nobody defines.
  const uint16_t iparea_offset = get_be16(p + kOffIpareaOffset);
  if (iparea_offset > kSmcdAreaSize) {
    return fail(error, "IP area offset %u > %zu", iparea_offset, kSmcdAreaSize);
  }
  const size_t ip_start = kProposalBaseSize + iparea_offset;
  if (hdr.length < ip_start + kIpAreaSize + kTrailerSize) {
    return fail(error, "length %u too short for an IP area at offset %u", hdr.length,
                iparea_offset);
  }
  const uint8_t* ip = p + ip_start;
  const uint8_t count = frame::ipv6_prefix_count(ip);
  if (count > kMaxIpv6Prefixes) return fail(error, "too many IPv6 prefixes (%u)", count);
  const size_t expected = ip_start + kIpAreaSize + count * kIpv6PrefixSize + kTrailerSize;
  if (hdr.length != expected) {
    return fail(error, "length %u != %zu for Proposal with IP area offset %u and %u IPv6 prefixes",
                hdr.length, expected, iparea_offset, count);
  }
  if (!check_trailer(msg, error)) return false;
  Proposal m;
  if (!frame::get_ip_area(ip, &m.ipv4_subnet_be, &m.ipv4_prefix_len, &m.ipv6_prefixes, error)) {
    return false;
  }
  frame::get_local(p, &m.local);
  *out = std::move(m);
  return true;
}

bool parse_accept(std::span<const uint8_t> msg, AcceptConfirm* out, std::string* error) {
  return parse_accept_confirm(msg, Type::kAccept, out, error);
}

bool parse_confirm(std::span<const uint8_t> msg, AcceptConfirm* out, std::string* error) {
  return parse_accept_confirm(msg, Type::kConfirm, out, error);
}

bool parse_decline(std::span<const uint8_t> msg, Decline* out, std::string* error) {
  Header hdr;
  if (!check_frame(msg, Type::kDecline, &hdr, error)) return false;
  if (hdr.version == 0) return fail(error, "unsupported version 0");
  // Whatever the peer's SMC type, a Decline means the same: fall back to TCP. Linux sends
  // SMC-R or SMC-D here, so both are taken; the unused bit is ignored like any reserved
  // field.
  const uint8_t smc_type = msg[7] & kSmcTypeMask;
  if (smc_type != kSmcTypeR && smc_type != kSmcTypeD) {
    return fail(error, "bad SMC type %u in Decline", smc_type);
  }
  const size_t expected = hdr.version == 1 ? kDeclineSize : kDeclineV2Size;
  if (hdr.length != expected) {
    return fail(error, "length %u != %zu for version %u Decline", hdr.length, expected,
                hdr.version);
  }
  if (!check_trailer(msg, error)) return false;
  Decline m;
  std::memcpy(m.peer_id.data(), msg.data() + kOffDeclPeerId, m.peer_id.size());
  m.diagnosis = get_be32(msg.data() + kOffDiagnosis);
  m.out_of_sync = hdr.flag;
  *out = m;
  return true;
}

uint8_t rmbe_size_code(uint32_t bytes) {
  for (uint8_t code = 0; code <= kMaxRmbeSizeCode; ++code) {
    if (bytes == kMinRmbeSize << code) return code;
  }
  return 0xFF;
}

uint32_t rmbe_size_bytes(uint8_t code) {
  return code <= kMaxRmbeSizeCode ? kMinRmbeSize << code : 0;
}

}  // namespace smcpre::core::clc
