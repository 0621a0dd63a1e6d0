#include <array>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/wire/cdc.h"
#include "tests/unit/hex.h"

namespace cdc = smcpre::core::cdc;

namespace {

Bytes encoded(const cdc::Message& m) {
  std::array<uint8_t, cdc::kSize> buf;
  buf.fill(0xAA);  // encode must overwrite every byte
  cdc::encode(m, buf);
  return Bytes(buf.begin(), buf.end());
}

bool equal(const cdc::Message& a, const cdc::Message& b) {
  return a.seq == b.seq && a.token == b.token && a.prod.wrap == b.prod.wrap &&
         a.prod.count == b.prod.count && a.cons.wrap == b.cons.wrap &&
         a.cons.count == b.cons.count && a.write_blocked == b.write_blocked &&
         a.urg_data_pending == b.urg_data_pending && a.urg_data_present == b.urg_data_present &&
         a.cons_curs_upd_req == b.cons_curs_upd_req &&
         a.failover_validation == b.failover_validation &&
         a.peer_done_writing == b.peer_done_writing && a.peer_conn_closed == b.peer_conn_closed &&
         a.peer_conn_abort == b.peer_conn_abort;
}

cdc::Message sample() {
  cdc::Message m;
  m.seq = 0x1234;
  m.token = 0xA1B2C3D4;
  m.prod = {0x0102, 0x00030405};
  m.cons = {0xfffe, 0x0000ffff};
  m.write_blocked = true;
  m.cons_curs_upd_req = true;
  m.peer_done_writing = true;
  return m;
}

// Positions the decoder ignores: the cursors' reserved u16s, the reserved flag bits and
// the 18 reserved bytes at the end.
Bytes mask_reserved(Bytes b) {
  b[8] = b[9] = b[16] = b[17] = 0;
  b[24] &= 0xF8;
  b[25] &= 0xE0;
  std::fill(b.begin() + 26, b.end(), 0);
  return b;
}

}  // namespace

TEST_CASE("CDC encodes byte-exact") {
  const Bytes expected =
      hex("FE 2C 12 34 A1 B2 C3 D4"
          "00 00 01 02 00 03 04 05"
          "00 00 FF FE 00 00 FF FF"
          "90 80"
          "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00");
  REQUIRE(expected.size() == 44);
  CHECK(encoded(sample()) == expected);

  cdc::Message back;
  std::string error;
  REQUIRE(cdc::decode(expected, &back, &error));
  CHECK(equal(back, sample()));
}

TEST_CASE("CDC flag bits are numbered from the most significant bit") {
  struct Case {
    bool cdc::Message::*flag;
    size_t byte;
    uint8_t bit;
  };
  const Case cases[] = {
      {&cdc::Message::write_blocked, 24, 0x80},       {&cdc::Message::urg_data_pending, 24, 0x40},
      {&cdc::Message::urg_data_present, 24, 0x20},    {&cdc::Message::cons_curs_upd_req, 24, 0x10},
      {&cdc::Message::failover_validation, 24, 0x08}, {&cdc::Message::peer_done_writing, 25, 0x80},
      {&cdc::Message::peer_conn_closed, 25, 0x40},    {&cdc::Message::peer_conn_abort, 25, 0x20},
  };
  for (const Case& c : cases) {
    cdc::Message m;
    m.*c.flag = true;
    const Bytes b = encoded(m);
    CHECK(b[c.byte] == c.bit);
    CHECK(b[c.byte == 24 ? 25 : 24] == 0);
    cdc::Message back;
    REQUIRE(cdc::decode(b, &back, nullptr));
    CHECK(equal(back, m));
  }
}

TEST_CASE("CDC round trips random messages") {
  std::mt19937 rng(7);
  for (int i = 0; i < 10000; ++i) {
    cdc::Message m;
    m.seq = static_cast<uint16_t>(rng());
    m.token = rng();
    m.prod = {static_cast<uint16_t>(rng()), static_cast<uint32_t>(rng())};
    m.cons = {static_cast<uint16_t>(rng()), static_cast<uint32_t>(rng())};
    const uint32_t f = rng();
    m.write_blocked = f & 1;
    m.urg_data_pending = f & 2;
    m.urg_data_present = f & 4;
    m.cons_curs_upd_req = f & 8;
    m.failover_validation = f & 16;
    m.peer_done_writing = f & 32;
    m.peer_conn_closed = f & 64;
    m.peer_conn_abort = f & 128;
    cdc::Message back;
    REQUIRE(cdc::decode(encoded(m), &back, nullptr));
    REQUIRE(equal(back, m));
  }
}

TEST_CASE("CDC decode rejects malformed frames") {
  const Bytes good = encoded(sample());
  cdc::Message out;
  std::string error;
  SECTION("wrong size") {
    for (size_t n = 0; n < good.size(); ++n) {
      REQUIRE_FALSE(cdc::decode(std::span(good.data(), n), &out, &error));
      REQUIRE(error.find("bytes, expected 44") != std::string::npos);
    }
    Bytes longer = good;
    longer.push_back(0);
    CHECK_FALSE(cdc::decode(longer, &out, &error));
  }
  SECTION("wrong type byte") {
    Bytes b = good;
    b[0] = 0x07;
    CHECK_FALSE(cdc::decode(b, &out, &error));
    CHECK(error == "type 0x07 is not CDC");
  }
  SECTION("wrong length byte") {
    Bytes b = good;
    b[1] = 40;
    CHECK_FALSE(cdc::decode(b, &out, &error));
    CHECK(error == "CDC length byte 40 != 44");
  }
  SECTION("reserved fields are ignored") {
    Bytes b(44, 0xFF);
    b[0] = 0xFE;
    b[1] = 44;
    REQUIRE(cdc::decode(b, &out, &error));
    CHECK(encoded(out) == mask_reserved(b));
  }
}

TEST_CASE("the reaper's token peek accepts exactly the frames decode accepts") {
  const cdc::Message msg = sample();
  const Bytes good = encoded(msg);
  uint32_t token = 0;
  REQUIRE(cdc::peek_token(good, &token));
  CHECK(token == msg.token);
  Bytes b = good;
  b[0] = 0x07;  // type
  CHECK_FALSE(cdc::peek_token(b, &token));
  b = good;
  b[1] = 40;  // length byte
  CHECK_FALSE(cdc::peek_token(b, &token));
  CHECK_FALSE(cdc::peek_token(std::span(good.data(), good.size() - 1), &token));
  // On random frames it agrees with decode (which the worker runs afterwards).
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    Bytes r(44);
    for (auto& byte : r) byte = static_cast<uint8_t>(rng());
    if (i % 2 == 0) r[0] = cdc::kType;
    if (i % 4 == 0) r[1] = 44;
    cdc::Message out;
    CHECK(cdc::peek_token(r, &token) == cdc::decode(r, &out, nullptr));
  }
}

TEST_CASE("CDC decode survives random input and accepts only valid frames") {
  std::mt19937 rng(1234);
  const Bytes good = encoded(sample());
  int accepted = 0;
  for (int i = 0; i < 100000; ++i) {
    Bytes b;
    if (i % 2 == 0) {
      b.resize(rng() % 50);
      for (auto& x : b) x = static_cast<uint8_t>(rng());
      if (!b.empty() && rng() % 2) b[0] = 0xFE;
      if (b.size() > 1 && rng() % 2) b[1] = 44;
    } else {
      b = good;
      for (int k = 1 + rng() % 4; k > 0; --k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
      if (rng() % 8 == 0) b.resize(rng() % 50, 0);
    }
    cdc::Message out;
    const bool ok = cdc::decode(b, &out, nullptr);
    const bool valid = b.size() == 44 && b[0] == 0xFE && b[1] == 44;
    REQUIRE(ok == valid);
    if (ok) {
      ++accepted;
      REQUIRE(encoded(out) == mask_reserved(b));
    }
  }
  CHECK(accepted > 1000);
}
