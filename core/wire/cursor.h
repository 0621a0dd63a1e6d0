// SMC cursors on the wire and in the engine.
//
// On the wire (CDC messages) a cursor is (wrap, count): a byte offset into the receiver's
// RMBE ring plus a 16-bit count of how often the ring wrapped. The engine instead keeps
// every cursor as a monotonically increasing 64-bit byte count, which makes distances and
// comparisons plain subtraction; these helpers convert between the two forms.
#pragma once

#include <cstdint>
#include <optional>

namespace smcpre::core {

struct WireCursor {
  uint16_t wrap = 0;
  uint32_t count = 0;
  bool operator==(const WireCursor&) const = default;
};

// u16 serial-number comparison (RFC 1982 style): true if `a` is newer than `b`, i.e. `a`
// lies less than half the number space ahead of `b`. Used for CDC sequence numbers and
// cursor wraps, both of which roll over from 0xffff to 0.
constexpr bool seq_newer(uint16_t a, uint16_t b) {
  return static_cast<int16_t>(static_cast<uint16_t>(a - b)) > 0;
}

// The wire form of an absolute cursor for a ring of `ring_size` bytes (ring_size > 0).
constexpr WireCursor to_wire(uint64_t absolute, uint32_t ring_size) {
  return WireCursor{static_cast<uint16_t>((absolute / ring_size) & 0xffff),
                    static_cast<uint32_t>(absolute % ring_size)};
}

// Reconstructs the absolute value of a received cursor. `known` is the last absolute value
// held for the same cursor; the result is the value whose wire form is `w` and whose wrap
// number is nearest to known's (u16 serial arithmetic), never negative. Whether the result
// is older than `known` or implausibly far ahead is for the caller to judge. Returns
// nullopt if the count cannot be an offset into the ring (count >= ring_size) or
// ring_size is 0.
constexpr std::optional<uint64_t> from_wire(WireCursor w, uint64_t known, uint32_t ring_size) {
  if (ring_size == 0 || w.count >= ring_size) return std::nullopt;
  const uint64_t known_wraps = known / ring_size;
  // Signed distance in wraps from known's wrap to the received one, in [-32768, 32767].
  const int64_t delta =
      static_cast<int16_t>(static_cast<uint16_t>(w.wrap - static_cast<uint16_t>(known_wraps)));
  uint64_t wraps = known_wraps + static_cast<uint64_t>(delta);  // modular: may "go below 0"
  if (delta < 0 && known_wraps < static_cast<uint64_t>(-delta)) {
    // The nearest match would be negative (before the stream began): the only candidate
    // with this wire form is one full wrap cycle further ahead.
    wraps += 0x10000;
  }
  return wraps * ring_size + w.count;
}

// What a received cursor does to the value held for it.
enum class CursorStep {
  kSame,         // unchanged (a CDC about something else)
  kAdvanced,     // moved forward within the limit: *value is the new absolute cursor
  kOutsideRing,  // its count cannot be an offset into the ring
  kBackwards,    // behind the value held: an honest peer's cursors never go back
  kBeyondLimit,  // ahead of what it may cover (data not sent, more than a ring ahead)
};

// Validates a cursor received in a CDC whose sequence number was newer than the last one
// applied. `known`: the absolute value held; `limit`: the highest it may reach (for the
// peer's producer cursor our consumer cursor plus the ring size, for its consumer cursor
// what we have written). On kAdvanced, *value is the new absolute value.
constexpr CursorStep step_cursor(WireCursor w, uint64_t known, uint64_t limit, uint32_t ring_size,
                                 uint64_t* value) {
  const auto received = from_wire(w, known, ring_size);
  if (!received) return CursorStep::kOutsideRing;
  if (*received == known) return CursorStep::kSame;
  if (*received < known) return CursorStep::kBackwards;
  if (*received > limit) return CursorStep::kBeyondLimit;
  *value = *received;
  return CursorStep::kAdvanced;
}

}  // namespace smcpre::core
