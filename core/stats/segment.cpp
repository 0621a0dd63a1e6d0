// Publishing the process's counters (see stats.h). The file <runtime_dir>/stats/<pid> is
// created, locked, sized and filled before its magic is stored, so a reader either sees a
// complete header or none:
// - The owner takes LOCK_SH right after creating the file and keeps it for life; a reader
//   that can take LOCK_EX (no owner) removes the file as stale.
// - A reader may remove a new file in the instant between the owner's open and lock; the
//   owner notices because the path no longer names its inode, and starts over.
// - A file already at our path belongs to a dead process with our pid (or to ourselves
//   before exec): it is unlocked, and removed like any stale file.
#include "core/stats/segment.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>

#include "config/config.h"
#include "config/high_fd.h"
#include "config/log.h"
#include "config/runtime_dir.h"
#include "config/sys.h"

namespace smcpre::stats {
namespace {

// A stale file at our path may be locked for a moment by a reader removing it; bounded, so
// that a live process holding it (same pid in another pid namespace sharing the runtime
// dir) costs the first segment() call at most this long before the private fallback.
constexpr int kCreateAttempts = 64;
constexpr long kBusyWaitNs = 1000000;  // 1 ms between attempts

// Process-wide state: constant-initialized globals (no static-init order, no destructors
// at exit, when engine threads may still count). reset_after_fork() re-creates the mutexes.
std::atomic<Segment*> g_segment{nullptr};
std::mutex g_segment_mutex;  // serializes creating the segment
std::mutex g_slot_mutex;     // serializes claiming slots (releases need no lock)
// Written under g_segment_mutex before g_segment is stored (release), then only read.
int g_fd = -1;                // the published file (holding LOCK_SH), or -1 when private
pid_t g_owner = 0;            // the process that created g_path
char g_path[PATH_MAX];        // the published file's path, "" when private
Segment* g_mapped = nullptr;  // the published mapping (the segment itself when published)

// Slots beyond the published arrays: heap blocks kept on a list and reused once released,
// so that links churning above kMaxLinkSlots cost memory for their peak count only.
template <typename Slot>
struct PrivateSlot {
  Slot slot;
  PrivateSlot* next = nullptr;
};
PrivateSlot<LinkSlot>* g_private_links = nullptr;  // guarded by g_slot_mutex
PrivateSlot<WorkerSlot>* g_private_workers = nullptr;
PrivateSlot<ConnectionSlot>* g_private_connections = nullptr;
size_t g_connection_hint = 0;               // where the next free connection slot is looked for
std::atomic<uint64_t> g_connection_seq{0};  // in_use values of connection slots
// Handed out only if allocating a private slot fails: callers get a slot, never null.
LinkSlot g_sink_link;
WorkerSlot g_sink_worker;
ConnectionSlot g_sink_connection;

size_t mapping_length() {
  const long page = ::sysconf(_SC_PAGESIZE);
  const size_t p = page > 0 ? static_cast<size_t>(page) : 4096;
  return (sizeof(Segment) + p - 1) / p * p;
}

void pause_briefly() {
  timespec pause{0, kBusyWaitNs};
  ::nanosleep(&pause, nullptr);
}

// The runtime dir as the listener registry makes it (private when it is the per-user
// default), and our uid's subtree of the shared stats dir, private to the user: its files
// name the user's programs and their command lines. *dir gets the subtree.
bool ensure_directories(const std::string& runtime_dir, std::string* dir, std::string* why) {
  return runtime_dir::ensure(runtime_dir, why) &&
         runtime_dir::user_subtree(runtime_dir, "stats", 0700, dir, why);
}

// Removes the file at `path` if no process holds it. False if a live process does (or it
// cannot be examined); true if it is gone now.
bool remove_if_stale(const char* path) {
  // O_NONBLOCK: whatever sits at the path, opening it must not wait (a FIFO would).
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return errno == ENOENT;
  bool gone = false;
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
    // Only while the path still names the inode we hold locked: else it is someone's new one.
    gone = !runtime_dir::fd_is_at_path(fd, path) || ::unlink(path) == 0;
  }
  sys::close(fd);
  return gone;
}

// Reads a small /proc file into buf (NUL-terminated); returns the bytes read.
size_t read_proc_file(const char* path, char* buf, size_t size) {
  size_t n = 0;
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    while (n + 1 < size) {
      const ssize_t r = sys::read(fd, buf + n, size - 1 - n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      n += static_cast<size_t>(r);
    }
    sys::close(fd);
  }
  buf[n] = '\0';
  return n;
}

// Fills the header of a zeroed segment (magic excluded).
void fill_header(Segment& s) {
  s.version = kStatsVersion;
  set(s.process.rq_low_water, kNoLowWater);
  s.pid = static_cast<uint32_t>(::getpid());
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  s.start_realtime_ns =
      static_cast<uint64_t>(now.tv_sec) * 1000000000u + static_cast<uint64_t>(now.tv_nsec);
  const size_t comm_len = read_proc_file("/proc/self/comm", s.comm, sizeof s.comm);
  if (comm_len > 0 && s.comm[comm_len - 1] == '\n') s.comm[comm_len - 1] = '\0';
  // argv is NUL-separated (and NUL-terminated): join with spaces, drop the trailing ones.
  size_t len = read_proc_file("/proc/self/cmdline", s.cmdline, sizeof s.cmdline);
  for (size_t i = 0; i < len; ++i) {
    if (s.cmdline[i] == '\0') s.cmdline[i] = ' ';
  }
  while (len > 0 && s.cmdline[len - 1] == ' ') s.cmdline[--len] = '\0';
}

void store_magic(Segment& s) {
  std::atomic_ref<uint64_t>(s.magic).store(kStatsMagic, std::memory_order_release);
}

// Creates, locks and maps the process's file; the segment or null with *why set. Called
// under g_segment_mutex.
Segment* publish(std::string* why) {
  const std::string& runtime_dir = config::current().runtime_dir;
  std::string dir;
  if (!ensure_directories(runtime_dir, &dir, why)) return nullptr;
  const std::string path = dir + "/" + std::to_string(::getpid());
  if (path.size() >= sizeof g_path) {
    *why = "path " + path + " is too long";
    return nullptr;
  }
  for (int attempt = 0; attempt < kCreateAttempts; ++attempt) {
    const int fd = sys::move_fd_high(
        ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err != EEXIST) {
        *why = "cannot create " + path + ": " + runtime_dir::errno_text(err);
        return nullptr;
      }
      if (!remove_if_stale(path.c_str())) pause_briefly();
      continue;
    }
    // EWOULDBLOCK while a reader holds LOCK_EX to remove the file as stale (it was not
    // locked yet): that reader unlinks it, and we start over.
    if (::flock(fd, LOCK_SH | LOCK_NB) != 0) {
      const int err = errno;
      if (err != EWOULDBLOCK && err != EINTR && runtime_dir::fd_is_at_path(fd, path.c_str())) {
        ::unlink(path.c_str());
      }
      sys::close(fd);
      if (err == EWOULDBLOCK || err == EINTR) continue;
      *why = "cannot lock " + path + ": " + runtime_dir::errno_text(err);
      return nullptr;
    }
    if (!runtime_dir::fd_is_at_path(fd, path.c_str())) {
      sys::close(fd);
      continue;
    }
    void* map = MAP_FAILED;
    if (::ftruncate(fd, static_cast<off_t>(sizeof(Segment))) == 0) {
      map = ::mmap(nullptr, mapping_length(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    if (map == MAP_FAILED) {
      *why = "cannot size or map " + path + ": " + runtime_dir::errno_text(errno);
      ::unlink(path.c_str());
      sys::close(fd);
      return nullptr;
    }
    // The file is zero-filled, and a Segment (an aggregate of atomics) is all zeros: its
    // counters begin their lifetime in the mapping as it is. No constructor runs, so no
    // page is touched before a counter on it is used (the file stays sparse).
    Segment* s = static_cast<Segment*>(map);
    fill_header(*s);
    store_magic(*s);
    g_fd = fd;
    g_owner = ::getpid();
    std::memcpy(g_path, path.c_str(), path.size() + 1);
    g_mapped = s;
    return s;
  }
  *why = path + " is held by another live process";
  return nullptr;
}

Segment* create_segment() {
  std::string why;
  if (config::current().stats == "none") {
    SMC_LOG_DEBUG("stats: SMCPRE_STATS=none: counters kept private");
  } else if (Segment* s = publish(&why)) {
    return s;
  } else {
    SMC_LOG_WARN("stats: cannot publish this process's counters ({}); keeping them private", why);
  }
  // Out of memory too: the one static segment (shared by a fork child that ends up here as
  // well; its counters are then meaningless, but the data path keeps running).
  static Segment last_resort;
  // Anonymous memory is zero pages until used, like the file.
  void* map =
      ::mmap(nullptr, mapping_length(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  Segment* s = map != MAP_FAILED ? static_cast<Segment*>(map) : &last_resort;
  fill_header(*s);
  store_magic(*s);
  return s;
}

// A claimed slot starts from zero; in_use, stored last with release ordering, makes it
// visible to readers, which load in_use with acquire before the counters.
template <typename Slot, size_t N>
void claim(Slot& slot, uint64_t in_use, const CounterField<Slot> (&fields)[N]) {
  for (const CounterField<Slot>& f : fields) (slot.*f.member).store(0, std::memory_order_relaxed);
  slot.in_use.store(in_use, std::memory_order_release);
}

// A free published slot (if `published`), else a private one; *overflowed tells which.
template <typename Slot, size_t N, size_t M>
Slot* acquire_slot(Slot (&slots)[N], bool published, PrivateSlot<Slot>*& privates, Slot& sink,
                   uint64_t in_use, const CounterField<Slot> (&fields)[M], bool* overflowed) {
  std::lock_guard lock(g_slot_mutex);
  *overflowed = false;
  for (size_t i = 0; published && i < N; ++i) {
    if (slots[i].in_use.load(std::memory_order_relaxed) == 0) {
      claim(slots[i], in_use, fields);
      return &slots[i];
    }
  }
  *overflowed = true;
  for (PrivateSlot<Slot>* p = privates; p != nullptr; p = p->next) {
    if (p->slot.in_use.load(std::memory_order_relaxed) == 0) {
      claim(p->slot, in_use, fields);
      return &p->slot;
    }
  }
  auto* p = new (std::nothrow) PrivateSlot<Slot>();
  if (p == nullptr) return &sink;  // out of memory: shared, meaningless, but never null
  claim(p->slot, in_use, fields);
  p->next = privates;
  privates = p;
  return &p->slot;
}

// In a fork child: the inherited shared mapping is replaced, at the same address, by
// private zero pages. Objects the child abandoned may still count into it (and release
// their slots), and must not change the parent's published counters; what they count
// there is never read.
void privatize(Segment* mapped) {
  // On failure the shared mapping stays: the parent's counters may then drift.
  ::mmap(mapped, mapping_length(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
         -1, 0);
}

}  // namespace

std::string stats_dir(const std::string& runtime_dir) {
  return runtime_dir + "/stats";
}

std::string user_stats_dir(const std::string& runtime_dir, uid_t uid) {
  return runtime_dir::subtree_path(runtime_dir, "stats", uid);
}

Segment& segment() {
  Segment* s = g_segment.load(std::memory_order_acquire);
  if (s != nullptr) return *s;
  std::lock_guard lock(g_segment_mutex);
  s = g_segment.load(std::memory_order_relaxed);
  if (s == nullptr) {
    s = create_segment();
    g_segment.store(s, std::memory_order_release);
  }
  return *s;
}

bool published_any() {
  return g_segment.load(std::memory_order_acquire) != nullptr;
}

LinkSlot* acquire_link_slot(uint64_t id) {
  Segment& s = segment();
  // in_use 0 marks a free slot: a link with id 0 (a caller's bug) could not hold a
  // published one, so it gets a private slot.
  bool overflowed = false;
  LinkSlot* slot = acquire_slot(s.links, id != 0, g_private_links, g_sink_link, id != 0 ? id : 1,
                                kLinkFields, &overflowed);
  if (overflowed && id != 0) add(s.process.link_slots_overflowed);
  return slot;
}

void release_link_slot(LinkSlot* slot) {
  if (slot == nullptr) return;
  // What the link counted stays in the process's totals.
  ProcessCounters& p = segment().process;
  auto keep = [&](Counter& total, const Counter& c) {
    add(total, c.load(std::memory_order_relaxed));
  };
  keep(p.closed_links_cdc_received, slot->cdc_received);
  keep(p.closed_links_llc_received, slot->llc_received);
  keep(p.closed_links_llc_sent, slot->llc_sent);
  keep(p.closed_links_sends, slot->sends);
  keep(p.closed_links_write_bytes, slot->write_bytes);
  keep(p.closed_links_rnr_events, slot->rnr_events);
  keep(p.closed_links_rnr_retries, slot->rnr_retries);
  slot->in_use.store(0, std::memory_order_release);
}

WorkerSlot* acquire_worker_slot() {
  bool overflowed = false;
  return acquire_slot(segment().workers, true, g_private_workers, g_sink_worker, 1, kWorkerFields,
                      &overflowed);
}

void release_worker_slot(WorkerSlot* slot) {
  if (slot != nullptr) slot->in_use.store(0, std::memory_order_release);
}

ConnectionSlot* acquire_connection_slot() {
  Segment& s = segment();
  const uint64_t number = g_connection_seq.fetch_add(1, std::memory_order_relaxed) + 1;
  std::lock_guard lock(g_slot_mutex);
  // From where the last one was found: with connections opened and closed in turn, the
  // next free slot is usually the next one.
  for (size_t n = 0; n < kMaxConnectionSlots; ++n) {
    const size_t i = (g_connection_hint + n) % kMaxConnectionSlots;
    if (s.connections[i].in_use.load(std::memory_order_relaxed) == 0) {
      claim(s.connections[i], number, kConnectionFields);
      g_connection_hint = (i + 1) % kMaxConnectionSlots;
      return &s.connections[i];
    }
  }
  add(s.process.connection_slots_overflowed);
  for (PrivateSlot<ConnectionSlot>* p = g_private_connections; p != nullptr; p = p->next) {
    if (p->slot.in_use.load(std::memory_order_relaxed) == 0) {
      claim(p->slot, number, kConnectionFields);
      return &p->slot;
    }
  }
  auto* p = new (std::nothrow) PrivateSlot<ConnectionSlot>();
  if (p == nullptr) return &g_sink_connection;
  claim(p->slot, number, kConnectionFields);
  p->next = g_private_connections;
  g_private_connections = p;
  return &p->slot;
}

void release_connection_slot(ConnectionSlot* slot) {
  if (slot == nullptr) return;
  // Its bytes stay in the process's totals.
  ProcessCounters& p = segment().process;
  const uint64_t path = slot->path.load(std::memory_order_relaxed);
  const bool smc = path == kPathSmcShm || path == kPathSmcVerbs;
  add(smc ? p.closed_smc_bytes_sent : p.closed_tcp_bytes_sent,
      slot->bytes_sent.load(std::memory_order_relaxed));
  add(smc ? p.closed_smc_bytes_received : p.closed_tcp_bytes_received,
      slot->bytes_received.load(std::memory_order_relaxed));
  slot->in_use.store(0, std::memory_order_release);
}

void count_fallback(uint32_t code) {
  Segment& s = segment();
  add(s.process.connections_fallback);
  // Slots are claimed for good (code 0 -> code) and never freed: a reason seen once stays
  // listed with its count.
  for (FallbackSlot& f : s.fallbacks) {
    uint64_t seen = f.code.load(std::memory_order_acquire);
    if (seen == 0 && f.code.compare_exchange_strong(seen, code, std::memory_order_acq_rel)) {
      seen = code;
    }
    if (seen == code) {
      add(f.count);
      return;
    }
  }
  add(s.process.fallback_slots_overflowed);
}

void set_address(Counter& family_port, Counter& hi, Counter& lo, const sockaddr_storage& a) {
  uint8_t bytes[16] = {};
  uint64_t port = 0;
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    std::memcpy(bytes, &in.sin_addr, 4);
    port = ntohs(in.sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
    std::memcpy(bytes, &in6.sin6_addr, 16);
    port = ntohs(in6.sin6_port);
  }
  uint64_t h = 0;
  uint64_t l = 0;
  for (int i = 0; i < 8; ++i) {
    h = h << 8 | bytes[i];
    l = l << 8 | bytes[8 + i];
  }
  set(family_port, uint64_t{a.ss_family} << 16 | port);
  set(hi, h);
  set(lo, l);
}

void reset_after_fork() {
  // The fork child runs one thread: the mutexes may have been copied while held by a
  // thread that does not exist here.
  new (&g_segment_mutex) std::mutex();
  new (&g_slot_mutex) std::mutex();
  g_segment.store(nullptr, std::memory_order_relaxed);
  if (g_mapped != nullptr) privatize(g_mapped);
  g_mapped = nullptr;
  // Our copy of the descriptor would keep the parent's lock alive after the parent died.
  if (g_fd >= 0) sys::close(g_fd);
  g_fd = -1;
  g_owner = 0;
  g_path[0] = '\0';
}

void unpublish_at_exit() {
  if (g_segment.load(std::memory_order_acquire) == nullptr) return;
  if (g_fd < 0 || g_owner != ::getpid()) return;
  // The mapping and the lock stay until the process is gone: threads may still count.
  if (runtime_dir::fd_is_at_path(g_fd, g_path)) ::unlink(g_path);
}

}  // namespace smcpre::stats
