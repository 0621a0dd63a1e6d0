// ADD LINK of LLC version 2 (core/wire/llc_v2.h), as Linux writes it
// (smc_llc_send_add_link, smc_llc_fill_ext_v2):
//   0  0x22, length (16 bits), flags: 0x80 response, 0x40 reject
//   4  sender MAC (6), 2 reserved, 12 sender GID (16), 28 QP (24 bits), 31 link number,
//   32 QP MTU (low nibble), 33 initial PSN (24 bits), 8 reserved              -> 44
//   44 extension: bit 7 of byte 44 "direct", 1 reserved, 46 target GID (16), 8 reserved,
//   70 rkey count (16 bits, in the sender's byte order like the length), then per rkey:
//   rkey on the old link, rkey and address on the new one (4 + 4 + 8, big-endian)
#include <algorithm>
#include <cassert>
#include <cstring>

#include "core/wire/bytes.h"
#include "core/wire/llc_frame.h"
#include "core/wire/llc_v2.h"

namespace smcpre::core::llc {
namespace {

using frame::kFlagResponse;
using wire::fail;
using wire::get_be24;
using wire::get_be32;
using wire::get_be64;
using wire::put_be24;

constexpr uint8_t kFlagReject = 0x40;
constexpr size_t kOffMac = 4;
constexpr size_t kOffGid = 12;
constexpr size_t kOffQpn = 28;
constexpr size_t kOffLinkNum = 31;
constexpr size_t kOffMtu = 32;
constexpr size_t kOffPsn = 33;
// Extension, relative to its start at byte 44.
constexpr size_t kExtDirect = 0;
constexpr uint8_t kDirectBit = 0x80;
constexpr size_t kExtTargetGid = 2;
constexpr size_t kExtRkeyCount = 26;
// An rkey entry.
constexpr size_t kRkeyNew = 4;
constexpr size_t kVaddrNew = 8;

}  // namespace

AddLinkRkey AddLinkV2::rkey(size_t index) const {
  assert(index < rkeys_present());
  const uint8_t* p = rkeys.data() + index * kAddLinkRkeySize;
  return AddLinkRkey{get_be32(p), get_be32(p + kRkeyNew), get_be64(p + kVaddrNew)};
}

size_t AddLinkV2::size() const {
  return has_extension ? kSize + kAddLinkExtSize + rkeys.size() : kSize;
}

bool AddLinkV2::operator==(const AddLinkV2& o) const {
  return response == o.response && reject == o.reject && mac == o.mac && gid == o.gid &&
         qp_num == o.qp_num && link_num == o.link_num && qp_mtu == o.qp_mtu &&
         initial_psn == o.initial_psn && has_extension == o.has_extension && direct == o.direct &&
         target_gid == o.target_gid && rkey_count == o.rkey_count &&
         std::ranges::equal(rkeys, o.rkeys);
}

AddLinkV2 add_link_reject(const AddLinkV2& request) {
  AddLinkV2 m = request;
  m.response = true;
  m.reject = true;
  m.has_extension = false;
  m.direct = false;
  m.target_gid = {};
  m.rkey_count = 0;
  m.rkeys = {};
  return m;
}

size_t encode(const AddLinkV2& m, std::span<uint8_t> out) {
  assert(m.qp_num <= 0xffffff && m.initial_psn <= 0xffffff && m.qp_mtu <= 0x0f);
  assert(m.rkeys.size() % kAddLinkRkeySize == 0 && m.rkeys_present() <= m.rkey_count);
  assert(m.has_extension || m.rkeys.empty());
  const size_t n = m.size();
  assert(out.size() >= n && n <= kV2MaxSize);
  const auto flags =
      static_cast<uint8_t>((m.response ? kFlagResponse : 0) | (m.reject ? kFlagReject : 0));
  frame::put_header(out.first(n), Version::kV2, Type::kAddLink, flags);
  uint8_t* p = out.data();
  std::memcpy(p + kOffMac, m.mac.data(), m.mac.size());
  std::memcpy(p + kOffGid, m.gid.data(), m.gid.size());
  put_be24(p + kOffQpn, m.qp_num);
  p[kOffLinkNum] = m.link_num;
  p[kOffMtu] = m.qp_mtu;
  put_be24(p + kOffPsn, m.initial_psn);
  if (m.has_extension) {
    uint8_t* ext = p + kSize;
    ext[kExtDirect] = m.direct ? kDirectBit : 0;
    std::memcpy(ext + kExtTargetGid, m.target_gid.data(), m.target_gid.size());
    frame::put_le16(ext + kExtRkeyCount, m.rkey_count);
    std::copy(m.rkeys.begin(), m.rkeys.end(), ext + kAddLinkExtSize);
  }
  return n;
}

bool decode(std::span<const uint8_t> in, AddLinkV2* out, std::string* error) {
  uint8_t flags = 0;
  frame::ByteOrder order;
  if (!frame::check_header(in, Version::kV2, Type::kAddLink, &flags, &order, error)) return false;
  const uint8_t* p = in.data();
  AddLinkV2 m;
  if (in.size() != kSize) {
    if (in.size() < kSize + kAddLinkExtSize) {
      return fail(error, "ADD_LINK v2 of %zu bytes: 44, or at least %zu with its extension",
                  in.size(), kSize + kAddLinkExtSize);
    }
    const size_t rkey_bytes = in.size() - kSize - kAddLinkExtSize;
    if (rkey_bytes % kAddLinkRkeySize != 0) {
      return fail(error, "ADD_LINK v2 extension ends in %zu bytes of a %zu-byte rkey entry",
                  rkey_bytes % kAddLinkRkeySize, kAddLinkRkeySize);
    }
    const uint8_t* ext = p + kSize;
    m.has_extension = true;
    m.direct = (ext[kExtDirect] & kDirectBit) != 0;
    std::memcpy(m.target_gid.data(), ext + kExtTargetGid, m.target_gid.size());
    m.rkey_count = frame::get_u16(ext + kExtRkeyCount, order);
    m.rkeys = in.subspan(kSize + kAddLinkExtSize);
    if (m.rkeys_present() > m.rkey_count) {
      return fail(error, "ADD_LINK v2 carries %zu rkeys but announces %u", m.rkeys_present(),
                  m.rkey_count);
    }
  }
  m.response = (flags & kFlagResponse) != 0;
  m.reject = (flags & kFlagReject) != 0;
  std::memcpy(m.mac.data(), p + kOffMac, m.mac.size());
  std::memcpy(m.gid.data(), p + kOffGid, m.gid.size());
  m.qp_num = get_be24(p + kOffQpn);
  m.link_num = p[kOffLinkNum];
  m.qp_mtu = p[kOffMtu] & 0x0f;
  m.initial_psn = get_be24(p + kOffPsn);
  *out = m;
  return true;
}

}  // namespace smcpre::core::llc
