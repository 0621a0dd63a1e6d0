#include <catch2/catch.hpp>
#include <cstdint>
#include <random>

#include "core/wire/cursor.h"

using smcpre::core::CursorStep;
using smcpre::core::from_wire;
using smcpre::core::seq_newer;
using smcpre::core::step_cursor;
using smcpre::core::to_wire;
using smcpre::core::WireCursor;

namespace {

constexpr uint32_t kRing = 65536;                       // a typical RMBE size
constexpr uint64_t kCycle = uint64_t{0x10000} * kRing;  // bytes per full u16 wrap cycle

bool same(WireCursor a, WireCursor b) {
  return a.wrap == b.wrap && a.count == b.count;
}

}  // namespace

TEST_CASE("to_wire splits an absolute cursor into wrap and count") {
  CHECK(same(to_wire(0, kRing), {0, 0}));
  CHECK(same(to_wire(kRing - 1, kRing), {0, kRing - 1}));
  CHECK(same(to_wire(kRing, kRing), {1, 0}));
  CHECK(same(to_wire(3 * uint64_t{kRing} + 17, kRing), {3, 17}));
  SECTION("wrap rolls over after 0xffff") {
    CHECK(same(to_wire(0xffff * uint64_t{kRing} + 5, kRing), {0xffff, 5}));
    CHECK(same(to_wire(kCycle, kRing), {0, 0}));
    CHECK(same(to_wire(kCycle + kRing + 5, kRing), {1, 5}));
  }
  SECTION("odd ring sizes") {
    CHECK(same(to_wire(10, 1), {10, 0}));
    CHECK(same(to_wire(0xffffffffull, 0xffffffffu), {1, 0}));
    CHECK(same(to_wire(1000, 7), {142, 6}));
  }
}

TEST_CASE("from_wire reconstructs the absolute value nearest to the known one") {
  SECTION("same wrap") {
    CHECK(from_wire({0, 100}, 0, kRing) == 100u);
    CHECK(from_wire({3, 5}, 3 * uint64_t{kRing} + 10, kRing) == 3 * uint64_t{kRing} + 5);
  }
  SECTION("ahead and behind by some wraps") {
    CHECK(from_wire({4, 0}, 3 * uint64_t{kRing} + 10, kRing) == 4 * uint64_t{kRing});
    CHECK(from_wire({2, kRing - 1}, 3 * uint64_t{kRing}, kRing) == 3 * uint64_t{kRing} - 1);
  }
  SECTION("across the u16 wrap boundary, forwards") {
    const uint64_t known = 0xffff * uint64_t{kRing} + 100;  // wire wrap 0xffff
    CHECK(from_wire({0, 50}, known, kRing) == kCycle + 50);
    CHECK(from_wire({1, 0}, known, kRing) == kCycle + kRing);
    // Two cycles in: the high bits of `known` are kept.
    CHECK(from_wire({0, 50}, known + kCycle, kRing) == 2 * kCycle + 50);
  }
  SECTION("across the u16 wrap boundary, backwards") {
    const uint64_t known = kCycle + 10;  // wire wrap 0
    CHECK(from_wire({0xffff, kRing - 1}, known, kRing) == kCycle - 1);
  }
  SECTION("never negative: a value before the stream start maps one cycle ahead") {
    CHECK(from_wire({0xffff, 0}, 0, kRing) == 0xffff * uint64_t{kRing});
    CHECK(from_wire({0x8000, 0}, 0, kRing) == 0x8000 * uint64_t{kRing});
  }
  SECTION("half a cycle ahead is read as behind (serial arithmetic)") {
    const uint64_t known = kCycle;  // wire wrap 0, one cycle in
    CHECK(from_wire({0x8000, 0}, known, kRing) == kCycle - 0x8000 * uint64_t{kRing});
    CHECK(from_wire({0x7fff, 0}, known, kRing) == kCycle + 0x7fff * uint64_t{kRing});
  }
  SECTION("count outside the ring is rejected") {
    CHECK_FALSE(from_wire({0, kRing}, 0, kRing).has_value());
    CHECK_FALSE(from_wire({0, 0xffffffffu}, 0, kRing).has_value());
    CHECK_FALSE(from_wire({0, 0}, 0, 0).has_value());
    CHECK(from_wire({0, kRing - 1}, 0, kRing).has_value());
  }
}

TEST_CASE("from_wire inverts to_wire within half a wrap cycle") {
  std::mt19937_64 rng(42);
  const uint32_t rings[] = {1, 7, 16384, kRing, 1u << 20, 0xffffffffu};
  for (uint32_t ring : rings) {
    const uint64_t span = uint64_t{32766} * ring;  // strictly less than half a cycle
    for (int i = 0; i < 20000; ++i) {
      const uint64_t known = rng() % (uint64_t{1} << 50);
      const uint64_t back = std::min(known, span);
      const uint64_t target = known - back + rng() % (back + span + 1);
      const auto got = from_wire(to_wire(target, ring), known, ring);
      REQUIRE(got.has_value());
      REQUIRE(*got == target);
    }
  }
}

TEST_CASE("seq_newer is u16 serial-number comparison") {
  CHECK(seq_newer(1, 0));
  CHECK_FALSE(seq_newer(0, 1));
  CHECK_FALSE(seq_newer(5, 5));
  CHECK(seq_newer(0, 0xffff));
  CHECK_FALSE(seq_newer(0xffff, 0));
  CHECK(seq_newer(0x7fff, 0));
  CHECK(seq_newer(0x0005, 0xfff0));
  // Exactly half the space apart: neither is newer.
  CHECK_FALSE(seq_newer(0x8000, 0));
  CHECK_FALSE(seq_newer(0, 0x8000));
  for (uint32_t b = 0; b <= 0xffff; b += 0x1111) {
    for (uint32_t d = 1; d < 0x8000; d += 0x0777) {
      const auto a = static_cast<uint16_t>(b + d);
      REQUIRE(seq_newer(a, static_cast<uint16_t>(b)));
      REQUIRE_FALSE(seq_newer(static_cast<uint16_t>(b), a));
    }
  }
}

TEST_CASE("step_cursor takes a received cursor forward only, within its limit") {
  constexpr uint32_t kRing = 65536;
  uint64_t value = 12345;
  SECTION("forward within the limit") {
    CHECK(step_cursor(WireCursor{1, 100}, 60000, 2 * kRing, kRing, &value) ==
          CursorStep::kAdvanced);
    CHECK(value == kRing + 100);
  }
  SECTION("unchanged") {
    CHECK(step_cursor(to_wire(70000, kRing), 70000, 2 * kRing, kRing, &value) == CursorStep::kSame);
    CHECK(value == 12345);
  }
  SECTION("a count that is no offset into the ring") {
    CHECK(step_cursor(WireCursor{0, kRing}, 0, kRing, kRing, &value) == CursorStep::kOutsideRing);
    CHECK(step_cursor(WireCursor{0, 0xffffffffu}, 0, kRing, kRing, &value) ==
          CursorStep::kOutsideRing);
  }
  SECTION("backwards within a wrap and across one (a wrap number one lower)") {
    // Accepted silently before: the peer could replay data as new by moving it back.
    CHECK(step_cursor(to_wire(500, kRing), 1000, kRing, kRing, &value) == CursorStep::kBackwards);
    CHECK(step_cursor(to_wire(100000 - kRing, kRing), 100000, 3 * kRing, kRing, &value) ==
          CursorStep::kBackwards);
    CHECK(value == 12345);
  }
  SECTION("a wrap number below the stream's start lands a wrap cycle ahead: beyond the limit") {
    CHECK(step_cursor(WireCursor{0xffff, 10}, 1000, 1000 + kRing, kRing, &value) ==
          CursorStep::kBeyondLimit);
  }
  SECTION("beyond the limit by one byte") {
    CHECK(step_cursor(to_wire(kRing + 1001, kRing), 1000, kRing + 1000, kRing, &value) ==
          CursorStep::kBeyondLimit);
    CHECK(step_cursor(to_wire(kRing + 1000, kRing), 1000, kRing + 1000, kRing, &value) ==
          CursorStep::kAdvanced);
  }
}
