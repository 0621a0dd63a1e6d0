#include "core/wire/llc.h"

#include <cassert>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "core/wire/bytes.h"

namespace smcpre::core::llc {
namespace {

using wire::fail;
using wire::get_be24;
using wire::get_be32;
using wire::get_be64;
using wire::put_be24;
using wire::put_be32;
using wire::put_be64;

// Header: type, length (44), a byte only ADD LINK uses (reject reason), flags.
constexpr size_t kOffType = 0;
constexpr size_t kOffLength = 1;
constexpr size_t kOffFlags = 3;

constexpr uint8_t kFlagResponse = 0x80;
// CONFIRM LINK: "no RMBE eyecatchers" (two bits; Linux accepts either).
constexpr uint8_t kFlagNoRmbeEyecatcher = 0x03;
// DELETE LINK.
constexpr uint8_t kFlagDeleteAll = 0x40;
constexpr uint8_t kFlagDeleteOrderly = 0x20;
// CONFIRM RKEY response.
constexpr uint8_t kFlagRkeyNegative = 0x20;

// CONFIRM LINK body.
constexpr size_t kOffClMac = 4;
constexpr size_t kOffClGid = 10;
constexpr size_t kOffClQpn = 26;
constexpr size_t kOffClLinkNum = 29;
constexpr size_t kOffClLinkUid = 30;
constexpr size_t kOffClMaxLinks = 34;
// TEST LINK body.
constexpr size_t kOffTlUserData = 4;
// DELETE LINK body.
constexpr size_t kOffDlLinkNum = 4;
constexpr size_t kOffDlReason = 5;
// CONFIRM RKEY body: three 13-byte rtokens; the first byte of the first one counts the
// rtokens for other links that follow it.
constexpr size_t kOffCrNumOther = 4;
constexpr size_t kOffCrRkey = 5;
constexpr size_t kOffCrVaddr = 9;
constexpr uint8_t kMaxRkeysPerMessage = 3;  // Linux's bound on that count

uint8_t* put_header(std::span<uint8_t, kSize> out, Type type, uint8_t flags) {
  uint8_t* p = out.data();
  std::memset(p, 0, kSize);
  p[kOffType] = static_cast<uint8_t>(type);
  p[kOffLength] = static_cast<uint8_t>(kSize);
  p[kOffFlags] = flags;
  return p;
}

// Frame checks shared by every type. Returns the flags byte through *flags.
bool check_header(std::span<const uint8_t> in, Type type, uint8_t* flags, std::string* error) {
  if (in.size() != kSize) {
    return fail(error, "LLC message of %zu bytes, expected %zu", in.size(), kSize);
  }
  if (in[kOffType] != static_cast<uint8_t>(type)) {
    return fail(error, "expected %s, got type 0x%02x", type_name(type), in[kOffType]);
  }
  if (in[kOffLength] != kSize) {
    return fail(error, "%s length byte %u != %zu", type_name(type), in[kOffLength], kSize);
  }
  *flags = in[kOffFlags];
  return true;
}

}  // namespace

Type classify(uint8_t first_byte) {
  if (first_byte == static_cast<uint8_t>(Type::kCdc)) return Type::kCdc;
  if (first_byte >= static_cast<uint8_t>(Type::kConfirmLink) &&
      first_byte <= static_cast<uint8_t>(Type::kDeleteRkey)) {
    return static_cast<Type>(first_byte);
  }
  return Type::kUnknown;
}

Disposition disposition(uint8_t first_byte) {
  switch (classify(first_byte)) {
    case Type::kConfirmLink:
    case Type::kTestLink:
    case Type::kDeleteLink:
      return Disposition::kAct;
    case Type::kAddLink:
    case Type::kAddLinkCont:
    case Type::kReqAddLink:
    case Type::kConfirmRkey:
    case Type::kConfirmRkeyCont:
    case Type::kDeleteRkey:
      return Disposition::kIgnore;
    case Type::kCdc:
    case Type::kUnknown:
      break;
  }
  return Disposition::kViolation;
}

const char* type_name(Type type) {
  switch (type) {
    case Type::kUnknown:
      return "UNKNOWN";
    case Type::kConfirmLink:
      return "CONFIRM_LINK";
    case Type::kAddLink:
      return "ADD_LINK";
    case Type::kAddLinkCont:
      return "ADD_LINK_CONT";
    case Type::kDeleteLink:
      return "DELETE_LINK";
    case Type::kReqAddLink:
      return "REQ_ADD_LINK";
    case Type::kConfirmRkey:
      return "CONFIRM_RKEY";
    case Type::kTestLink:
      return "TEST_LINK";
    case Type::kConfirmRkeyCont:
      return "CONFIRM_RKEY_CONT";
    case Type::kDeleteRkey:
      return "DELETE_RKEY";
    case Type::kCdc:
      return "CDC";
  }
  return "UNKNOWN";
}

void encode(const ConfirmLink& m, std::span<uint8_t, kSize> out) {
  assert(m.qp_num <= 0xffffff);
  uint8_t* p =
      put_header(out, Type::kConfirmLink, kFlagNoRmbeEyecatcher | (m.response ? kFlagResponse : 0));
  std::memcpy(p + kOffClMac, m.mac.data(), m.mac.size());
  std::memcpy(p + kOffClGid, m.gid.data(), m.gid.size());
  put_be24(p + kOffClQpn, m.qp_num);
  p[kOffClLinkNum] = m.link_num;
  put_be32(p + kOffClLinkUid, m.link_uid);
  p[kOffClMaxLinks] = m.max_links;
}

void encode(const TestLink& m, std::span<uint8_t, kSize> out) {
  uint8_t* p = put_header(out, Type::kTestLink, m.response ? kFlagResponse : 0);
  std::memcpy(p + kOffTlUserData, m.user_data.data(), m.user_data.size());
}

void encode(const DeleteLink& m, std::span<uint8_t, kSize> out) {
  uint8_t* p = put_header(
      out, Type::kDeleteLink,
      static_cast<uint8_t>((m.response ? kFlagResponse : 0) | (m.all ? kFlagDeleteAll : 0) |
                           (m.orderly ? kFlagDeleteOrderly : 0)));
  p[kOffDlLinkNum] = m.link_num;
  put_be32(p + kOffDlReason, m.reason);
}

void encode(const ConfirmRkey& m, std::span<uint8_t, kSize> out) {
  uint8_t* p = put_header(out, Type::kConfirmRkey,
                          static_cast<uint8_t>((m.response ? kFlagResponse : 0) |
                                               (m.negative ? kFlagRkeyNegative : 0)));
  p[kOffCrNumOther] = 0;  // only the rkey for this link
  put_be32(p + kOffCrRkey, m.rkey);
  put_be64(p + kOffCrVaddr, m.vaddr);
}

bool decode(std::span<const uint8_t> in, ConfirmLink* out, std::string* error) {
  uint8_t flags = 0;
  if (!check_header(in, Type::kConfirmLink, &flags, error)) return false;
  if ((flags & kFlagNoRmbeEyecatcher) == 0) {
    return fail(error, "CONFIRM_LINK without the no-RMBE-eyecatcher flag (flags 0x%02x)", flags);
  }
  const uint8_t* p = in.data();
  out->response = flags & kFlagResponse;
  std::memcpy(out->mac.data(), p + kOffClMac, out->mac.size());
  std::memcpy(out->gid.data(), p + kOffClGid, out->gid.size());
  out->qp_num = get_be24(p + kOffClQpn);
  out->link_num = p[kOffClLinkNum];
  out->link_uid = get_be32(p + kOffClLinkUid);
  out->max_links = p[kOffClMaxLinks];
  return true;
}

bool decode(std::span<const uint8_t> in, TestLink* out, std::string* error) {
  uint8_t flags = 0;
  if (!check_header(in, Type::kTestLink, &flags, error)) return false;
  out->response = flags & kFlagResponse;
  std::memcpy(out->user_data.data(), in.data() + kOffTlUserData, out->user_data.size());
  return true;
}

bool decode(std::span<const uint8_t> in, DeleteLink* out, std::string* error) {
  uint8_t flags = 0;
  if (!check_header(in, Type::kDeleteLink, &flags, error)) return false;
  out->response = flags & kFlagResponse;
  out->all = flags & kFlagDeleteAll;
  out->orderly = flags & kFlagDeleteOrderly;
  out->link_num = in[kOffDlLinkNum];
  out->reason = get_be32(in.data() + kOffDlReason);
  return true;
}

bool decode(std::span<const uint8_t> in, ConfirmRkey* out, std::string* error) {
  uint8_t flags = 0;
  if (!check_header(in, Type::kConfirmRkey, &flags, error)) return false;
  if (in[kOffCrNumOther] > kMaxRkeysPerMessage) {
    return fail(error, "CONFIRM_RKEY announces %u further rkeys (at most %u)", in[kOffCrNumOther],
                kMaxRkeysPerMessage);
  }
  out->response = flags & kFlagResponse;
  out->negative = flags & kFlagRkeyNegative;
  out->rkey = get_be32(in.data() + kOffCrRkey);
  out->vaddr = get_be64(in.data() + kOffCrVaddr);
  return true;
}

}  // namespace smcpre::core::llc
