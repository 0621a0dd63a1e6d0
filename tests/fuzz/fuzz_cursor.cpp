// libFuzzer harness: the validation of the cursors a peer announces in its CDC messages
// (core/wire/cursor.h step_cursor, as Connection::on_cdc applies it), over a whole
// connection: our reader consumes, our writer produces, the peer's CDCs arrive. The input:
//   byte 0:        RMBE size codes (clc::rmbe_size_bytes): ours low nibble, the peer's high
//   bytes 1 .. 6:  where our receive stream starts (48 bits: a long-lived connection)
//   bytes 7 .. 12: where our send stream starts
//   then records of 52 bytes: u32 bytes our reader consumes (at most what is unread),
//   u32 bytes our writer produces (at most the free space in the peer's ring), and the
//   peer's 44-byte CDC message (skipped if cdc::decode rejects it, as the link does).
// Besides crashes and sanitizer reports, the harness fails when a verdict differs from
// the direct definition (the peer's cursor is taken exactly when the one value with its
// wire form in (known, limit] exists, and then it is that value; an unchanged one only
// when it is the known value's wire form), or when the state the engine relies on breaks:
// never more unread data than the ring holds, never more data in flight than the peer's
// ring holds, no cursor moving backwards. A violation ends the connection, as the engine
// aborts it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/wire/bytes.h"
#include "core/wire/cdc.h"
#include "core/wire/clc.h"
#include "core/wire/cursor.h"
#include "tests/fuzz/fuzz_check.h"

namespace cdc = smcpre::core::cdc;
namespace clc = smcpre::core::clc;
namespace wire = smcpre::core::wire;
using smcpre::core::CursorStep;
using smcpre::core::step_cursor;
using smcpre::core::to_wire;
using smcpre::core::WireCursor;

namespace {

constexpr size_t kHeaderSize = 13;
constexpr size_t kRecordSize = 8 + cdc::kSize;
constexpr uint64_t kStartMask = (uint64_t{1} << 48) - 1;

// The smallest absolute value above `known` whose wire form is `w` (count < ring), by
// modular arithmetic over a full cycle of 2^16 wraps: the definition step_cursor must
// agree with, computed without it.
uint64_t next_with_wire_form(WireCursor w, uint64_t known, uint32_t ring) {
  const uint64_t cycle = uint64_t{0x10000} * ring;
  const uint64_t target = uint64_t{w.wrap} * ring + w.count;
  const uint64_t from = (known + 1) % cycle;
  return known + 1 + (target + cycle - from) % cycle;
}

// Steps `w` and checks the verdict against the definition. Returns the verdict; *value
// is the cursor afterwards.
CursorStep step_and_check(WireCursor w, uint64_t known, uint64_t limit, uint32_t ring,
                          uint64_t* value) {
  FUZZ_CHECK(known <= limit && limit - known <= ring);  // what the engine guarantees
  uint64_t got = known;
  const CursorStep step = step_cursor(w, known, limit, ring, &got);
  *value = got;
  if (w.count >= ring) {
    FUZZ_CHECK(step == CursorStep::kOutsideRing);
    return step;
  }
  const uint64_t next = next_with_wire_form(w, known, ring);
  if (next <= limit) {
    FUZZ_CHECK(step == CursorStep::kAdvanced);
    FUZZ_CHECK(got == next);
    return step;
  }
  FUZZ_CHECK(step == CursorStep::kSame || step == CursorStep::kBackwards ||
             step == CursorStep::kBeyondLimit);
  FUZZ_CHECK(got == known);
  if (step == CursorStep::kSame) {
    const WireCursor form = to_wire(known, ring);
    FUZZ_CHECK(form.wrap == w.wrap && form.count == w.count);
  }
  return step;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < kHeaderSize) return 0;
  const uint32_t ring = clc::rmbe_size_bytes(data[0] & 0x0f);
  const uint32_t peer_ring = clc::rmbe_size_bytes(data[0] >> 4);
  // Our receive side: the peer's producer cursor and what our reader consumed.
  uint64_t rx_prod =
      (uint64_t{wire::get_be16(data + 1)} << 32 | wire::get_be32(data + 3)) & kStartMask;
  uint64_t rx_cons = rx_prod;
  // Our send side: what our writer produced and the peer's consumer cursor.
  uint64_t tx_prod =
      (uint64_t{wire::get_be16(data + 7)} << 32 | wire::get_be32(data + 9)) & kStartMask;
  uint64_t tx_cons = tx_prod;

  for (size_t at = kHeaderSize; at + kRecordSize <= size; at += kRecordSize) {
    const uint8_t* record = data + at;
    rx_cons += std::min<uint64_t>(wire::get_be32(record), rx_prod - rx_cons);
    tx_prod += std::min<uint64_t>(wire::get_be32(record + 4), peer_ring - (tx_prod - tx_cons));
    cdc::Message msg;
    if (!cdc::decode(std::span<const uint8_t>(record + 8, cdc::kSize), &msg, nullptr)) continue;

    uint64_t prod = rx_prod;
    const CursorStep prod_step = step_and_check(msg.prod, rx_prod, rx_cons + ring, ring, &prod);
    if (prod_step != CursorStep::kSame && prod_step != CursorStep::kAdvanced) {
      return 0;  // the engine aborts the connection
    }
    FUZZ_CHECK(prod >= rx_prod);
    rx_prod = prod;
    uint64_t cons = tx_cons;
    const CursorStep cons_step = step_and_check(msg.cons, tx_cons, tx_prod, peer_ring, &cons);
    if (cons_step != CursorStep::kSame && cons_step != CursorStep::kAdvanced) return 0;
    FUZZ_CHECK(cons >= tx_cons);
    tx_cons = cons;
    // The reader never finds more unread bytes than the ring holds (it would read data
    // the peer overwrote), and the writer never has more in flight than the peer's ring.
    FUZZ_CHECK(rx_cons <= rx_prod && rx_prod - rx_cons <= ring);
    FUZZ_CHECK(tx_cons <= tx_prod && tx_prod - tx_cons <= peer_ring);
  }
  return 0;
}
