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

// What a cursor received from the peer means, judged against what we know of it.
enum class PeerCursorVerdict {
  kAdvanced,     // newer than the known value and within the limit: take it
  kNotNewer,     // the known value or an older one (a repeated or stale value): ignore it
  kOutsideRing,  // its count is no offset into the ring: a protocol violation
  kBeyondLimit,  // newer, but past anything the peer can have reached: a violation
};

struct PeerCursor {
  PeerCursorVerdict verdict = PeerCursorVerdict::kOutsideRing;
  uint64_t value = 0;  // the reconstructed absolute value (0 for kOutsideRing)
};

// Judges a cursor the peer announced for a ring of `ring_size` bytes. `known` is the last
// value taken from the peer; `limit` the largest it can legitimately announce: for its
// producer cursor into our ring, what we consumed plus ring_size (it never overwrites
// unread data); for its consumer cursor of its own ring, what we produced (it cannot
// consume more). With known <= limit <= known + ring_size, kAdvanced means exactly: the
// one value in (known, limit] whose wire form is `w`.
constexpr PeerCursor judge_peer_cursor(WireCursor w, uint64_t known, uint64_t limit,
                                       uint32_t ring_size) {
  const std::optional<uint64_t> value = from_wire(w, known, ring_size);
  if (!value) return {PeerCursorVerdict::kOutsideRing, 0};
  if (*value <= known) return {PeerCursorVerdict::kNotNewer, *value};
  if (*value > limit) return {PeerCursorVerdict::kBeyondLimit, *value};
  return {PeerCursorVerdict::kAdvanced, *value};
}

}  // namespace smcpre::core
