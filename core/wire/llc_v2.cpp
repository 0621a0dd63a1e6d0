// LLC version 2 (core/wire/llc_v2.h): sorting received messages, and DELETE RKEY and REQ
// ADD LINK, as Linux writes them:
//   DELETE RKEY  0x29, length, flags (0x80 response, 0x20 negative, 0x10 retry); 4 rkey
//                count, 5 unknown rkeys (response), 8 the rkeys (4 each, big-endian)
//   REQ ADD LINK 0x25, length, flags (0x80 response); 20 reserved; 24 GID count, 3
//                reserved; 28 the GIDs (16 each)
// Linux sends DELETE RKEY with one rkey (44 bytes) but takes up to 255, and answers both in
// 44 bytes with the body zeroed but for the counts.
#include "core/wire/llc_v2.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "core/wire/bytes.h"
#include "core/wire/llc_frame.h"

namespace smcpre::core::llc {
namespace {

using frame::kFlagResponse;
using wire::fail;
using wire::get_be32;

constexpr uint8_t kFlagRkeyNegative = 0x20;
constexpr size_t kOffDrCount = 4;
constexpr size_t kOffDrInvalid = 5;
constexpr size_t kRkeySize = 4;
constexpr size_t kOffRaGidCount = 24;
constexpr size_t kGidSize = 16;

// A request's size: its header and entries, at least 44.
size_t request_size(size_t header, size_t count, size_t entry) {
  return std::max(kSize, header + count * entry);
}

// Checks that a request or response of `type` has the size its count calls for.
bool check_size(std::span<const uint8_t> in, Type type, bool response, size_t expected,
                size_t count, std::string* error) {
  if (in.size() == expected) return true;
  if (response) {
    return fail(error, "%s v2 response of %zu bytes, expected %zu", type_name(type), in.size(),
                kSize);
  }
  return fail(error, "%s v2 request of %zu bytes, %zu for %zu entries", type_name(type), in.size(),
              expected, count);
}

}  // namespace

MessageKind classify_message(uint8_t first_byte) {
  if (first_byte == static_cast<uint8_t>(Type::kCdc)) return {Family::kCdc, Type::kCdc};
  const Type v1 = classify(first_byte);
  if (v1 != Type::kUnknown) return {Family::kLlcV1, v1};
  if ((first_byte & 0xF0) == frame::kV2TypeBits) {
    const Type v2 = classify(first_byte & 0x0F);
    if (v2 != Type::kUnknown) return {Family::kLlcV2, v2};
  }
  return {};
}

Disposition disposition_v2(uint8_t first_byte) {
  const MessageKind kind = classify_message(first_byte);
  if (kind.family != Family::kLlcV2) return Disposition::kViolation;
  switch (kind.type) {
    case Type::kAddLinkCont:
    case Type::kConfirmRkeyCont:
      return Disposition::kIgnore;
    default:
      return Disposition::kAct;
  }
}

uint32_t DeleteRkeyV2::rkey(size_t index) const {
  assert(index < rkeys.size() / kRkeySize);
  return get_be32(rkeys.data() + index * kRkeySize);
}

size_t DeleteRkeyV2::size() const {
  return response ? kSize : request_size(kDeleteRkeyHeaderSize, rkey_count, kRkeySize);
}

bool DeleteRkeyV2::operator==(const DeleteRkeyV2& o) const {
  return response == o.response && negative == o.negative && rkey_count == o.rkey_count &&
         invalid_count == o.invalid_count && std::ranges::equal(rkeys, o.rkeys);
}

rdma::Gid ReqAddLinkV2::gid(size_t index) const {
  assert(index < gids.size() / kGidSize);
  rdma::Gid g;
  std::memcpy(g.data(), gids.data() + index * kGidSize, g.size());
  return g;
}

size_t ReqAddLinkV2::size() const {
  return response ? kSize : request_size(kReqAddLinkHeaderSize, gid_count, kGidSize);
}

bool ReqAddLinkV2::operator==(const ReqAddLinkV2& o) const {
  return response == o.response && gid_count == o.gid_count && std::ranges::equal(gids, o.gids);
}

size_t encode(const DeleteRkeyV2& m, std::span<uint8_t> out) {
  assert(m.response ? m.rkeys.empty() : m.rkeys.size() == size_t{m.rkey_count} * kRkeySize);
  const size_t n = m.size();
  assert(out.size() >= n);
  const auto flags =
      static_cast<uint8_t>(m.response ? kFlagResponse | (m.negative ? kFlagRkeyNegative : 0) : 0);
  frame::put_header(out.first(n), Version::kV2, Type::kDeleteRkey, flags);
  out[kOffDrCount] = m.rkey_count;
  if (m.response) out[kOffDrInvalid] = m.invalid_count;
  std::copy(m.rkeys.begin(), m.rkeys.end(), out.begin() + kDeleteRkeyHeaderSize);
  return n;
}

bool decode(std::span<const uint8_t> in, DeleteRkeyV2* out, std::string* error) {
  uint8_t flags = 0;
  frame::ByteOrder order;
  if (!frame::check_header(in, Version::kV2, Type::kDeleteRkey, &flags, &order, error)) {
    return false;
  }
  DeleteRkeyV2 m;
  m.response = (flags & kFlagResponse) != 0;
  m.rkey_count = in[kOffDrCount];
  if (!check_size(in, Type::kDeleteRkey, m.response, m.size(), m.rkey_count, error)) return false;
  if (m.response) {
    m.negative = (flags & kFlagRkeyNegative) != 0;
    m.invalid_count = in[kOffDrInvalid];
  } else {
    m.rkeys = in.subspan(kDeleteRkeyHeaderSize, size_t{m.rkey_count} * kRkeySize);
  }
  *out = m;
  return true;
}

size_t encode(const ReqAddLinkV2& m, std::span<uint8_t> out) {
  assert(m.response ? m.gids.empty() && m.gid_count == 0
                    : m.gids.size() == size_t{m.gid_count} * kGidSize);
  const size_t n = m.size();
  assert(out.size() >= n);
  frame::put_header(out.first(n), Version::kV2, Type::kReqAddLink, m.response ? kFlagResponse : 0);
  out[kOffRaGidCount] = m.gid_count;
  std::copy(m.gids.begin(), m.gids.end(), out.begin() + kReqAddLinkHeaderSize);
  return n;
}

bool decode(std::span<const uint8_t> in, ReqAddLinkV2* out, std::string* error) {
  uint8_t flags = 0;
  frame::ByteOrder order;
  if (!frame::check_header(in, Version::kV2, Type::kReqAddLink, &flags, &order, error)) {
    return false;
  }
  ReqAddLinkV2 m;
  m.response = (flags & kFlagResponse) != 0;
  if (!m.response) m.gid_count = in[kOffRaGidCount];
  if (!check_size(in, Type::kReqAddLink, m.response, m.size(), m.gid_count, error)) return false;
  if (!m.response) m.gids = in.subspan(kReqAddLinkHeaderSize, size_t{m.gid_count} * kGidSize);
  *out = m;
  return true;
}

}  // namespace smcpre::core::llc
