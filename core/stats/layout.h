// The layout of a process's published counters: a file <runtime_dir>/stats/<pid> that the
// process maps shared and updates in place (plain relaxed atomic stores and adds, no
// syscall per update), and that smcpre-stat maps read-only while the process runs.
//
// Header-only and dependency-free, so that the reader (tools/) and the writer (core/) agree
// on one definition. Every counter is a 64-bit atomic: lock-free on every platform smcpre
// builds for, so a reader in another process never sees a torn value. A change of layout
// bumps kStatsVersion; a reader refuses versions it does not know.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace smcpre::stats {

inline constexpr uint64_t kStatsMagic = 0x31545354'45525043;  // "CPRESTT1", little-endian
inline constexpr uint32_t kStatsVersion = 4;
inline constexpr size_t kMaxLinkSlots = 256;
inline constexpr size_t kMaxWorkerSlots = 64;
// Connections shown one per line by smcpre-stat. The file is sparse: a slot costs memory
// only once a connection has used it.
inline constexpr size_t kMaxConnectionSlots = 8192;
// Distinct fallback reason codes counted (codes are 32-bit; a peer may send any).
inline constexpr size_t kMaxFallbackSlots = 48;

using Counter = std::atomic<uint64_t>;
static_assert(Counter::is_always_lock_free);

// Receive path of the whole process (doc/design.md §3).
struct alignas(64) ProcessCounters {
  Counter backlog_workers;        // 0: inline mode (SMCPRE_BACKLOG_CPUS=none)
  Counter pool_size;              // receive buffers in the mempool
  Counter pool_free;              // free now
  Counter pool_low_water;         // fewest ever free
  Counter pool_exhausted;         // refills that found the pool empty
  Counter cdc_inline;             // CDC messages the reaping thread processed itself
  Counter cdc_backlogged;         // CDC messages handed to a backlog worker
  Counter links_total;            // links ever created
  Counter link_slots_overflowed;  // links beyond kMaxLinkSlots (counted, not published)
  // Connections smcpre tracked, by outcome (totals since start; the open ones are in the
  // connection slots). A client connection smcpre never proposed SMC on (destination not
  // known to run smcpre, excluded, policy) counts as a fallback with its reason.
  Counter connections_smc;              // moved onto SMC
  Counter connections_fallback;         // stayed on TCP after the handshake or without one
  Counter connection_slots_overflowed;  // connections beyond kMaxConnectionSlots
  Counter fallback_slots_overflowed;    // fallbacks whose code found no fallback slot
  // Bytes of connections whose slot was released (open ones count in their slot).
  Counter closed_smc_bytes_sent;
  Counter closed_smc_bytes_received;
  Counter closed_tcp_bytes_sent;
  Counter closed_tcp_bytes_received;
  // Counters of links that are gone (the live ones count in their slots).
  Counter closed_links_cdc_received;
  Counter closed_links_llc_received;
  Counter closed_links_llc_sent;
  Counter closed_links_sends;
  Counter closed_links_write_bytes;
  Counter closed_links_rnr_events;
  Counter closed_links_rnr_retries;
  Counter rq_low_water;  // fewest posted receive buffers any link had (kNoLowWater: none yet)
  // The SMC TCP option program (doc/design.md §2.9): kOption*, and the handshakes it
  // recorded for this process's sockets, of which the peer announced SMC in how many.
  Counter option_program;
  Counter option_handshakes;
  Counter option_peer_smc;
};

inline constexpr uint64_t kNoLowWater = ~uint64_t{0};
// ProcessCounters::option_program.
inline constexpr uint64_t kOptionUnknown = 0;   // not looked for yet
inline constexpr uint64_t kOptionInactive = 1;  // no pinned map this process may use
inline constexpr uint64_t kOptionActive = 2;    // the map is open: sockets are marked

// One link (one link group: the RDMA relationship with one peer process).
struct alignas(64) LinkSlot {
  Counter in_use;           // 0: free slot; else the link group's id (nonzero)
  Counter peer_qp_num;      // the peer's QP number
  Counter role;             // 0 client, 1 server
  Counter rq_depth;         // receive queue depth (SMCPRE_RQ_DEPTH)
  Counter rq_posted;        // receive buffers posted now
  Counter rq_low_water;     // fewest posted receive buffers a reaper found (0: ran dry)
  Counter rq_refill_short;  // refills that could not fill the queue (pool empty)
  Counter cdc_received;
  Counter llc_received;
  // Copied from the queue pair's counters by the progress thread (about once a second
  // while idle, on every pass while busy): our SENDs that met an empty receive queue at
  // the peer (RNR) and the retries they took, and what went out and came in.
  Counter rnr_events;
  Counter rnr_retries;
  Counter sends;
  Counter writes;
  Counter write_bytes;
  Counter recvs;
  Counter connections;  // live connections on the link now
  Counter device;       // kDeviceShm or kDeviceVerbs
  Counter local_qp_num;
  Counter state;     // LinkState
  Counter llc_sent;  // LLC messages we sent (the other SENDs are CDC messages)
  // 1 when the device tells which SEND met RNR (rnr_events/rnr_retries mean something);
  // 0 for an RDMA adapter, which retries RNR in hardware and tells nobody (its own
  // hw_counters in sysfs count them).
  Counter rnr_counted;
};

enum LinkState : uint64_t { kLinkActivating = 0, kLinkActive = 1, kLinkDown = 2 };
enum LinkDevice : uint64_t { kDeviceShm = 1, kDeviceVerbs = 2 };

// One TCP connection smcpre tracks (every accepted one, and every client connection it
// proposed SMC on), from its creation until both the application and the SMC close are
// done with it. Addresses are kept as family and port plus 16 address bytes in two
// big-endian words (IPv4: the first 4 bytes).
struct alignas(64) ConnectionSlot {
  Counter in_use;  // 0: free; else a number unique in this process (nonzero)
  Counter role;    // 0 client, 1 server
  Counter state;   // ConnectionState
  Counter path;    // ConnectionPath
  Counter reason;  // on TCP: the fallback reason code (core/wire/decline.h)
  Counter link_group;
  Counter local_token;
  Counter bytes_sent;
  Counter bytes_received;
  Counter rnr;  // our CDC messages that met an empty receive queue at the peer (rnr_counted)
  Counter opened_realtime_ns;
  Counter local_family_port;  // family << 16 | port
  Counter local_addr_hi;
  Counter local_addr_lo;
  Counter peer_family_port;
  Counter peer_addr_hi;
  Counter peer_addr_lo;
  Counter rnr_counted;  // 1 when its device counts RNR per message (LinkSlot::rnr_counted)
};

enum ConnectionState : uint64_t {
  kConnHandshake = 0,   // client proposing, or server waiting for the first bytes
  kConnActive = 1,      // open both ways
  kConnPeerClosed = 2,  // the peer closed or shut its writing side; we have not closed
  kConnClosing = 3,     // we closed or shut our writing side; the peer has not finished
  kConnAborted = 4,     // reset (by either side, or the link went down)
  kConnClosed = 5,      // both sides done; the slot goes when the last reference does
};
enum ConnectionPath : uint64_t {
  kPathUndecided = 0,
  kPathSmcShm = 1,
  kPathSmcVerbs = 2,
  kPathTcp = 3,
};

// One fallback reason code and how many connections fell back for it.
struct FallbackSlot {
  Counter code;  // 0: free (claimed once, never released)
  Counter count;
};

// One backlog worker thread.
struct alignas(64) WorkerSlot {
  Counter in_use;           // 1 while the worker exists
  Counter cpu;              // the CPU it is pinned to
  Counter cdc_processed;    // CDC messages it applied
  Counter other_processed;  // send completions it applied
  Counter queue_depth;      // messages waiting for it now
  Counter queue_max;        // most messages ever waiting for it
  Counter sleeps;           // times it went to sleep (each wake-up costs a futex wake)
};

// Every counter of each struct with its C++ name, in declaration order. The writer zeroes
// a slot through these lists, and smcpre-stat prints the counters under these names (its
// JSON keys), so a counter added to a struct must be added to its list too: the checks
// below refuse a list that misses a member or names one twice.
template <typename T>
struct CounterField {
  const char* name;
  Counter T::*member;
};

inline constexpr CounterField<ProcessCounters> kProcessFields[] = {
    {"backlog_workers", &ProcessCounters::backlog_workers},
    {"pool_size", &ProcessCounters::pool_size},
    {"pool_free", &ProcessCounters::pool_free},
    {"pool_low_water", &ProcessCounters::pool_low_water},
    {"pool_exhausted", &ProcessCounters::pool_exhausted},
    {"cdc_inline", &ProcessCounters::cdc_inline},
    {"cdc_backlogged", &ProcessCounters::cdc_backlogged},
    {"links_total", &ProcessCounters::links_total},
    {"link_slots_overflowed", &ProcessCounters::link_slots_overflowed},
    {"connections_smc", &ProcessCounters::connections_smc},
    {"connections_fallback", &ProcessCounters::connections_fallback},
    {"connection_slots_overflowed", &ProcessCounters::connection_slots_overflowed},
    {"fallback_slots_overflowed", &ProcessCounters::fallback_slots_overflowed},
    {"closed_smc_bytes_sent", &ProcessCounters::closed_smc_bytes_sent},
    {"closed_smc_bytes_received", &ProcessCounters::closed_smc_bytes_received},
    {"closed_tcp_bytes_sent", &ProcessCounters::closed_tcp_bytes_sent},
    {"closed_tcp_bytes_received", &ProcessCounters::closed_tcp_bytes_received},
    {"closed_links_cdc_received", &ProcessCounters::closed_links_cdc_received},
    {"closed_links_llc_received", &ProcessCounters::closed_links_llc_received},
    {"closed_links_llc_sent", &ProcessCounters::closed_links_llc_sent},
    {"closed_links_sends", &ProcessCounters::closed_links_sends},
    {"closed_links_write_bytes", &ProcessCounters::closed_links_write_bytes},
    {"closed_links_rnr_events", &ProcessCounters::closed_links_rnr_events},
    {"closed_links_rnr_retries", &ProcessCounters::closed_links_rnr_retries},
    {"rq_low_water", &ProcessCounters::rq_low_water},
    {"option_program", &ProcessCounters::option_program},
    {"option_handshakes", &ProcessCounters::option_handshakes},
    {"option_peer_smc", &ProcessCounters::option_peer_smc},
};

inline constexpr CounterField<LinkSlot> kLinkFields[] = {
    {"in_use", &LinkSlot::in_use},
    {"peer_qp_num", &LinkSlot::peer_qp_num},
    {"role", &LinkSlot::role},
    {"rq_depth", &LinkSlot::rq_depth},
    {"rq_posted", &LinkSlot::rq_posted},
    {"rq_low_water", &LinkSlot::rq_low_water},
    {"rq_refill_short", &LinkSlot::rq_refill_short},
    {"cdc_received", &LinkSlot::cdc_received},
    {"llc_received", &LinkSlot::llc_received},
    {"rnr_events", &LinkSlot::rnr_events},
    {"rnr_retries", &LinkSlot::rnr_retries},
    {"sends", &LinkSlot::sends},
    {"writes", &LinkSlot::writes},
    {"write_bytes", &LinkSlot::write_bytes},
    {"recvs", &LinkSlot::recvs},
    {"connections", &LinkSlot::connections},
    {"device", &LinkSlot::device},
    {"local_qp_num", &LinkSlot::local_qp_num},
    {"state", &LinkSlot::state},
    {"llc_sent", &LinkSlot::llc_sent},
    {"rnr_counted", &LinkSlot::rnr_counted},
};

inline constexpr CounterField<ConnectionSlot> kConnectionFields[] = {
    {"in_use", &ConnectionSlot::in_use},
    {"role", &ConnectionSlot::role},
    {"state", &ConnectionSlot::state},
    {"path", &ConnectionSlot::path},
    {"reason", &ConnectionSlot::reason},
    {"link_group", &ConnectionSlot::link_group},
    {"local_token", &ConnectionSlot::local_token},
    {"bytes_sent", &ConnectionSlot::bytes_sent},
    {"bytes_received", &ConnectionSlot::bytes_received},
    {"rnr", &ConnectionSlot::rnr},
    {"opened_realtime_ns", &ConnectionSlot::opened_realtime_ns},
    {"local_family_port", &ConnectionSlot::local_family_port},
    {"local_addr_hi", &ConnectionSlot::local_addr_hi},
    {"local_addr_lo", &ConnectionSlot::local_addr_lo},
    {"peer_family_port", &ConnectionSlot::peer_family_port},
    {"peer_addr_hi", &ConnectionSlot::peer_addr_hi},
    {"peer_addr_lo", &ConnectionSlot::peer_addr_lo},
    {"rnr_counted", &ConnectionSlot::rnr_counted},
};

inline constexpr CounterField<WorkerSlot> kWorkerFields[] = {
    {"in_use", &WorkerSlot::in_use},
    {"cpu", &WorkerSlot::cpu},
    {"cdc_processed", &WorkerSlot::cdc_processed},
    {"other_processed", &WorkerSlot::other_processed},
    {"queue_depth", &WorkerSlot::queue_depth},
    {"queue_max", &WorkerSlot::queue_max},
    {"sleeps", &WorkerSlot::sleeps},
};

namespace detail {
// Converts to anything: T{AnyInit{}, ...} compiles with at most as many as T has members.
struct AnyInit {
  template <typename U>
  operator U() const noexcept;
};
template <typename T, typename... A>
constexpr size_t member_count(A... a) {
  if constexpr (requires { T{a..., AnyInit{}}; }) {
    return member_count<T>(a..., AnyInit{});
  } else {
    return sizeof...(A);
  }
}
template <typename T, size_t N>
constexpr bool names_each_member_once(const CounterField<T> (&fields)[N]) {
  for (size_t i = 0; i < N; ++i) {
    for (size_t j = i + 1; j < N; ++j) {
      if (fields[i].member == fields[j].member) return false;
    }
  }
  return N == member_count<T>();
}
}  // namespace detail
static_assert(detail::names_each_member_once(kProcessFields));
static_assert(detail::names_each_member_once(kLinkFields));
static_assert(detail::names_each_member_once(kWorkerFields));
static_assert(detail::names_each_member_once(kConnectionFields));

struct Segment {
  uint64_t magic;    // kStatsMagic, written last when the segment is ready
  uint32_t version;  // kStatsVersion
  uint32_t pid;
  uint64_t start_realtime_ns;  // when the segment was created (CLOCK_REALTIME)
  char comm[32];               // program name (NUL-terminated)
  char cmdline[224];           // argv joined by spaces, truncated (NUL-terminated)
  ProcessCounters process;
  LinkSlot links[kMaxLinkSlots];
  WorkerSlot workers[kMaxWorkerSlots];
  FallbackSlot fallbacks[kMaxFallbackSlots];
  ConnectionSlot connections[kMaxConnectionSlots];
};

}  // namespace smcpre::stats
