// Accept, Confirm and Decline of CLC version 2 (core/wire/clc_v2.h). An SMC-R
// Accept/Confirm, as Linux writes it (smcr_clc_prep_confirm_accept):
//   0   header; byte 7 = version << 4 | first contact (0x08) | SMC type R (0)
//   8   the version 1 fields: local block, QP, RMB, token, sizes, PSN (to 64)
//   64  the negotiated EID (32), 8 reserved                              -> 108 with trailer
//   104 on first contact, the first-contact extension (52): 0 bit 7 "direct", 1 OS type
//       << 4 | release, 4 host name (32), 36 max conns, 37 max links, 38 feature mask,
//       40 vendor options (u32), 8 reserved                               -> 160
//   156 a first-contact Confirm adds the GID extension: GID count, 3 reserved, the GIDs
//       trailer
// A version 2 Decline is the version 1 one with the OS type in the high nibble of byte 20
// and four more diagnosis words before the trailer.
#include <algorithm>
#include <cassert>
#include <cstring>

#include "core/wire/bytes.h"
#include "core/wire/clc_frame.h"
#include "core/wire/clc_v2.h"

namespace smcpre::core::clc {
namespace {

using wire::fail;
using wire::get_be16;
using wire::get_be32;
using wire::put_be16;
using wire::put_be32;

constexpr size_t kOffEid = frame::kSmcrBodyEnd;                  // 64
constexpr size_t kOffFce = kAcceptConfirmV2Size - kTrailerSize;  // 104
constexpr size_t kOffGidExt = kOffFce + kFirstContactExtSize;    // 156
// First-contact extension, relative to its start.
constexpr size_t kFceDirect = 0;  // bit 7
constexpr uint8_t kDirectBit = 0x80;
constexpr size_t kFceOsRelease = 1;
constexpr size_t kFceHostname = 4;
constexpr size_t kFceMaxConns = 36;
constexpr size_t kFceMaxLinks = 37;
constexpr size_t kFceFeatureMask = 38;
constexpr size_t kFceVendorOptions = 40;
// Decline.
constexpr size_t kOffDeclOsType = 20;  // high nibble
constexpr size_t kOffMoreDiagnosis = 24;

uint8_t type_byte(uint8_t version, bool flag, uint8_t smc_type) {
  assert(version >= kVersion2 && version <= 0x0f);
  return static_cast<uint8_t>(version << 4 | (flag ? frame::kFlagBit : 0) | smc_type);
}

std::vector<uint8_t> encode_accept_confirm(Type type, const AcceptConfirmV2& m) {
  const bool first = m.smcr.first_contact;
  assert(type == Type::kConfirm || m.gids.empty());
  assert(first || m.gids.empty());
  assert(m.gids.size() <= kMaxConfirmGids);
  assert(m.fce.os_type <= 0x0f && m.fce.release <= 0x0f);
  size_t length = first ? kAcceptV2FirstContactSize : kAcceptConfirmV2Size;
  if (!m.gids.empty()) length += kGidExtHeaderSize + m.gids.size() * rdma::Gid{}.size();
  std::vector<uint8_t> out(length, 0);
  uint8_t* p = out.data();
  frame::put_header(p, type, length, type_byte(m.version, first, frame::kSmcTypeR));
  frame::put_smcr_fields(p, m.smcr);
  std::memcpy(p + kOffEid, m.eid.bytes.data(), kEidSize);
  if (first) {
    uint8_t* fce = p + kOffFce;
    fce[kFceDirect] = m.fce.v2_direct ? kDirectBit : 0;
    fce[kFceOsRelease] = static_cast<uint8_t>(m.fce.os_type << 4 | m.fce.release);
    std::memcpy(fce + kFceHostname, m.fce.hostname.data(), kHostnameSize);
    fce[kFceMaxConns] = m.fce.max_conns;
    fce[kFceMaxLinks] = m.fce.max_links;
    put_be16(fce + kFceFeatureMask, m.fce.feature_mask);
    put_be32(fce + kFceVendorOptions, m.fce.vendor_options);
  }
  if (!m.gids.empty()) {
    uint8_t* gle = p + kOffGidExt;
    gle[0] = static_cast<uint8_t>(m.gids.size());
    for (size_t i = 0; i < m.gids.size(); ++i) {
      std::memcpy(gle + kGidExtHeaderSize + i * m.gids[i].size(), m.gids[i].data(),
                  m.gids[i].size());
    }
  }
  frame::put_trailer(out);
  return out;
}

// The length a message of this type must have, given the header and (for a first-contact
// Confirm longer than 160 bytes) its GID count; false with a reason if no length can fit.
bool expected_length(std::span<const uint8_t> msg, Type type, const Header& hdr, size_t* length,
                     std::string* error) {
  if (!hdr.flag) {
    *length = kAcceptConfirmV2Size;
    return true;
  }
  *length = kAcceptV2FirstContactSize;
  // Linux sends the GID extension in every first-contact Confirm and reads it nowhere;
  // one without it is taken too.
  if (type == Type::kAccept || hdr.length <= kAcceptV2FirstContactSize) return true;
  if (hdr.length < kAcceptV2FirstContactSize + kGidExtHeaderSize) {
    return fail(error, "length %u too short for a GID extension", hdr.length);
  }
  const size_t count = msg[kOffGidExt];
  if (count == 0) return fail(error, "GID extension without GIDs");
  if (count > kMaxConfirmGids) return fail(error, "too many GIDs (%zu)", count);
  *length += kGidExtHeaderSize + count * rdma::Gid{}.size();
  return true;
}

bool parse_accept_confirm(std::span<const uint8_t> msg, Type type, AcceptConfirmV2* out,
                          std::string* error) {
  Header hdr;
  if (!frame::check_frame(msg, type, &hdr, error)) return false;
  if (hdr.version < kVersion2) {
    return fail(error, "version %u, not a version 2 %s", hdr.version, frame::type_name(type));
  }
  if (hdr.typev1 != frame::kSmcTypeR) return fail(error, "not SMC-R (SMC type %u)", hdr.typev1);
  if ((msg[7] & frame::kUnusedBit) != 0) {
    return fail(error, "reserved header bits set (0x%02x)", msg[7] & frame::kUnusedBit);
  }
  if (hdr.length < kAcceptConfirmV2Size) {
    return fail(error, "length %u < %zu for a version 2 %s", hdr.length, kAcceptConfirmV2Size,
                frame::type_name(type));
  }
  size_t length = 0;
  if (!expected_length(msg, type, hdr, &length, error)) return false;
  if (hdr.length != length) {
    return fail(error, "length %u != %zu for a version 2 %s%s", hdr.length, length,
                frame::type_name(type), hdr.flag ? " on first contact" : "");
  }
  if (!frame::check_trailer(msg, error)) return false;
  const uint8_t* p = msg.data();
  AcceptConfirmV2 m;
  m.version = hdr.version;
  m.smcr.first_contact = hdr.flag;
  if (!frame::get_smcr_fields(p, &m.smcr, error)) return false;
  std::memcpy(m.eid.bytes.data(), p + kOffEid, kEidSize);
  if (!valid_eid(m.eid, error)) return false;
  if (hdr.flag) {
    const uint8_t* fce = p + kOffFce;
    m.fce.v2_direct = (fce[kFceDirect] & kDirectBit) != 0;
    m.fce.os_type = fce[kFceOsRelease] >> 4;
    m.fce.release = fce[kFceOsRelease] & 0x0f;
    std::memcpy(m.fce.hostname.data(), fce + kFceHostname, kHostnameSize);
    m.fce.max_conns = fce[kFceMaxConns];
    m.fce.max_links = fce[kFceMaxLinks];
    m.fce.feature_mask = get_be16(fce + kFceFeatureMask);
    m.fce.vendor_options = get_be32(fce + kFceVendorOptions);
  }
  if (hdr.length > kAcceptV2FirstContactSize) {
    m.gids.resize(p[kOffGidExt]);
    for (size_t i = 0; i < m.gids.size(); ++i) {
      std::memcpy(m.gids[i].data(), p + kOffGidExt + kGidExtHeaderSize + i * m.gids[i].size(),
                  m.gids[i].size());
    }
  }
  *out = std::move(m);
  return true;
}

}  // namespace

std::array<uint8_t, kHostnameSize> hostname_field(std::string_view name) {
  std::array<uint8_t, kHostnameSize> field;
  field.fill(' ');
  std::memcpy(field.data(), name.data(), std::min(name.size(), field.size()));
  return field;
}

std::vector<uint8_t> encode_accept(const AcceptConfirmV2& accept) {
  return encode_accept_confirm(Type::kAccept, accept);
}

std::vector<uint8_t> encode_confirm(const AcceptConfirmV2& confirm) {
  return encode_accept_confirm(Type::kConfirm, confirm);
}

std::vector<uint8_t> encode(const DeclineV2& m) {
  assert(m.os_type <= 0x0f);
  std::vector<uint8_t> out(kDeclineV2Size, 0);
  uint8_t* p = out.data();
  // Linux leaves the SMC type at 0 (SMC-R) in every Decline.
  frame::put_header(p, Type::kDecline, out.size(),
                    type_byte(m.version, m.out_of_sync, frame::kSmcTypeR));
  std::memcpy(p + frame::kOffDeclPeerId, m.peer_id.data(), m.peer_id.size());
  put_be32(p + frame::kOffDiagnosis, m.diagnosis);
  p[kOffDeclOsType] = static_cast<uint8_t>(m.os_type << 4);
  for (size_t i = 0; i < m.more_diagnosis.size(); ++i) {
    put_be32(p + kOffMoreDiagnosis + 4 * i, m.more_diagnosis[i]);
  }
  frame::put_trailer(out);
  return out;
}

bool parse_accept_v2(std::span<const uint8_t> msg, AcceptConfirmV2* out, std::string* error) {
  return parse_accept_confirm(msg, Type::kAccept, out, error);
}

bool parse_confirm_v2(std::span<const uint8_t> msg, AcceptConfirmV2* out, std::string* error) {
  return parse_accept_confirm(msg, Type::kConfirm, out, error);
}

bool parse_decline_v2(std::span<const uint8_t> msg, DeclineV2* out, std::string* error) {
  Header hdr;
  if (!frame::check_frame(msg, Type::kDecline, &hdr, error)) return false;
  if (hdr.version < kVersion2)
    return fail(error, "version %u, not a version 2 Decline", hdr.version);
  // Whatever the peer's SMC type, a Decline means the same: fall back to TCP.
  if (hdr.typev1 != frame::kSmcTypeR && hdr.typev1 != frame::kSmcTypeD) {
    return fail(error, "bad SMC type %u in Decline", hdr.typev1);
  }
  if (hdr.length != kDeclineV2Size) {
    return fail(error, "length %u != %zu for a version 2 Decline", hdr.length, kDeclineV2Size);
  }
  // Linux does not look at a Decline's trailer; a Decline without one is no CLC message.
  if (!frame::check_trailer(msg, error)) return false;
  const uint8_t* p = msg.data();
  DeclineV2 m;
  m.version = hdr.version;
  std::memcpy(m.peer_id.data(), p + frame::kOffDeclPeerId, m.peer_id.size());
  m.diagnosis = get_be32(p + frame::kOffDiagnosis);
  m.out_of_sync = hdr.flag;
  m.os_type = p[kOffDeclOsType] >> 4;
  for (size_t i = 0; i < m.more_diagnosis.size(); ++i) {
    m.more_diagnosis[i] = get_be32(p + kOffMoreDiagnosis + 4 * i);
  }
  *out = m;
  return true;
}

}  // namespace smcpre::core::clc
