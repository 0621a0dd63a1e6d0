// CDC (Connection Data Control) messages: the 44-byte per-connection control message sent
// with an RDMA SEND after the data (RFC 7609; layout as Linux net/smc/smc_cdc.h).
//
// On the data path: encode and decode neither allocate nor fail on the success path.
// decode checks only the frame (size, type, length byte); the cursor values are the
// caller's to validate against its ring (core/wire/cursor.h from_wire).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/wire/cursor.h"

namespace smcpre::core::cdc {

inline constexpr uint8_t kType = 0xFE;
inline constexpr size_t kSize = 44;

struct Message {
  uint16_t seq = 0;    // per connection, +1 per CDC sent
  uint32_t token = 0;  // the receiver's RMBE alert token
  WireCursor prod;     // producer cursor: where the sender's data ends in our RMBE
  WireCursor cons;     // consumer cursor: what the sender consumed of its RMBE
  // Producer flags.
  bool write_blocked = false;
  bool urg_data_pending = false;
  bool urg_data_present = false;
  bool cons_curs_upd_req = false;
  bool failover_validation = false;
  // Connection state flags.
  bool peer_done_writing = false;
  bool peer_conn_closed = false;
  bool peer_conn_abort = false;
  bool operator==(const Message&) const = default;
};

// Writes all 44 bytes (reserved fields zero).
void encode(const Message& msg, std::span<uint8_t, kSize> out);
// Requires in.size() == 44, type 0xFE and length byte 44; reserved bits are ignored.
// On failure returns false and, if error is not null, sets a reason.
bool decode(std::span<const uint8_t> in, Message* out, std::string* error);
// What the thread reaping receive completions needs to route a CDC to its connection's
// worker without decoding it: true (and *token set) if `in` is framed as a CDC (size, type
// and length byte as decode() requires); the worker decodes and validates the rest.
bool peek_token(std::span<const uint8_t> in, uint32_t* token);

}  // namespace smcpre::core::cdc
