// LLC version 2: the encoders reproduce the kernel's captured CONFIRM LINK, ADD LINK and
// refusal from their field values and the decoders those values from the bytes; the
// other version 2 messages round trip; the length is taken in either byte order but must
// be the size; every size a count does not call for is refused; the first byte is sorted
// into CDC, LLC v1 and LLC v2.
#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/wire/llc_v2.h"
#include "tests/unit/kernel_llc_v2_samples.h"

namespace llc = smcpre::core::llc;
using llc::Version;

namespace {

template <typename T>
Bytes encoded(const T& m, Version version) {
  std::array<uint8_t, llc::kSize> buf;
  buf.fill(0xAA);  // encode must overwrite every byte
  llc::encode(m, version, buf);
  return Bytes(buf.begin(), buf.end());
}

// For the variable-size messages.
template <typename T>
Bytes encoded(const T& m) {
  Bytes out(llc::kV2MaxSize, 0xAA);
  out.resize(llc::encode(m, out));
  REQUIRE(out.size() == m.size());
  return out;
}

template <typename T>
std::string refused(const Bytes& b) {
  T m;
  std::string error;
  REQUIRE_FALSE(llc::decode(b, &m, &error));
  REQUIRE_FALSE(error.empty());
  return error;
}

template <typename T>
std::string refused(const Bytes& b, Version version) {
  T m;
  std::string error;
  REQUIRE_FALSE(llc::decode(b, version, &m, &error));
  REQUIRE_FALSE(error.empty());
  return error;
}

// The same message with its 16-bit length written big-endian, as an s390 kernel sends it.
Bytes big_endian_length(Bytes b) {
  b[1] = static_cast<uint8_t>(b.size() >> 8);
  b[2] = static_cast<uint8_t>(b.size());
  return b;
}

Bytes rkey_entries(size_t count) {
  Bytes b(count * llc::kAddLinkRkeySize);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + 1);
  return b;
}

}  // namespace

TEST_CASE("the kernel's CONFIRM LINK v2, byte for byte") {
  CHECK(encoded(kernel_v2::confirm_link(), Version::kV2) == kernel_v2::kConfirmLink);
  CHECK(encoded(kernel_v2::confirm_link_response(), Version::kV2) ==
        kernel_v2::kConfirmLinkResponse);
  llc::ConfirmLink back;
  std::string error;
  REQUIRE(llc::decode(kernel_v2::kConfirmLink, Version::kV2, &back, &error));
  CHECK(back == kernel_v2::confirm_link());
  REQUIRE(llc::decode(kernel_v2::kConfirmLinkResponse, Version::kV2, &back, &error));
  CHECK(back == kernel_v2::confirm_link_response());
  // Neither is version 1 LLC.
  CHECK(refused<llc::ConfirmLink>(kernel_v2::kConfirmLink, Version::kV1) ==
        "expected CONFIRM_LINK, got type 0x21");
  CHECK(llc::classify_message(kernel_v2::kConfirmLink[0]) ==
        llc::MessageKind{llc::Family::kLlcV2, llc::Type::kConfirmLink});
}

TEST_CASE("the kernel's ADD LINK v2 and the refusal, byte for byte") {
  const Bytes& request = kernel_v2::kAddLink;
  REQUIRE(request.size() == 88);
  llc::AddLinkV2 back;
  std::string error;
  REQUIRE(llc::decode(request, &back, &error));
  CHECK(back == kernel_v2::add_link(request));
  REQUIRE(back.rkeys_present() == 1);
  CHECK(back.rkey(0) == kernel_v2::add_link_rkey());
  CHECK(encoded(kernel_v2::add_link(request)) == request);

  // What smcpre sends, having one link per group: the kernel client's own refusal.
  const llc::AddLinkV2 reject = llc::add_link_reject(back);
  CHECK(encoded(reject) == kernel_v2::kAddLinkReject);
  REQUIRE(llc::decode(kernel_v2::kAddLinkReject, &back, &error));
  CHECK(back == reject);
  CHECK(back.response);
  CHECK(back.reject);
  CHECK_FALSE(back.has_extension);
  CHECK(llc::disposition_v2(request[0]) == llc::Disposition::kAct);
}

TEST_CASE("TEST LINK, DELETE LINK and CONFIRM RKEY in version 2: the version 1 body") {
  llc::TestLink tl;
  tl.user_data = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  llc::DeleteLink dl;
  dl.all = true;
  dl.orderly = true;
  dl.reason = static_cast<uint32_t>(llc::DeleteReason::kProgramTerminated);
  llc::ConfirmRkey cr;
  cr.response = true;
  cr.rkey = 0x566;
  cr.vaddr = 0xff43f26e046b0000;
  const auto same_but_header = [](Bytes v1, const Bytes& v2) {
    v1[0] |= 0x20;
    v1[1] = 0x2C;
    v1[2] = 0x00;
    return v1 == v2;
  };
  std::string error;
  SECTION("TEST LINK") {
    const Bytes b = encoded(tl, Version::kV2);
    CHECK(b[0] == 0x27);
    CHECK(same_but_header(encoded(tl, Version::kV1), b));
    llc::TestLink back;
    REQUIRE(llc::decode(b, Version::kV2, &back, &error));
    CHECK(back == tl);
    REQUIRE(llc::decode(big_endian_length(b), Version::kV2, &back, &error));
    CHECK(back == tl);
  }
  SECTION("DELETE LINK") {
    const Bytes b = encoded(dl, Version::kV2);
    CHECK(b[0] == 0x24);
    CHECK(b[3] == 0x60);
    CHECK(same_but_header(encoded(dl, Version::kV1), b));
    llc::DeleteLink back;
    REQUIRE(llc::decode(b, Version::kV2, &back, &error));
    CHECK(back == dl);
  }
  SECTION("CONFIRM RKEY") {
    const Bytes b = encoded(cr, Version::kV2);
    CHECK(b[0] == 0x26);
    CHECK(same_but_header(encoded(cr, Version::kV1), b));
    llc::ConfirmRkey back;
    REQUIRE(llc::decode(b, Version::kV2, &back, &error));
    CHECK(back == cr);
  }
  SECTION("CONFIRM LINK's max conns is a version 2 field") {
    const Bytes v1 = encoded(kernel_v2::confirm_link(), Version::kV1);
    CHECK(v1[35] == 0xFF);  // written as given
    llc::ConfirmLink back;
    REQUIRE(llc::decode(v1, &back, &error));
    CHECK(back.max_conns == 0);  // read as reserved
    CHECK(back.max_links == 2);
  }
}

TEST_CASE("LLC v2 frames: lengths in either byte order, and only the true one") {
  const Bytes good = kernel_v2::kConfirmLink;
  llc::ConfirmLink back;
  std::string error;
  REQUIRE(llc::decode(big_endian_length(good), Version::kV2, &back, &error));
  CHECK(back == kernel_v2::confirm_link());
  for (const auto& [b1, b2] : std::vector<std::pair<uint8_t, uint8_t>>{
           {0x2C, 0x01}, {0x2B, 0x00}, {0x00, 0x00}, {0xFF, 0xFF}, {0x58, 0x00}, {0x2C, 0x2C}}) {
    Bytes b = good;
    b[1] = b1;
    b[2] = b2;
    char expected[96];
    std::snprintf(expected, sizeof expected,
                  "CONFIRM_LINK v2 length field %02x %02x is not its size 44 in either byte order",
                  b1, b2);
    CHECK(refused<llc::ConfirmLink>(b, Version::kV2) == expected);
  }
  for (size_t n = 0; n < llc::kSize; ++n) {
    const Bytes cut(good.begin(), good.begin() + n);
    CHECK(refused<llc::ConfirmLink>(cut, Version::kV2) ==
          "LLC v2 message of " + std::to_string(n) + " bytes (44 to 8192)");
  }
  Bytes longer = good;
  longer.resize(48);
  longer[1] = 48;
  CHECK(refused<llc::ConfirmLink>(longer, Version::kV2) ==
        "CONFIRM_LINK v2 of 48 bytes, expected 44");
  Bytes huge(llc::kV2MaxSize + 1, 0);
  huge[0] = 0x21;
  CHECK(refused<llc::ConfirmLink>(huge, Version::kV2) ==
        "LLC v2 message of 8193 bytes (44 to 8192)");
  Bytes b = good;
  b[0] = 0x01;
  CHECK(refused<llc::ConfirmLink>(b, Version::kV2) == "expected CONFIRM_LINK v2, got type 0x01");
  b = good;
  b[3] = 0x80;
  CHECK(refused<llc::ConfirmLink>(b, Version::kV2) ==
        "CONFIRM_LINK without the no-RMBE-eyecatcher flag (flags 0x80)");
}

TEST_CASE("classify_message and disposition_v2 sort every first byte") {
  int v1 = 0, v2 = 0, unknown = 0;
  for (int i = 0; i < 256; ++i) {
    const auto byte = static_cast<uint8_t>(i);
    const llc::MessageKind kind = llc::classify_message(byte);
    switch (kind.family) {
      case llc::Family::kCdc:
        CHECK(byte == 0xFE);
        CHECK(kind.type == llc::Type::kCdc);
        break;
      case llc::Family::kLlcV1:
        ++v1;
        CHECK(static_cast<uint8_t>(kind.type) == byte);
        CHECK(llc::classify(byte) == kind.type);
        break;
      case llc::Family::kLlcV2:
        ++v2;
        CHECK((0x20 | static_cast<uint8_t>(kind.type)) == byte);
        break;
      case llc::Family::kUnknown:
        ++unknown;
        CHECK(kind.type == llc::Type::kUnknown);
        break;
    }
    const llc::Disposition d = llc::disposition_v2(byte);
    if (byte == 0x23 || byte == 0x28) {
      CHECK(d == llc::Disposition::kIgnore);
    } else if (byte >= 0x21 && byte <= 0x29) {
      CHECK(d == llc::Disposition::kAct);
    } else {
      INFO("byte " << i);
      CHECK(d == llc::Disposition::kViolation);
    }
  }
  CHECK(v1 == 9);
  CHECK(v2 == 9);
  CHECK(unknown == 256 - 9 - 9 - 1);
}

TEST_CASE("ADD LINK v2: extension sizes follow the rkey count") {
  llc::AddLinkV2 m = kernel_v2::add_link(kernel_v2::kAddLink);
  llc::AddLinkV2 back;
  std::string error;
  SECTION("no rkeys") {
    m.rkeys = {};
    m.rkey_count = 0;
    const Bytes b = encoded(m);
    CHECK(b.size() == 72);
    REQUIRE(llc::decode(b, &back, &error));
    CHECK(back == m);
  }
  SECTION("255 rkeys: the most Linux sends") {
    const Bytes entries = rkey_entries(255);
    m.rkeys = entries;
    m.rkey_count = 255;
    const Bytes b = encoded(m);
    CHECK(b.size() == llc::kV2KernelMaxSize);
    CHECK(b.size() == 4152);
    CHECK(b[1] == 0x38);
    CHECK(b[2] == 0x10);
    REQUIRE(llc::decode(b, &back, &error));
    CHECK(back == m);
    CHECK(back.rkey(254).rkey == m.rkey(254).rkey);
  }
  SECTION("fewer entries than announced, as Linux may send") {
    const Bytes entries = rkey_entries(2);
    m.rkeys = entries;
    m.rkey_count = 5;
    REQUIRE(llc::decode(encoded(m), &back, &error));
    CHECK(back.rkeys_present() == 2);
    CHECK(back.rkey_count == 5);
  }
  SECTION("more entries than announced") {
    Bytes b = kernel_v2::kAddLink;
    b[70] = 0;
    CHECK(refused<llc::AddLinkV2>(b) == "ADD_LINK v2 carries 1 rkeys but announces 0");
  }
  SECTION("a big-endian sender: length and count in its order") {
    Bytes b = big_endian_length(kernel_v2::kAddLink);
    b[70] = 0x00;
    b[71] = 0x01;
    REQUIRE(llc::decode(b, &back, &error));
    CHECK(back.rkey_count == 1);
    CHECK(back.rkeys_present() == 1);
  }
  SECTION("sizes between the forms") {
    for (size_t n = 45; n < 72; ++n) {
      Bytes b(kernel_v2::kAddLink.begin(), kernel_v2::kAddLink.begin() + n);
      b[1] = static_cast<uint8_t>(n);
      CHECK(refused<llc::AddLinkV2>(b) == "ADD_LINK v2 of " + std::to_string(n) +
                                              " bytes: 44, or at least 72 with its extension");
    }
    for (size_t n = 73; n < 88; ++n) {
      Bytes b(kernel_v2::kAddLink.begin(), kernel_v2::kAddLink.begin() + n);
      b[1] = static_cast<uint8_t>(n);
      CHECK(refused<llc::AddLinkV2>(b) == "ADD_LINK v2 extension ends in " +
                                              std::to_string(n - 72) +
                                              " bytes of a 16-byte rkey entry");
    }
  }
  SECTION("every cut of the kernel's request is refused") {
    for (size_t n = 0; n < kernel_v2::kAddLink.size(); ++n) {
      const Bytes cut(kernel_v2::kAddLink.begin(), kernel_v2::kAddLink.begin() + n);
      CHECK_FALSE(llc::decode(cut, &back, &error));
    }
  }
  SECTION("not another type, nor version 1") {
    Bytes b = kernel_v2::kAddLink;
    b[0] = 0x02;
    CHECK(refused<llc::AddLinkV2>(b) == "expected ADD_LINK v2, got type 0x02");
  }
}

TEST_CASE("DELETE RKEY v2: up to 255 rkeys, answered in 44 bytes") {
  Bytes keys = hex("00 00 05 66");
  llc::DeleteRkeyV2 m;
  m.rkey_count = 1;
  m.rkeys = keys;
  llc::DeleteRkeyV2 back;
  std::string error;
  // As Linux sends it: one rkey in the 44 bytes of version 1.
  const Bytes one = encoded(m);
  CHECK(one == cat({hex("29 2C 00 00 01 00 00 00 00 00 05 66"), zeros(32)}));
  REQUIRE(llc::decode(one, &back, &error));
  CHECK(back == m);
  CHECK(back.rkey(0) == 0x566);
  for (size_t count : {0, 9, 10, 255}) {
    INFO(count << " rkeys");
    keys.assign(count * 4, 0x11);
    m.rkey_count = static_cast<uint8_t>(count);
    m.rkeys = keys;
    const Bytes b = encoded(m);
    CHECK(b.size() == std::max<size_t>(44, 8 + 4 * count));
    REQUIRE(llc::decode(b, &back, &error));
    CHECK(back == m);
    Bytes wrong = b;
    wrong.push_back(0);
    wrong[1] = static_cast<uint8_t>(wrong.size());
    wrong[2] = static_cast<uint8_t>(wrong.size() >> 8);
    CHECK(refused<llc::DeleteRkeyV2>(wrong) ==
          "DELETE_RKEY v2 request of " + std::to_string(wrong.size()) + " bytes, " +
              std::to_string(b.size()) + " for " + std::to_string(count) + " entries");
  }
  SECTION("the response: counts, the negative flag, no rkeys") {
    llc::DeleteRkeyV2 resp;
    resp.response = true;
    resp.negative = true;
    resp.rkey_count = 20;
    resp.invalid_count = 3;
    const Bytes b = encoded(resp);
    CHECK(b == cat({hex("29 2C 00 A0 14 03"), zeros(38)}));
    REQUIRE(llc::decode(b, &back, &error));
    CHECK(back == resp);
    Bytes longer = b;
    longer.resize(48);
    longer[1] = 48;
    CHECK(refused<llc::DeleteRkeyV2>(longer) == "DELETE_RKEY v2 response of 48 bytes, expected 44");
  }
}

TEST_CASE("REQ ADD LINK v2: GIDs in the request, nothing in the response") {
  const Bytes gids =
      hex("00 00 00 00 00 00 00 00 00 00 FF FF 0A 4D 00 02"
          "00 00 00 00 00 00 00 00 00 00 FF FF 0A 4E 00 02");
  llc::ReqAddLinkV2 m;
  m.gid_count = 2;
  m.gids = gids;
  const Bytes b = encoded(m);
  CHECK(b == cat({hex("25 3C 00 00"), zeros(20), hex("02 00 00 00"), gids}));
  llc::ReqAddLinkV2 back;
  std::string error;
  REQUIRE(llc::decode(b, &back, &error));
  CHECK(back == m);
  CHECK(back.gid(1)[13] == 0x4E);
  Bytes wrong = b;
  wrong[24] = 3;
  CHECK(refused<llc::ReqAddLinkV2>(wrong) ==
        "REQ_ADD_LINK v2 request of 60 bytes, 76 for 3 entries");
  llc::ReqAddLinkV2 resp;
  resp.response = true;
  const Bytes r = encoded(resp);
  CHECK(r == cat({hex("25 2C 00 80"), zeros(40)}));
  REQUIRE(llc::decode(r, &back, &error));
  CHECK(back == resp);
  m.gid_count = 1;
  m.gids = std::span(gids).first(16);
  CHECK(encoded(m).size() == 44);
}

TEST_CASE("random damage to LLC v2 messages is refused or round trips") {
  std::mt19937 rng(4152);
  const Bytes entries = rkey_entries(3);
  const Bytes keys = hex("00 00 00 01 00 00 00 02 00 00 00 03");
  llc::AddLinkV2 add = kernel_v2::add_link(kernel_v2::kAddLink);
  add.rkeys = entries;
  add.rkey_count = 3;
  llc::DeleteRkeyV2 del;
  del.rkey_count = 3;
  del.rkeys = keys;
  const std::vector<Bytes> seeds = {kernel_v2::kConfirmLink, kernel_v2::kAddLink,
                                    kernel_v2::kAddLinkReject, encoded(add), encoded(del)};
  int accepted = 0;
  for (int i = 0; i < 50000; ++i) {
    Bytes b = seeds[rng() % seeds.size()];
    for (int k = 1 + rng() % 3; k > 0; --k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    if (rng() % 8 == 0) b.resize(rng() % 140, static_cast<uint8_t>(rng()));
    llc::AddLinkV2 a, a2;
    llc::DeleteRkeyV2 d, d2;
    llc::ReqAddLinkV2 r, r2;
    llc::ConfirmLink c, c2;
    std::string error;
    if (llc::decode(b, &a, &error)) {
      ++accepted;
      const Bytes again = encoded(a);
      REQUIRE(llc::decode(again, &a2, &error));
      REQUIRE(a2 == a);
    }
    if (llc::decode(b, &d, &error)) {
      ++accepted;
      const Bytes again = encoded(d);
      REQUIRE(llc::decode(again, &d2, &error));
      REQUIRE(d2 == d);
    }
    if (llc::decode(b, &r, &error)) {
      ++accepted;
      const Bytes again = encoded(r);
      REQUIRE(llc::decode(again, &r2, &error));
      REQUIRE(r2 == r);
    }
    if (llc::decode(b, Version::kV2, &c, &error)) {
      ++accepted;
      REQUIRE(llc::decode(encoded(c, Version::kV2), Version::kV2, &c2, &error));
      REQUIRE(c2 == c);
    }
  }
  CHECK(accepted > 1000);
}
