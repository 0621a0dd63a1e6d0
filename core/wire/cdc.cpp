#include "core/wire/cdc.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "core/wire/bytes.h"

namespace smcpre::core::cdc {
namespace {

using wire::fail;
using wire::get_be16;
using wire::get_be32;
using wire::put_be16;
using wire::put_be32;

// Byte offsets inside the 44-byte message. Each cursor is reserved u16, wrap u16,
// count u32.
constexpr size_t kOffType = 0;
constexpr size_t kOffLen = 1;
constexpr size_t kOffSeq = 2;
constexpr size_t kOffToken = 4;
constexpr size_t kOffProd = 8;
constexpr size_t kOffCons = 16;
constexpr size_t kOffProdFlags = 24;
constexpr size_t kOffConnFlags = 25;
constexpr size_t kCursorWrap = 2;
constexpr size_t kCursorCount = 4;

// Flag bits are numbered from the most significant bit on the wire.
constexpr uint8_t kWriteBlocked = 0x80;
constexpr uint8_t kUrgDataPending = 0x40;
constexpr uint8_t kUrgDataPresent = 0x20;
constexpr uint8_t kConsCursUpdReq = 0x10;
constexpr uint8_t kFailoverValidation = 0x08;
constexpr uint8_t kPeerDoneWriting = 0x80;
constexpr uint8_t kPeerConnClosed = 0x40;
constexpr uint8_t kPeerConnAbort = 0x20;

void put_cursor(uint8_t* p, WireCursor c) {
  put_be16(p + kCursorWrap, c.wrap);
  put_be32(p + kCursorCount, c.count);
}
WireCursor get_cursor(const uint8_t* p) {
  return WireCursor{get_be16(p + kCursorWrap), get_be32(p + kCursorCount)};
}

}  // namespace

void encode(const Message& m, std::span<uint8_t, kSize> out) {
  uint8_t* p = out.data();
  std::memset(p, 0, kSize);
  p[kOffType] = kType;
  p[kOffLen] = static_cast<uint8_t>(kSize);
  put_be16(p + kOffSeq, m.seq);
  put_be32(p + kOffToken, m.token);
  put_cursor(p + kOffProd, m.prod);
  put_cursor(p + kOffCons, m.cons);
  p[kOffProdFlags] = static_cast<uint8_t>(
      (m.write_blocked ? kWriteBlocked : 0) | (m.urg_data_pending ? kUrgDataPending : 0) |
      (m.urg_data_present ? kUrgDataPresent : 0) | (m.cons_curs_upd_req ? kConsCursUpdReq : 0) |
      (m.failover_validation ? kFailoverValidation : 0));
  p[kOffConnFlags] = static_cast<uint8_t>((m.peer_done_writing ? kPeerDoneWriting : 0) |
                                          (m.peer_conn_closed ? kPeerConnClosed : 0) |
                                          (m.peer_conn_abort ? kPeerConnAbort : 0));
}

bool decode(std::span<const uint8_t> in, Message* out, std::string* error) {
  if (in.size() != kSize) {
    return fail(error, "CDC message of %zu bytes, expected %zu", in.size(), kSize);
  }
  const uint8_t* p = in.data();
  if (p[kOffType] != kType) return fail(error, "type 0x%02x is not CDC", p[kOffType]);
  if (p[kOffLen] != kSize) return fail(error, "CDC length byte %u != %zu", p[kOffLen], kSize);
  out->seq = get_be16(p + kOffSeq);
  out->token = get_be32(p + kOffToken);
  out->prod = get_cursor(p + kOffProd);
  out->cons = get_cursor(p + kOffCons);
  const uint8_t pf = p[kOffProdFlags];
  out->write_blocked = pf & kWriteBlocked;
  out->urg_data_pending = pf & kUrgDataPending;
  out->urg_data_present = pf & kUrgDataPresent;
  out->cons_curs_upd_req = pf & kConsCursUpdReq;
  out->failover_validation = pf & kFailoverValidation;
  const uint8_t cf = p[kOffConnFlags];
  out->peer_done_writing = cf & kPeerDoneWriting;
  out->peer_conn_closed = cf & kPeerConnClosed;
  out->peer_conn_abort = cf & kPeerConnAbort;
  return true;
}

bool peek_token(std::span<const uint8_t> in, uint32_t* token) {
  if (in.size() != kSize || in[kOffType] != kType || in[kOffLen] != kSize) return false;
  *token = get_be32(in.data() + kOffToken);
  return true;
}

}  // namespace smcpre::core::cdc
