#include "core/wire/clc_frame.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "core/wire/bytes.h"

namespace smcpre::core::clc::frame {
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

// Accept / Confirm, after the local block.
constexpr size_t kOffQpn = 38;
constexpr size_t kOffRkey = 41;
constexpr size_t kOffConnIdx = 45;
constexpr size_t kOffToken = 46;
constexpr size_t kOffSizeMtu = 50;  // RMBE size code high nibble, QP MTU low nibble
constexpr size_t kOffVaddr = 52;    // after 1 reserved byte
constexpr size_t kOffPsn = 61;      // after 1 reserved byte

// The IP area of a Proposal.
constexpr size_t kIpSubnet = 0;
constexpr size_t kIpPrefixLen = 4;
constexpr size_t kIpIpv6Count = 7;  // after 2 reserved bytes
constexpr size_t kIpIpv6Prefixes = kIpAreaSize;

constexpr uint8_t kMinMtuCode = 1;  // IB_MTU_256
constexpr uint8_t kMaxMtuCode = 5;  // IB_MTU_4096

}  // namespace

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

void split_type_byte(uint8_t byte7, Header* hdr) {
  hdr->version = byte7 >> 4;
  hdr->flag = (byte7 & kFlagBit) != 0;
  hdr->typev1 = byte7 & kSmcTypeMask;
  hdr->typev2 = (byte7 >> kTypeV2Shift) & kSmcTypeMask;
}

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
  split_type_byte(msg[7], hdr);
  return true;
}

bool check_trailer(std::span<const uint8_t> msg, std::string* error) {
  if (!std::equal(kEyecatcher.begin(), kEyecatcher.end(), msg.end() - kTrailerSize)) {
    return fail(error, "bad trailer");
  }
  return true;
}

void put_header(uint8_t* p, Type type, size_t length, uint8_t byte7) {
  std::memcpy(p, kEyecatcher.data(), kEyecatcher.size());
  p[4] = static_cast<uint8_t>(type);
  put_be16(p + 5, static_cast<uint16_t>(length));
  p[7] = byte7;
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

uint8_t ipv6_prefix_count(const uint8_t* ip) {
  return ip[kIpIpv6Count];
}

void put_ip_area(uint8_t* ip, uint32_t subnet_be, uint8_t prefix_len,
                 std::span<const Ipv6Prefix> ipv6_prefixes) {
  assert(prefix_len <= 32);
  assert(ipv6_prefixes.size() <= kMaxIpv6Prefixes);
  const size_t count = std::min(ipv6_prefixes.size(), kMaxIpv6Prefixes);
  std::memcpy(ip + kIpSubnet, &subnet_be, sizeof(subnet_be));  // already big-endian
  ip[kIpPrefixLen] = prefix_len;
  ip[kIpIpv6Count] = static_cast<uint8_t>(count);
  for (size_t i = 0; i < count; ++i) {
    const Ipv6Prefix& prefix = ipv6_prefixes[i];
    assert(prefix.prefix_len <= 128);
    uint8_t* q = ip + kIpIpv6Prefixes + i * kIpv6PrefixSize;
    std::memcpy(q, prefix.prefix.data(), prefix.prefix.size());
    q[prefix.prefix.size()] = prefix.prefix_len;
  }
}

bool get_ip_area(const uint8_t* ip, uint32_t* subnet_be, uint8_t* prefix_len,
                 std::vector<Ipv6Prefix>* ipv6_prefixes, std::string* error) {
  if (ip[kIpPrefixLen] > 32) return fail(error, "bad IPv4 prefix length %u", ip[kIpPrefixLen]);
  std::memcpy(subnet_be, ip + kIpSubnet, sizeof(*subnet_be));
  *prefix_len = ip[kIpPrefixLen];
  const size_t count = ip[kIpIpv6Count];
  ipv6_prefixes->resize(count);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* q = ip + kIpIpv6Prefixes + i * kIpv6PrefixSize;
    Ipv6Prefix& prefix = (*ipv6_prefixes)[i];
    std::memcpy(prefix.prefix.data(), q, prefix.prefix.size());
    prefix.prefix_len = q[prefix.prefix.size()];
    if (prefix.prefix_len > 128) {
      return fail(error, "bad IPv6 prefix length %u", prefix.prefix_len);
    }
  }
  return true;
}

void put_smcr_fields(uint8_t* p, const AcceptConfirm& m) {
  assert(m.qp_num <= 0xffffff);
  assert(m.psn <= 0xffffff);
  assert(m.rmbe_size_code <= kMaxRmbeSizeCode);
  assert(m.qp_mtu >= kMinMtuCode && m.qp_mtu <= kMaxMtuCode);
  put_local(p, m.local);
  put_be24(p + kOffQpn, m.qp_num);
  put_be32(p + kOffRkey, m.rmb_rkey);
  p[kOffConnIdx] = m.conn_idx;
  put_be32(p + kOffToken, m.rmbe_alert_token);
  p[kOffSizeMtu] = static_cast<uint8_t>((m.rmbe_size_code & 0x0f) << 4 | (m.qp_mtu & 0x0f));
  put_be64(p + kOffVaddr, m.rmb_vaddr);
  put_be24(p + kOffPsn, m.psn);
}

bool get_smcr_fields(const uint8_t* p, AcceptConfirm* m, std::string* error) {
  const uint8_t mtu = p[kOffSizeMtu] & 0x0f;
  if (mtu < kMinMtuCode || mtu > kMaxMtuCode) return fail(error, "bad QP MTU code %u", mtu);
  // Linux places the peer's data at (index - 1) * RMBE size: index 0 does not exist.
  if (p[kOffConnIdx] == 0) return fail(error, "bad RMBE index 0");
  get_local(p, &m->local);
  m->qp_num = get_be24(p + kOffQpn);
  m->rmb_rkey = get_be32(p + kOffRkey);
  m->conn_idx = p[kOffConnIdx];
  m->rmbe_alert_token = get_be32(p + kOffToken);
  m->rmbe_size_code = p[kOffSizeMtu] >> 4;
  m->qp_mtu = mtu;
  m->rmb_vaddr = get_be64(p + kOffVaddr);
  m->psn = get_be24(p + kOffPsn);
  return true;
}

}  // namespace smcpre::core::clc::frame
