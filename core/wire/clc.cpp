#include "core/wire/clc.h"

#include <algorithm>
#include <cassert>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "core/wire/bytes.h"

namespace smcpre::core::clc {
namespace {

using wire::fail;
using wire::get_be16;
using wire::get_be24;
using wire::get_be32;
using wire::get_be64;
using wire::put_be16;
using wire::put_be24;
using wire::put_be32;
using wire::put_be64;

// Header byte 7: version in the high nibble, then two bits Linux calls typev2 and two it
// calls typev1. In a version 1 message the upper typev2 bit is the flag (first contact in
// Accept/Confirm, out of sync in Decline), the lower one is unused, and typev1 is the SMC
// type: 0 = SMC-R, 1 = SMC-D.
constexpr uint8_t kFlagBit = 0x08;
constexpr uint8_t kUnusedBit = 0x04;
constexpr uint8_t kSmcTypeMask = 0x03;
constexpr uint8_t kSmcTypeR = 0;
constexpr uint8_t kSmcTypeD = 1;

// Offsets shared by Proposal, Accept and Confirm: the "local" block follows the header.
constexpr size_t kOffPeerId = 8;
constexpr size_t kOffGid = 16;
constexpr size_t kOffMac = 32;
// Proposal. The IP area starts at kProposalBaseSize + IP area offset; its fields are
// relative to that start.
constexpr size_t kOffIpareaOffset = 38;
constexpr size_t kIpSubnet = 0;
constexpr size_t kIpPrefixLen = 4;
constexpr size_t kIpIpv6Count = 7;  // after 2 reserved bytes
constexpr size_t kIpIpv6Prefixes = kIpAreaSize;
// Accept / Confirm.
constexpr size_t kOffQpn = 38;
constexpr size_t kOffRkey = 41;
constexpr size_t kOffConnIdx = 45;
constexpr size_t kOffToken = 46;
constexpr size_t kOffSizeMtu = 50;  // RMBE size code high nibble, QP MTU low nibble
constexpr size_t kOffVaddr = 52;    // after 1 reserved byte
constexpr size_t kOffPsn = 61;      // after 1 reserved byte
// Decline.
constexpr size_t kOffDeclPeerId = 8;
constexpr size_t kOffDiagnosis = 16;

constexpr uint8_t kMinMtuCode = 1;  // IB_MTU_256
constexpr uint8_t kMaxMtuCode = 5;  // IB_MTU_4096
constexpr uint32_t kMinRmbeSize = 16 * 1024;

const char* type_name(Type type) {
  switch (type) {
    case Type::kProposal:
      return "Proposal";
    case Type::kAccept:
      return "Accept";
    case Type::kConfirm:
      return "Confirm";
    case Type::kDecline:
      return "Decline";
  }
  return "unknown";
}

bool known_type(uint8_t type) {
  return type >= 1 && type <= 4;
}

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
      return {kAcceptConfirmSize, kMaxMessageSize};
    case Type::kDecline:
      return {kDeclineSize, kDeclineV2Size};
  }
  return {0, 0};
}

// Version 1 lengths are exact (a Proposal's depends on its IPv6 prefix count, checked
// when parsing). Later versions only extend messages; bound them by what smcpre reads.
bool length_possible(Type type, uint8_t version, size_t length) {
  if (version == 1) {
    switch (type) {
      case Type::kProposal:
        return length >= kProposalMinSize && length <= kMaxMessageSize;
      case Type::kAccept:
      case Type::kConfirm:
        return length == kAcceptConfirmSize;
      case Type::kDecline:
        return length == kDeclineSize;
    }
    return false;
  }
  if (type == Type::kDecline) return length == kDeclineV2Size;
  const LengthRange r = any_version_range(type);
  return length >= r.min && length <= r.max;
}

// Checks what every message type shares: header size, eyecatcher, type, and that the
// span holds exactly the message its length field announces. Fills *hdr.
bool check_frame(std::span<const uint8_t> msg, Type expected, Header* hdr, std::string* error) {
  if (msg.size() < kHeaderSize) {
    return fail(error, "truncated: %zu bytes, a CLC header needs %zu", msg.size(), kHeaderSize);
  }
  if (!std::equal(kEyecatcher.begin(), kEyecatcher.end(), msg.begin())) {
    return fail(error, "bad eyecatcher %02x %02x %02x %02x", msg[0], msg[1], msg[2], msg[3]);
  }
  if (msg[4] != static_cast<uint8_t>(expected)) {
    if (!known_type(msg[4])) return fail(error, "unknown CLC type %u", msg[4]);
    return fail(error, "expected %s, got %s", type_name(expected),
                type_name(static_cast<Type>(msg[4])));
  }
  const uint16_t length = get_be16(&msg[5]);
  if (msg.size() < length) {
    return fail(error, "truncated: %zu of %u bytes", msg.size(), length);
  }
  if (msg.size() > length) {
    return fail(error, "%zu bytes given for a %s of length %u", msg.size(), type_name(expected),
                length);
  }
  hdr->type = expected;
  hdr->length = length;
  hdr->version = msg[7] >> 4;
  hdr->flag = (msg[7] & kFlagBit) != 0;
  return true;
}

bool check_trailer(std::span<const uint8_t> msg, std::string* error) {
  if (!std::equal(kEyecatcher.begin(), kEyecatcher.end(), msg.end() - kTrailerSize)) {
    return fail(error, "bad trailer");
  }
  return true;
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

void put_header(uint8_t* p, Type type, size_t length, bool flag) {
  std::memcpy(p, kEyecatcher.data(), kEyecatcher.size());
  p[4] = static_cast<uint8_t>(type);
  put_be16(p + 5, static_cast<uint16_t>(length));
  p[7] = static_cast<uint8_t>(kVersion << 4 | (flag ? kFlagBit : 0) | kSmcTypeR);
}

void put_trailer(std::vector<uint8_t>& out) {
  std::memcpy(out.data() + out.size() - kTrailerSize, kEyecatcher.data(), kTrailerSize);
}

void put_local(uint8_t* p, const LocalInfo& local) {
  std::memcpy(p + kOffPeerId, local.peer_id.data(), local.peer_id.size());
  std::memcpy(p + kOffGid, local.gid.data(), local.gid.size());
  std::memcpy(p + kOffMac, local.mac.data(), local.mac.size());
}

void get_local(const uint8_t* p, LocalInfo* local) {
  std::memcpy(local->peer_id.data(), p + kOffPeerId, local->peer_id.size());
  std::memcpy(local->gid.data(), p + kOffGid, local->gid.size());
  std::memcpy(local->mac.data(), p + kOffMac, local->mac.size());
}

std::vector<uint8_t> encode_accept_confirm(Type type, const AcceptConfirm& m) {
  assert(m.qp_num <= 0xffffff);
  assert(m.psn <= 0xffffff);
  assert(m.rmbe_size_code <= kMaxRmbeSizeCode);
  assert(m.qp_mtu >= kMinMtuCode && m.qp_mtu <= kMaxMtuCode);
  std::vector<uint8_t> out(kAcceptConfirmSize, 0);
  uint8_t* p = out.data();
  put_header(p, type, out.size(), m.first_contact);
  put_local(p, m.local);
  put_be24(p + kOffQpn, m.qp_num);
  put_be32(p + kOffRkey, m.rmb_rkey);
  p[kOffConnIdx] = m.conn_idx;
  put_be32(p + kOffToken, m.rmbe_alert_token);
  p[kOffSizeMtu] = static_cast<uint8_t>((m.rmbe_size_code & 0x0f) << 4 | (m.qp_mtu & 0x0f));
  put_be64(p + kOffVaddr, m.rmb_vaddr);
  put_be24(p + kOffPsn, m.psn);
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
  const uint8_t* p = msg.data();
  const uint8_t mtu = p[kOffSizeMtu] & 0x0f;
  if (mtu < kMinMtuCode || mtu > kMaxMtuCode) return fail(error, "bad QP MTU code %u", mtu);
  // Linux places the peer's data at (index - 1) * RMBE size: index 0 does not exist.
  if (p[kOffConnIdx] == 0) return fail(error, "bad RMBE index 0");
  AcceptConfirm m;
  m.first_contact = hdr.flag;
  get_local(p, &m.local);
  m.qp_num = get_be24(p + kOffQpn);
  m.rmb_rkey = get_be32(p + kOffRkey);
  m.conn_idx = p[kOffConnIdx];
  m.rmbe_alert_token = get_be32(p + kOffToken);
  m.rmbe_size_code = p[kOffSizeMtu] >> 4;
  m.qp_mtu = mtu;
  m.rmb_vaddr = get_be64(p + kOffVaddr);
  m.psn = get_be24(p + kOffPsn);
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
  if (!known_type(bytes[4])) return HeaderResult::kNotClc;
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
  out->version = version;
  out->flag = (bytes[7] & kFlagBit) != 0;
  return HeaderResult::kOk;
}

std::vector<uint8_t> encode(const Proposal& m) {
  assert(m.ipv4_prefix_len <= 32);
  assert(m.ipv6_prefixes.size() <= kMaxIpv6Prefixes);
  const size_t count = std::min(m.ipv6_prefixes.size(), kMaxIpv6Prefixes);
  std::vector<uint8_t> out(kProposalSize + count * kIpv6PrefixSize, 0);
  uint8_t* p = out.data();
  put_header(p, Type::kProposal, out.size(), false);
  put_local(p, m.local);
  // The SMC-D area stays zero: no ISM GID/CHID (SMC-D is not offered) and no version 2
  // extension offset, as in what Linux sends when it proposes SMC-R only.
  put_be16(p + kOffIpareaOffset, static_cast<uint16_t>(kSmcdAreaSize));
  uint8_t* ip = p + kProposalBaseSize + kSmcdAreaSize;
  std::memcpy(ip + kIpSubnet, &m.ipv4_subnet_be, sizeof(m.ipv4_subnet_be));  // already BE
  ip[kIpPrefixLen] = m.ipv4_prefix_len;
  ip[kIpIpv6Count] = static_cast<uint8_t>(count);
  for (size_t i = 0; i < count; ++i) {
    const Ipv6Prefix& prefix = m.ipv6_prefixes[i];
    assert(prefix.prefix_len <= 128);
    uint8_t* q = ip + kIpIpv6Prefixes + i * kIpv6PrefixSize;
    std::memcpy(q, prefix.prefix.data(), prefix.prefix.size());
    q[prefix.prefix.size()] = prefix.prefix_len;
  }
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
  put_header(p, Type::kDecline, out.size(), m.out_of_sync);
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
  if (hdr.length > kMaxMessageSize) {
    return fail(error, "length %u > %zu for Proposal", hdr.length, kMaxMessageSize);
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
  const uint8_t count = ip[kIpIpv6Count];
  if (count > kMaxIpv6Prefixes) return fail(error, "too many IPv6 prefixes (%u)", count);
  const size_t expected = ip_start + kIpAreaSize + count * kIpv6PrefixSize + kTrailerSize;
  if (hdr.length != expected) {
    return fail(error, "length %u != %zu for Proposal with IP area offset %u and %u IPv6 prefixes",
                hdr.length, expected, iparea_offset, count);
  }
  if (!check_trailer(msg, error)) return false;
  if (ip[kIpPrefixLen] > 32) return fail(error, "bad IPv4 prefix length %u", ip[kIpPrefixLen]);
  Proposal m;
  get_local(p, &m.local);
  std::memcpy(&m.ipv4_subnet_be, ip + kIpSubnet, sizeof(m.ipv4_subnet_be));
  m.ipv4_prefix_len = ip[kIpPrefixLen];
  m.ipv6_prefixes.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* q = ip + kIpIpv6Prefixes + i * kIpv6PrefixSize;
    Ipv6Prefix& prefix = m.ipv6_prefixes[i];
    std::memcpy(prefix.prefix.data(), q, prefix.prefix.size());
    prefix.prefix_len = q[prefix.prefix.size()];
    if (prefix.prefix_len > 128) {
      return fail(error, "bad IPv6 prefix length %u", prefix.prefix_len);
    }
  }
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
