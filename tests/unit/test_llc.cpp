#include <array>
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/wire/llc.h"
#include "tests/unit/hex.h"

namespace llc = smcpre::core::llc;

namespace {

template <typename T>
Bytes encoded(const T& m) {
  std::array<uint8_t, llc::kSize> buf;
  buf.fill(0xAA);  // encode must overwrite every byte
  llc::encode(m, buf);
  return Bytes(buf.begin(), buf.end());
}

const char* kGidHex = "FE 80 00 00 00 00 00 00 02 11 22 FF FE 33 44 55";

llc::ConfirmLink sample_confirm_link() {
  llc::ConfirmLink m;
  m.mac = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
  m.gid = {0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x11, 0x22, 0xFF, 0xFE, 0x33, 0x44, 0x55};
  m.qp_num = 0x000ABC;
  m.link_num = 1;
  m.link_uid = 0x01020304;
  m.max_links = 2;
  return m;
}

bool equal(const llc::ConfirmLink& a, const llc::ConfirmLink& b) {
  return a.response == b.response && a.mac == b.mac && a.gid == b.gid && a.qp_num == b.qp_num &&
         a.link_num == b.link_num && a.link_uid == b.link_uid && a.max_links == b.max_links;
}

}  // namespace

TEST_CASE("classify tells CDC, known LLC types and unknown bytes apart") {
  CHECK(llc::classify(0xFE) == llc::Type::kCdc);
  CHECK(llc::classify(0x01) == llc::Type::kConfirmLink);
  CHECK(llc::classify(0x04) == llc::Type::kDeleteLink);
  CHECK(llc::classify(0x06) == llc::Type::kConfirmRkey);
  CHECK(llc::classify(0x07) == llc::Type::kTestLink);
  CHECK(llc::classify(0x09) == llc::Type::kDeleteRkey);
  for (int b : {0x00, 0x0A, 0x21, 0x27, 0x80, 0xFD, 0xFF}) {
    CHECK(llc::classify(static_cast<uint8_t>(b)) == llc::Type::kUnknown);
  }
  int known = 0;
  for (int b = 0; b < 256; ++b)
    known += llc::classify(static_cast<uint8_t>(b)) != llc::Type::kUnknown;
  CHECK(known == 10);  // 9 LLC types + CDC
  CHECK(std::string(llc::type_name(llc::Type::kTestLink)) == "TEST_LINK");
  CHECK(std::string(llc::type_name(llc::classify(0x42))) == "UNKNOWN");
}

TEST_CASE("disposition: act on three types, ignore the other LLC types, end on garbage") {
  using llc::Disposition;
  CHECK(llc::disposition(0x01) == Disposition::kAct);  // CONFIRM LINK
  CHECK(llc::disposition(0x04) == Disposition::kAct);  // DELETE LINK
  CHECK(llc::disposition(0x07) == Disposition::kAct);  // TEST LINK
  for (uint8_t type : {0x02, 0x03, 0x05, 0x06, 0x08, 0x09}) {
    CHECK(llc::disposition(type) == Disposition::kIgnore);
  }
  // Was "ignored" with a warning per message: a peer that fills the receive queue with
  // garbage now loses its link, as with Linux.
  for (int type = 0; type < 256; ++type) {
    if (type >= 0x01 && type <= 0x09) continue;
    CHECK(llc::disposition(static_cast<uint8_t>(type)) == Disposition::kViolation);
  }
}

TEST_CASE("CONFIRM LINK encodes byte-exact") {
  const Bytes request = cat({hex("01 2C 00 03 02 11 22 33 44 55"), hex(kGidHex),
                             hex("00 0A BC 01 01 02 03 04 02"), zeros(9)});
  REQUIRE(request.size() == 44);
  CHECK(encoded(sample_confirm_link()) == request);

  llc::ConfirmLink response = sample_confirm_link();
  response.response = true;
  Bytes resp_bytes = request;
  resp_bytes[3] = 0x83;
  CHECK(encoded(response) == resp_bytes);

  llc::ConfirmLink back;
  std::string error;
  REQUIRE(llc::decode(request, &back, &error));
  CHECK(equal(back, sample_confirm_link()));
  REQUIRE(llc::decode(resp_bytes, &back, &error));
  CHECK(equal(back, response));

  SECTION("a peer using RMBE eyecatchers is refused") {
    Bytes b = request;
    b[3] = 0x80;
    CHECK_FALSE(llc::decode(b, &back, &error));
    CHECK(error.find("no-RMBE-eyecatcher") != std::string::npos);
    b[3] = 0x01;  // Linux accepts either of the two bits
    CHECK(llc::decode(b, &back, &error));
  }
}

TEST_CASE("TEST LINK encodes byte-exact") {
  llc::TestLink m;
  for (size_t i = 0; i < m.user_data.size(); ++i) m.user_data[i] = static_cast<uint8_t>(0xC0 + i);
  const Bytes expected =
      cat({hex("07 2C 00 00 C0 C1 C2 C3 C4 C5 C6 C7 C8 C9 CA CB CC CD CE CF"), zeros(24)});
  CHECK(encoded(m) == expected);
  m.response = true;
  Bytes resp = expected;
  resp[3] = 0x80;
  CHECK(encoded(m) == resp);
  llc::TestLink back;
  REQUIRE(llc::decode(resp, &back, nullptr));
  CHECK(back.response);
  CHECK(back.user_data == m.user_data);
}

TEST_CASE("DELETE LINK encodes byte-exact with Linux flag bits") {
  llc::DeleteLink m;
  m.link_num = 1;
  m.reason = static_cast<uint32_t>(llc::DeleteReason::kProgramTerminated);
  CHECK(encoded(m) == cat({hex("04 2C 00 00 01 00 03 00 00"), zeros(35)}));
  struct Case {
    bool llc::DeleteLink::*flag;
    uint8_t bit;
  };
  for (const Case& c : {Case{&llc::DeleteLink::response, 0x80}, Case{&llc::DeleteLink::all, 0x40},
                        Case{&llc::DeleteLink::orderly, 0x20}}) {
    llc::DeleteLink f = m;
    f.*c.flag = true;
    const Bytes b = encoded(f);
    CHECK(b[3] == c.bit);
    llc::DeleteLink back;
    REQUIRE(llc::decode(b, &back, nullptr));
    CHECK(back.response == f.response);
    CHECK(back.all == f.all);
    CHECK(back.orderly == f.orderly);
    CHECK(back.link_num == 1);
    CHECK(back.reason == 0x00030000);
  }
}

TEST_CASE("CONFIRM RKEY encodes byte-exact") {
  llc::ConfirmRkey m;
  m.rkey = 0xDEADBEEF;
  m.vaddr = 0x00007F1234567800;
  const Bytes expected =
      cat({hex("06 2C 00 00 00 DE AD BE EF 00 00 7F 12 34 56 78 00"), zeros(27)});
  CHECK(encoded(m) == expected);
  m.response = true;
  m.negative = true;
  Bytes resp = expected;
  resp[3] = 0xA0;
  CHECK(encoded(m) == resp);
  llc::ConfirmRkey back;
  std::string error;
  REQUIRE(llc::decode(resp, &back, &error));
  CHECK(back.response);
  CHECK(back.negative);
  CHECK(back.rkey == m.rkey);
  CHECK(back.vaddr == m.vaddr);
  SECTION("rkeys for other links are tolerated up to Linux's bound") {
    Bytes b = expected;
    b[4] = 2;
    CHECK(llc::decode(b, &back, &error));
    b[4] = 4;
    CHECK_FALSE(llc::decode(b, &back, &error));
    CHECK(error == "CONFIRM_RKEY announces 4 further rkeys (at most 3)");
  }
}

TEST_CASE("LLC decode rejects malformed frames") {
  const Bytes good = encoded(llc::TestLink{});
  llc::TestLink out;
  std::string error;
  for (size_t n = 0; n < good.size(); ++n) {
    REQUIRE_FALSE(llc::decode(std::span(good.data(), n), &out, &error));
    REQUIRE(error.find("expected 44") != std::string::npos);
  }
  Bytes b = good;
  b[0] = 0x01;
  CHECK_FALSE(llc::decode(b, &out, &error));
  CHECK(error == "expected TEST_LINK, got type 0x01");
  b = good;
  b[1] = 48;
  CHECK_FALSE(llc::decode(b, &out, &error));
  CHECK(error == "TEST_LINK length byte 48 != 44");
  llc::DeleteLink del;
  CHECK_FALSE(llc::decode(good, &del, &error));
  CHECK(error == "expected DELETE_LINK, got type 0x07");
}

TEST_CASE("LLC decode survives random input and accepts only valid frames") {
  std::mt19937 rng(99);
  const Bytes seeds[] = {encoded(sample_confirm_link()), encoded(llc::TestLink{}),
                         encoded(llc::DeleteLink{}), encoded(llc::ConfirmRkey{})};
  int accepted = 0;
  for (int i = 0; i < 100000; ++i) {
    Bytes b;
    if (i % 2 == 0) {
      b.resize(40 + rng() % 8);
      for (auto& x : b) x = static_cast<uint8_t>(rng());
      b[0] = static_cast<uint8_t>(rng() % 10);
      if (rng() % 2) b[1] = 44;
    } else {
      b = seeds[rng() % 4];
      for (int k = 1 + rng() % 3; k > 0; --k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    }
    const bool frame = b.size() == 44 && b[1] == 44;
    llc::ConfirmLink cl;
    llc::TestLink tl;
    llc::DeleteLink dl;
    llc::ConfirmRkey cr;
    const bool cl_ok = llc::decode(b, &cl, nullptr);
    const bool tl_ok = llc::decode(b, &tl, nullptr);
    const bool dl_ok = llc::decode(b, &dl, nullptr);
    const bool cr_ok = llc::decode(b, &cr, nullptr);
    REQUIRE(cl_ok == (frame && b[0] == 0x01 && (b[3] & 0x03) != 0));
    REQUIRE(tl_ok == (frame && b[0] == 0x07));
    REQUIRE(dl_ok == (frame && b[0] == 0x04));
    REQUIRE(cr_ok == (frame && b[0] == 0x06 && b[4] <= 3));
    // What was accepted re-encodes to the same bytes, except ignored fields.
    if (cl_ok) {
      Bytes masked = b;
      masked[2] = 0;
      masked[3] = static_cast<uint8_t>((b[3] & 0x80) | 0x03);
      std::fill(masked.begin() + 35, masked.end(), 0);
      REQUIRE(encoded(cl) == masked);
    }
    if (tl_ok) {
      Bytes masked = b;
      masked[2] = 0;
      masked[3] &= 0x80;
      std::fill(masked.begin() + 20, masked.end(), 0);
      REQUIRE(encoded(tl) == masked);
    }
    if (dl_ok) {
      Bytes masked = b;
      masked[2] = 0;
      masked[3] &= 0xE0;
      std::fill(masked.begin() + 9, masked.end(), 0);
      REQUIRE(encoded(dl) == masked);
    }
    if (cr_ok) {
      Bytes masked = b;
      masked[2] = 0;
      masked[3] &= 0xA0;
      masked[4] = 0;
      std::fill(masked.begin() + 17, masked.end(), 0);
      REQUIRE(encoded(cr) == masked);
    }
    accepted += cl_ok + tl_ok + dl_ok + cr_ok;
  }
  CHECK(accepted > 1000);
}
