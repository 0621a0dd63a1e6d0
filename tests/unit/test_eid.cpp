// EIDs: made from a user's setting, checked when they come from a peer, and matched as
// Linux matches them (core/wire/eid.h).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "core/wire/eid.h"
#include "tests/unit/hex.h"

namespace clc = smcpre::core::clc;

namespace {

clc::Eid eid(const char* text) {
  std::string error;
  const auto e = clc::Eid::from_text(text, &error);
  INFO(error);
  REQUIRE(e.has_value());
  return *e;
}

}  // namespace

TEST_CASE("EIDs from a user's setting") {
  std::string error;
  const auto e = clc::Eid::from_text("SMCPRE-TEST", &error);
  REQUIRE(e);
  CHECK(e->bytes == hex_array<32>("53 4D 43 50 52 45 2D 54 45 53 54 20 20 20 20 20"
                                  "20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20"));
  CHECK(e->text() == "SMCPRE-TEST");
  CHECK(clc::valid_eid(*e, &error));
  const std::string full(32, '9');
  REQUIRE(clc::Eid::from_text(full, &error));
  CHECK(clc::Eid::from_text(full, &error)->text() == full);
  REQUIRE(clc::Eid::from_text("A.B-C.1", &error));
  REQUIRE(clc::Eid::from_text("7", &error));

  const struct {
    const char* text;
    const char* reason;
  } bad[] = {
      {"", "EID is empty"},
      {"smcpre", "EID starts with byte 0x73, not a capital letter or digit"},
      {"-SMC", "EID starts with byte 0x2d, not a capital letter or digit"},
      {".SMC", "EID starts with byte 0x2e, not a capital letter or digit"},
      {"SMC PRE", "EID has byte 0x20 at 3 (only A-Z, 0-9, '.', '-')"},
      {"SMCpre", "EID has byte 0x70 at 3 (only A-Z, 0-9, '.', '-')"},
      {"SMC_PRE", "EID has byte 0x5f at 3 (only A-Z, 0-9, '.', '-')"},
      {"SMC\n", "EID has byte 0x0a at 3 (only A-Z, 0-9, '.', '-')"},
      {" SMC", "EID starts with byte 0x20, not a capital letter or digit"},
      {"SMC ", "EID has byte 0x20 at 3 (only A-Z, 0-9, '.', '-')"},
      {"\xC4SMC", "EID starts with byte 0xc4, not a capital letter or digit"},
  };
  for (const auto& b : bad) {
    INFO(b.text);
    CHECK_FALSE(clc::Eid::from_text(b.text, &error));
    CHECK(error == b.reason);
  }
  CHECK_FALSE(clc::Eid::from_text(std::string(33, 'A'), &error));
  CHECK(error == "EID of 33 characters (at most 32)");
  CHECK_FALSE(clc::Eid::from_text(std::string("AB\0C", 4), &error));
  CHECK(error == "EID has byte 0x00 at 2 (only A-Z, 0-9, '.', '-')");
}

TEST_CASE("EIDs from the wire, and the one both sides settle on") {
  std::string error;
  clc::Eid e = eid("ABC");
  CHECK(clc::valid_eid(e, &error));
  e.bytes.fill(' ');
  CHECK_FALSE(clc::valid_eid(e, &error));
  CHECK(error == "EID is empty");
  e.bytes.fill(0);
  CHECK_FALSE(clc::valid_eid(e, &error));  // zeros pad nothing
  e = eid("ABC");
  e.bytes[31] = '\t';  // Linux would trim a tab; smcpre pads with spaces only
  CHECK_FALSE(clc::valid_eid(e, &error));

  const std::vector<clc::Eid> client = {eid("ONE"), eid("TWO"), eid("THREE")};
  const std::vector<clc::Eid> server = {eid("THREE"), eid("TWO")};
  // The client's order decides, as in Linux's loop over the Proposal's UEIDs.
  CHECK(clc::match_eid(client, server) == eid("TWO"));
  CHECK(clc::match_eid(server, client) == eid("THREE"));
  CHECK_FALSE(clc::match_eid(client, std::vector<clc::Eid>{eid("FOUR")}));
  CHECK_FALSE(clc::match_eid({}, server));
  CHECK_FALSE(clc::match_eid(client, {}));
  // Exact bytes: a differently padded or cased name is another EID.
  clc::Eid padded = eid("TWO");
  padded.bytes[31] = 0;
  CHECK_FALSE(clc::match_eid(std::vector<clc::Eid>{padded}, server));
}
