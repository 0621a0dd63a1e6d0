// Copying between a connection's ring (its RMB element, or the peer's through a staging
// buffer) and the application's iovec array: the receive and send halves share it
// (connection_rx.cpp, connection_tx.cpp).
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace smcpre::core::ring {

inline size_t iov_total(const iovec* iov, int iovcnt) {
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  return total;
}

enum class Copy { kFromRing, kToRing };

// Copies `length` bytes between a ring, at absolute position `pos` (wrapping), and the
// iovec array, after its first `skip` bytes.
inline void copy_ring(Copy direction, uint8_t* ring, uint32_t ring_size, uint64_t pos,
                      size_t length, const iovec* iov, int iovcnt, size_t skip) {
  int i = 0;
  while (i < iovcnt && skip >= iov[i].iov_len) skip -= iov[i++].iov_len;
  while (length > 0 && i < iovcnt) {
    auto* mem = static_cast<uint8_t*>(iov[i].iov_base) + skip;
    const size_t room = std::min(iov[i].iov_len - skip, length);
    for (size_t done = 0; done < room;) {
      const uint32_t offset = static_cast<uint32_t>((pos + done) % ring_size);
      const size_t piece = std::min<size_t>(room - done, ring_size - offset);
      if (direction == Copy::kFromRing) {
        std::memcpy(mem + done, ring + offset, piece);
      } else {
        std::memcpy(ring + offset, mem + done, piece);
      }
      done += piece;
    }
    pos += room;
    length -= room;
    skip = 0;
    ++i;
  }
}

}  // namespace smcpre::core::ring
