// The Proposal of CLC version 2 (core/wire/clc_v2.h). The layout, as Linux writes it
// (smc_clc_send_proposal):
//   0  header; byte 7 = version << 4 | v2 type << 2 | v1 type
//   8  local block (zero unless SMC-R version 1 is offered), 38 IP area offset
//  40  SMC-D area (40): ISM GID and CHID, at 50 the offset of the version 2 extension
//      (counted from byte 52), vendor bytes, reserved
//  80  IP area, when version 1 is offered (IP area offset 40)
//      version 2 extension, when version 2 is offered: 0 UEID count, 1 ISM GID count,
//      3 release << 4 | SEID flag, 6 offset of the SMC-D extension (counted from 8 bytes
//      in), 8 RoCE v2 GID, 24 max conns, 25 max links, 26 feature mask, 40 the UEIDs
//      SMC-D extension, when SMC-Dv2 is offered: system EID, reserved, 10 bytes per device
//      trailer
// Linux checks only that the length is the sum of the parts; this parser also holds
// every offset to the place that sum implies, so no part can overlap another.
#include <cassert>
#include <cstring>

#include "core/wire/bytes.h"
#include "core/wire/clc_frame.h"
#include "core/wire/clc_v2.h"

namespace smcpre::core::clc {
namespace {

using wire::fail;
using wire::get_be16;
using wire::put_be16;

// SMC-D area.
constexpr size_t kOffV2ExtOffset = kSmcdAreaOffset + 10;
constexpr size_t kV2ExtOffsetBase = kOffV2ExtOffset + 2;  // what that offset counts from
// Version 2 extension, relative to its start.
constexpr size_t kExtEidCount = 0;
constexpr size_t kExtIsmGidCount = 1;
constexpr size_t kExtFlags = 3;  // release in the high nibble, SEID in bit 0
constexpr size_t kExtSmcdOffset = 6;
constexpr size_t kExtSmcdOffsetBase = 8;  // what that offset counts from
constexpr size_t kExtRoceGid = 8;
constexpr size_t kExtMaxConns = 24;
constexpr size_t kExtMaxLinks = 25;
constexpr size_t kExtFeatureMask = 26;
constexpr uint8_t kSeidBit = 0x01;

// Where the parts of a version 2 Proposal lie, from the types it offers and its counts.
struct Layout {
  size_t ip_area = 0;      // 0: none
  size_t v2_ext = 0;       // 0: none
  size_t smcd_v2_ext = 0;  // 0: none
  size_t length = 0;       // of the whole message
};

Layout layout_of(SmcType v1, SmcType v2, size_t ipv6_count, size_t eid_count, size_t ism_count) {
  Layout l;
  size_t at = kSmcdAreaOffset + kSmcdAreaSize;
  if (v1 != SmcType::kNone) {
    l.ip_area = at;
    at += kIpAreaSize + ipv6_count * kIpv6PrefixSize;
  }
  if (v2 != SmcType::kNone) {
    l.v2_ext = at;
    at += kV2ExtensionSize + eid_count * kEidSize;
    if (offers_d(v2)) {
      l.smcd_v2_ext = at;
      at += kSmcdV2ExtensionSize + ism_count * kIsmGidChidSize;
    }
  }
  l.length = at + kTrailerSize;
  return l;
}

const char* type_text(SmcType t) {
  switch (t) {
    case SmcType::kR:
      return "SMC-R";
    case SmcType::kD:
      return "SMC-D";
    case SmcType::kNone:
      return "none";
    case SmcType::kBoth:
      return "SMC-R and SMC-D";
  }
  return "?";
}

std::vector<uint8_t> encode_v2(const ProposalV2& m) {
  assert(m.version >= kVersion2 && m.version <= 0x0f);
  assert(m.v1_type != SmcType::kNone || m.v2_type != SmcType::kNone);
  assert(m.v2.ueids.size() <= kMaxUeids);
  assert(m.v2.release <= 0x0f);
  const size_t ipv6_count = std::min(m.ipv6_prefixes.size(), kMaxIpv6Prefixes);
  const size_t eid_count = std::min(m.v2.ueids.size(), kMaxUeids);
  const Layout l = layout_of(m.v1_type, m.v2_type, ipv6_count, eid_count, 0);
  std::vector<uint8_t> out(l.length, 0);
  uint8_t* p = out.data();
  frame::put_header(
      p, Type::kProposal, out.size(),
      static_cast<uint8_t>(m.version << 4 | static_cast<uint8_t>(m.v2_type) << frame::kTypeV2Shift |
                           static_cast<uint8_t>(m.v1_type)));
  frame::put_local(p, m.local);
  if (l.ip_area != 0) {
    put_be16(p + frame::kOffIpareaOffset, static_cast<uint16_t>(kSmcdAreaSize));
    frame::put_ip_area(p + l.ip_area, m.ipv4_subnet_be, m.ipv4_prefix_len, m.ipv6_prefixes);
  }
  if (l.v2_ext != 0) {
    put_be16(p + kOffV2ExtOffset, static_cast<uint16_t>(l.v2_ext - kV2ExtOffsetBase));
    uint8_t* ext = p + l.v2_ext;
    ext[kExtEidCount] = static_cast<uint8_t>(eid_count);
    ext[kExtFlags] = static_cast<uint8_t>(m.v2.release << 4 | (m.v2.seid ? kSeidBit : 0));
    if (l.smcd_v2_ext != 0) {
      // An SMC-D extension without devices: smcpre has none to offer.
      put_be16(ext + kExtSmcdOffset,
               static_cast<uint16_t>(l.smcd_v2_ext - l.v2_ext - kExtSmcdOffsetBase));
    }
    std::memcpy(ext + kExtRoceGid, m.v2.roce_gid.data(), m.v2.roce_gid.size());
    ext[kExtMaxConns] = m.v2.max_conns;
    ext[kExtMaxLinks] = m.v2.max_links;
    put_be16(ext + kExtFeatureMask, m.v2.feature_mask);
    for (size_t i = 0; i < eid_count; ++i) {
      std::memcpy(ext + kV2ExtensionSize + i * kEidSize, m.v2.ueids[i].bytes.data(), kEidSize);
    }
  }
  frame::put_trailer(out);
  return out;
}

// A version 1 Proposal, as the version 2 form describes it.
bool parse_v1(std::span<const uint8_t> msg, ProposalV2* out, std::string* error) {
  Proposal v1;
  if (!parse_proposal(msg, &v1, error)) return false;
  ProposalV2 m;
  m.version = kVersion;
  m.v1_type = SmcType::kR;
  m.v2_type = SmcType::kNone;
  m.local = v1.local;
  m.ipv4_subnet_be = v1.ipv4_subnet_be;
  m.ipv4_prefix_len = v1.ipv4_prefix_len;
  m.ipv6_prefixes = std::move(v1.ipv6_prefixes);
  *out = std::move(m);
  return true;
}

// Checks that the part `what` of `size` bytes at `at` ends before the trailer.
bool fits(size_t at, size_t size, const Header& hdr, const char* what, std::string* error) {
  if (at + size + kTrailerSize > hdr.length) {
    return fail(error, "length %u too short for the %s at %zu", hdr.length, what, at);
  }
  return true;
}

bool parse_v2_extension(const uint8_t* ext, ProposalV2* m, std::string* error) {
  m->v2.release = ext[kExtFlags] >> 4;
  m->v2.seid = (ext[kExtFlags] & kSeidBit) != 0;
  std::memcpy(m->v2.roce_gid.data(), ext + kExtRoceGid, m->v2.roce_gid.size());
  m->v2.max_conns = ext[kExtMaxConns];
  m->v2.max_links = ext[kExtMaxLinks];
  m->v2.feature_mask = get_be16(ext + kExtFeatureMask);
  m->v2.ueids.resize(ext[kExtEidCount]);
  for (size_t i = 0; i < m->v2.ueids.size(); ++i) {
    Eid& eid = m->v2.ueids[i];
    std::memcpy(eid.bytes.data(), ext + kV2ExtensionSize + i * kEidSize, kEidSize);
    std::string why;
    if (!valid_eid(eid, error ? &why : nullptr)) {
      return fail(error, "UEID %zu: %s", i + 1, why.c_str());
    }
  }
  return true;
}

bool parse_v2(std::span<const uint8_t> msg, const Header& hdr, ProposalV2* out,
              std::string* error) {
  ProposalV2 m;
  m.version = hdr.version;
  m.v1_type = static_cast<SmcType>(hdr.typev1);
  m.v2_type = static_cast<SmcType>(hdr.typev2);
  if (m.v1_type == SmcType::kNone && m.v2_type == SmcType::kNone) {
    return fail(error, "Proposal offers neither SMC version 1 nor 2");
  }
  const uint8_t* p = msg.data();
  if (!fits(kSmcdAreaOffset, kSmcdAreaSize, hdr, "SMC-D area", error)) return false;
  // Linux reads the IP area at 40 + this offset, and refuses more than 40; it writes 40
  // when it offers version 1 (the IP area after the SMC-D area it always sends) and 0
  // otherwise, when nothing reads it.
  const uint16_t iparea_offset = get_be16(p + frame::kOffIpareaOffset);
  if (iparea_offset > kSmcdAreaSize) {
    return fail(error, "IP area offset %u > %zu", iparea_offset, kSmcdAreaSize);
  }
  size_t ipv6_count = 0;
  if (m.v1_type != SmcType::kNone) {
    if (iparea_offset != kSmcdAreaSize) {
      return fail(error, "IP area offset %u, not %zu after the SMC-D area", iparea_offset,
                  kSmcdAreaSize);
    }
    const size_t at = kSmcdAreaOffset + kSmcdAreaSize;
    if (!fits(at, kIpAreaSize, hdr, "IP area", error)) return false;
    ipv6_count = frame::ipv6_prefix_count(p + at);
    if (ipv6_count > kMaxIpv6Prefixes) {
      return fail(error, "too many IPv6 prefixes (%zu)", ipv6_count);
    }
  }
  size_t eid_count = 0;
  size_t ism_count = 0;
  Layout l = layout_of(m.v1_type, m.v2_type, ipv6_count, 0, 0);
  if (l.v2_ext != 0) {
    const uint16_t offset = get_be16(p + kOffV2ExtOffset);
    if (offset != l.v2_ext - kV2ExtOffsetBase) {
      return fail(error, "version 2 extension offset %u, not %zu (right after the %s)", offset,
                  l.v2_ext - kV2ExtOffsetBase, l.ip_area != 0 ? "IP area" : "SMC-D area");
    }
    if (!fits(l.v2_ext, kV2ExtensionSize, hdr, "version 2 extension", error)) return false;
    eid_count = p[l.v2_ext + kExtEidCount];
    if (eid_count > kMaxUeids) return fail(error, "too many UEIDs (%zu)", eid_count);
    if (offers_d(m.v2_type)) {
      ism_count = p[l.v2_ext + kExtIsmGidCount];
      if (ism_count > kMaxIsmGids) return fail(error, "too many ISM devices (%zu)", ism_count);
      l = layout_of(m.v1_type, m.v2_type, ipv6_count, eid_count, ism_count);
      const uint16_t smcd_offset = get_be16(p + l.v2_ext + kExtSmcdOffset);
      const size_t expected = l.smcd_v2_ext - l.v2_ext - kExtSmcdOffsetBase;
      if (smcd_offset != expected) {
        return fail(error, "SMC-D extension offset %u, not %zu (right after the UEIDs)",
                    smcd_offset, expected);
      }
    }
  }
  l = layout_of(m.v1_type, m.v2_type, ipv6_count, eid_count, ism_count);
  if (hdr.length != l.length) {
    return fail(error,
                "length %u != %zu for a version 2 Proposal offering %s (v1) and %s (v2) with "
                "%zu IPv6 prefixes, %zu UEIDs and %zu ISM devices",
                hdr.length, l.length, type_text(m.v1_type), type_text(m.v2_type), ipv6_count,
                eid_count, ism_count);
  }
  if (!frame::check_trailer(msg, error)) return false;
  frame::get_local(p, &m.local);
  if (l.ip_area != 0 && !frame::get_ip_area(p + l.ip_area, &m.ipv4_subnet_be, &m.ipv4_prefix_len,
                                            &m.ipv6_prefixes, error)) {
    return false;
  }
  if (l.v2_ext != 0 && !parse_v2_extension(p + l.v2_ext, &m, error)) return false;
  *out = std::move(m);
  return true;
}

}  // namespace

std::vector<uint8_t> encode(const ProposalV2& m) {
  if (m.version >= kVersion2) return encode_v2(m);
  assert(m.v1_type == SmcType::kR && m.v2_type == SmcType::kNone);
  Proposal v1;
  v1.local = m.local;
  v1.ipv4_subnet_be = m.ipv4_subnet_be;
  v1.ipv4_prefix_len = m.ipv4_prefix_len;
  v1.ipv6_prefixes = m.ipv6_prefixes;
  return encode(v1);
}

bool parse_any_proposal(std::span<const uint8_t> msg, ProposalV2* out, std::string* error) {
  Header hdr;
  if (!frame::check_frame(msg, Type::kProposal, &hdr, error)) return false;
  if (hdr.version == 0) return fail(error, "unsupported version 0");
  if (hdr.version == kVersion) return parse_v1(msg, out, error);
  return parse_v2(msg, hdr, out, error);
}

}  // namespace smcpre::core::clc
