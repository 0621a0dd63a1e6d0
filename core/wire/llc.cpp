#include "core/wire/llc.h"

#include <cassert>
#include <cstring>

#include "core/wire/bytes.h"
#include "core/wire/llc_frame.h"

namespace smcpre::core::llc {
namespace {

using frame::kFlagResponse;
using wire::fail;
using wire::get_be24;
using wire::get_be32;
using wire::get_be64;
using wire::put_be24;
using wire::put_be32;
using wire::put_be64;

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
constexpr size_t kOffClMaxConns = 35;
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

// Per message type: its LLC type, its flags byte, and its body after the 4-byte header.
// get_body checks what the type needs; `version` tells fields only one version has.

uint8_t response_flag(bool response) {
  return response ? kFlagResponse : 0;
}

Type type_of(const ConfirmLink&) {
  return Type::kConfirmLink;
}
uint8_t flags_of(const ConfirmLink& m) {
  return kFlagNoRmbeEyecatcher | response_flag(m.response);
}
void put_body(const ConfirmLink& m, uint8_t* p) {
  assert(m.qp_num <= 0xffffff);
  std::memcpy(p + kOffClMac, m.mac.data(), m.mac.size());
  std::memcpy(p + kOffClGid, m.gid.data(), m.gid.size());
  put_be24(p + kOffClQpn, m.qp_num);
  p[kOffClLinkNum] = m.link_num;
  put_be32(p + kOffClLinkUid, m.link_uid);
  p[kOffClMaxLinks] = m.max_links;
  p[kOffClMaxConns] = m.max_conns;
}
bool get_body(const uint8_t* p, uint8_t flags, Version version, ConfirmLink* m,
              std::string* error) {
  if ((flags & kFlagNoRmbeEyecatcher) == 0) {
    return fail(error, "CONFIRM_LINK without the no-RMBE-eyecatcher flag (flags 0x%02x)", flags);
  }
  m->response = flags & kFlagResponse;
  std::memcpy(m->mac.data(), p + kOffClMac, m->mac.size());
  std::memcpy(m->gid.data(), p + kOffClGid, m->gid.size());
  m->qp_num = get_be24(p + kOffClQpn);
  m->link_num = p[kOffClLinkNum];
  m->link_uid = get_be32(p + kOffClLinkUid);
  m->max_links = p[kOffClMaxLinks];
  m->max_conns = version == Version::kV2 ? p[kOffClMaxConns] : 0;
  return true;
}

Type type_of(const TestLink&) {
  return Type::kTestLink;
}
uint8_t flags_of(const TestLink& m) {
  return response_flag(m.response);
}
void put_body(const TestLink& m, uint8_t* p) {
  std::memcpy(p + kOffTlUserData, m.user_data.data(), m.user_data.size());
}
bool get_body(const uint8_t* p, uint8_t flags, Version, TestLink* m, std::string*) {
  m->response = flags & kFlagResponse;
  std::memcpy(m->user_data.data(), p + kOffTlUserData, m->user_data.size());
  return true;
}

Type type_of(const DeleteLink&) {
  return Type::kDeleteLink;
}
uint8_t flags_of(const DeleteLink& m) {
  return static_cast<uint8_t>(response_flag(m.response) | (m.all ? kFlagDeleteAll : 0) |
                              (m.orderly ? kFlagDeleteOrderly : 0));
}
void put_body(const DeleteLink& m, uint8_t* p) {
  p[kOffDlLinkNum] = m.link_num;
  put_be32(p + kOffDlReason, m.reason);
}
bool get_body(const uint8_t* p, uint8_t flags, Version, DeleteLink* m, std::string*) {
  m->response = flags & kFlagResponse;
  m->all = flags & kFlagDeleteAll;
  m->orderly = flags & kFlagDeleteOrderly;
  m->link_num = p[kOffDlLinkNum];
  m->reason = get_be32(p + kOffDlReason);
  return true;
}

Type type_of(const ConfirmRkey&) {
  return Type::kConfirmRkey;
}
uint8_t flags_of(const ConfirmRkey& m) {
  return static_cast<uint8_t>(response_flag(m.response) | (m.negative ? kFlagRkeyNegative : 0));
}
void put_body(const ConfirmRkey& m, uint8_t* p) {
  p[kOffCrNumOther] = 0;  // only the rkey for this link
  put_be32(p + kOffCrRkey, m.rkey);
  put_be64(p + kOffCrVaddr, m.vaddr);
}
bool get_body(const uint8_t* p, uint8_t flags, Version, ConfirmRkey* m, std::string* error) {
  if (p[kOffCrNumOther] > kMaxRkeysPerMessage) {
    return fail(error, "CONFIRM_RKEY announces %u further rkeys (at most %u)", p[kOffCrNumOther],
                kMaxRkeysPerMessage);
  }
  m->response = flags & kFlagResponse;
  m->negative = flags & kFlagRkeyNegative;
  m->rkey = get_be32(p + kOffCrRkey);
  m->vaddr = get_be64(p + kOffCrVaddr);
  return true;
}

template <typename Message>
void encode_message(const Message& m, Version version, std::span<uint8_t, kSize> out) {
  frame::put_header(out, version, type_of(m), flags_of(m));
  put_body(m, out.data());
}

template <typename Message>
bool decode_message(std::span<const uint8_t> in, Version version, Message* out,
                    std::string* error) {
  const Type type = type_of(*out);
  uint8_t flags = 0;
  frame::ByteOrder order;
  if (!frame::check_header(in, version, type, &flags, &order, error)) return false;
  if (in.size() != kSize) {  // version 2 frames may be longer; these are not
    return fail(error, "%s of %zu bytes, expected %zu", frame::type_text(type, version).c_str(),
                in.size(), kSize);
  }
  Message m;
  if (!get_body(in.data(), flags, version, &m, error)) return false;
  *out = m;
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

void encode(const ConfirmLink& m, std::span<uint8_t, kSize> out) {
  encode_message(m, Version::kV1, out);
}
void encode(const TestLink& m, std::span<uint8_t, kSize> out) {
  encode_message(m, Version::kV1, out);
}
void encode(const DeleteLink& m, std::span<uint8_t, kSize> out) {
  encode_message(m, Version::kV1, out);
}
void encode(const ConfirmRkey& m, std::span<uint8_t, kSize> out) {
  encode_message(m, Version::kV1, out);
}
void encode(const ConfirmLink& m, Version version, std::span<uint8_t, kSize> out) {
  encode_message(m, version, out);
}
void encode(const TestLink& m, Version version, std::span<uint8_t, kSize> out) {
  encode_message(m, version, out);
}
void encode(const DeleteLink& m, Version version, std::span<uint8_t, kSize> out) {
  encode_message(m, version, out);
}
void encode(const ConfirmRkey& m, Version version, std::span<uint8_t, kSize> out) {
  encode_message(m, version, out);
}

bool decode(std::span<const uint8_t> in, ConfirmLink* out, std::string* error) {
  return decode_message(in, Version::kV1, out, error);
}
bool decode(std::span<const uint8_t> in, TestLink* out, std::string* error) {
  return decode_message(in, Version::kV1, out, error);
}
bool decode(std::span<const uint8_t> in, DeleteLink* out, std::string* error) {
  return decode_message(in, Version::kV1, out, error);
}
bool decode(std::span<const uint8_t> in, ConfirmRkey* out, std::string* error) {
  return decode_message(in, Version::kV1, out, error);
}
bool decode(std::span<const uint8_t> in, Version version, ConfirmLink* out, std::string* error) {
  return decode_message(in, version, out, error);
}
bool decode(std::span<const uint8_t> in, Version version, TestLink* out, std::string* error) {
  return decode_message(in, version, out, error);
}
bool decode(std::span<const uint8_t> in, Version version, DeleteLink* out, std::string* error) {
  return decode_message(in, version, out, error);
}
bool decode(std::span<const uint8_t> in, Version version, ConfirmRkey* out, std::string* error) {
  return decode_message(in, version, out, error);
}

}  // namespace smcpre::core::llc
