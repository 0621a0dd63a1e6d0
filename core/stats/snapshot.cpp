#include "core/stats/snapshot.h"

#include <algorithm>
#include <cstring>

namespace smcpre::stats {
namespace {

// The length of the well-formed UTF-8 sequence at p (avail bytes left), 0 if there is none.
size_t utf8_length(const unsigned char* p, size_t avail) {
  const unsigned char c = p[0];
  size_t n = 0;
  uint32_t cp = 0;
  uint32_t min = 0;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2, cp = c & 0x1fu, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, cp = c & 0x0fu, min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4, cp = c & 0x07u, min = 0x10000;
  } else {
    return 0;
  }
  if (n > avail) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (p[i] & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  // C1 controls (0x80-0x9f) act on terminals like C0 ones.
  if (cp < 0xa0) return 0;
  return n;
}

}  // namespace

std::string bounded_text(const char* field, size_t size) {
  const auto* p = reinterpret_cast<const unsigned char*>(field);
  const size_t len = ::strnlen(field, size);
  std::string out;
  for (size_t i = 0; i < len;) {
    if (p[i] < 0x80) {
      out += (p[i] < 0x20 || p[i] == 0x7f) ? '?' : static_cast<char>(p[i]);
      ++i;
    } else if (const size_t n = utf8_length(p + i, len - i); n != 0) {
      out.append(field + i, n);
      i += n;
    } else {
      out += '?';
      ++i;
    }
  }
  return out;
}

namespace {

template <typename T>
Values<T> copy_values(const T& live) {
  Values<T> out;
  for (size_t i = 0; i < out.values.size(); ++i) {
    out.values[i] = (live.*Values<T>::kFields[i].member).load(std::memory_order_relaxed);
  }
  return out;
}

}  // namespace

Snapshot take_snapshot(const Segment& seg) {
  Snapshot s;
  s.pid = seg.pid;
  s.start_realtime_ns = seg.start_realtime_ns;
  s.comm = bounded_text(seg.comm, sizeof seg.comm);
  s.cmdline = bounded_text(seg.cmdline, sizeof seg.cmdline);
  s.process = copy_values(seg.process);
  // A slot's in_use is stored last when it is claimed (release): loaded first (acquire),
  // it tells whether the counters behind it belong to a live link or worker.
  for (const LinkSlot& slot : seg.links) {
    const uint64_t id = slot.in_use.load(std::memory_order_acquire);
    if (id == 0) continue;
    s.links.push_back(copy_values(slot));
    s.links.back()[&LinkSlot::in_use] = id;  // as seen above, not as copied later
  }
  for (size_t i = 0; i < kMaxWorkerSlots; ++i) {
    const WorkerSlot& slot = seg.workers[i];
    const uint64_t in_use = slot.in_use.load(std::memory_order_acquire);
    if (in_use == 0) continue;
    s.workers.push_back({i, copy_values(slot)});
    s.workers.back().counters[&WorkerSlot::in_use] = in_use;
  }
  for (const FallbackSlot& f : seg.fallbacks) {
    const uint64_t code = f.code.load(std::memory_order_acquire);
    // Codes are 32-bit: anything else is not a code a writer stored.
    if (code == 0 || code > UINT32_MAX) continue;
    s.fallbacks.push_back({static_cast<uint32_t>(code), f.count.load(std::memory_order_relaxed)});
  }
  std::stable_sort(
      s.fallbacks.begin(), s.fallbacks.end(),
      [](const FallbackCount& a, const FallbackCount& b) { return a.count > b.count; });
  // Connection slots are reused as connections come and go: one whose number changed
  // while it was copied is a mix of two connections, and left out.
  for (const ConnectionSlot& slot : seg.connections) {
    const uint64_t number = slot.in_use.load(std::memory_order_acquire);
    if (number == 0) continue;
    Values<ConnectionSlot> v = copy_values(slot);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (slot.in_use.load(std::memory_order_relaxed) != number) continue;
    v[&ConnectionSlot::in_use] = number;
    s.connections.push_back(v);
  }
  std::sort(s.connections.begin(), s.connections.end(),
            [](const Values<ConnectionSlot>& a, const Values<ConnectionSlot>& b) {
              return a[&ConnectionSlot::in_use] < b[&ConnectionSlot::in_use];
            });
  return s;
}

}  // namespace smcpre::stats
