#include "core/datapath/backlog.h"

#include <pthread.h>
#include <sched.h>
#include <sys/sysinfo.h>

#include <algorithm>
#include <cerrno>
#include <new>

#include "config/config.h"
#include "config/log.h"
#include "core/datapath/abandoned.h"
#include "core/datapath/recv_pool.h"
#include "core/stats/segment.h"
#include "core/wire/cdc.h"

namespace smcpre::core {

struct alignas(64) Backlog::Worker {
  size_t index = 0;
  int cpu = -1;
  std::mutex mutex;
  std::vector<BacklogItem> queue;  // under mutex
  // Items in `queue` (written under mutex, read without it to decide whether to look).
  alignas(64) std::atomic<uint32_t> queued{0};
  // Held while items of this worker are being applied, by the worker or by an application
  // thread applying one at once: one applier at a time keeps each connection's order.
  alignas(64) std::atomic<bool> busy{false};
  WaitQueue wake;
  SpinBudget spin;
  std::atomic<bool> exited{false};
  stats::WorkerSlot* slot = nullptr;
  std::thread thread;
};

namespace {

// Below this many CPUs the default is inline mode (see default_cpus()).
constexpr size_t kMinCpusForWorkers = 4;

std::atomic<Backlog*> g_backlog{nullptr};
std::atomic<bool> g_backlog_tried{false};
std::mutex g_backlog_mutex;

// How long a worker whose queue ran empty keeps looking before it sleeps (adapted by
// SpinBudget: not at all while its queue stays empty for longer than this).
int64_t worker_spin_ns() {
  return int64_t{config::current().spin_us} * 1000;
}

void acquire(std::atomic<bool>& busy) {
  while (busy.exchange(true, std::memory_order_acquire)) cpu_relax();
}

std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

std::string cpu_list_text(const std::vector<int>& cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) out += '-' + std::to_string(cpus[j]);
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

}  // namespace

std::vector<int> Backlog::default_cpus() {
  // Measured on a 2-core machine (doc/benchmarks.md, fan-in): with both ends of a connection and
  // their threads sharing two CPUs, a worker can only take CPU time from an application
  // thread, and every fan-in case ran faster inline. So below 4 CPUs the default is inline
  // (empty). From 4 on, on paper (a 64-core server): one worker per 8 CPUs the process may
  // use, at most 8, on the highest-numbered ones (applications and interrupts tend to
  // start at CPU 0); a link's message rate, not the CPU count, bounds what more could take.
  std::vector<int> allowed = allowed_cpus();
  if (allowed.size() < kMinCpusForWorkers) return {};
  const size_t count = std::clamp<size_t>(allowed.size() / 8, 1, 8);
  return std::vector<int>(allowed.end() - static_cast<std::ptrdiff_t>(count), allowed.end());
}

bool Backlog::validate_cpus(const std::vector<int>& cpus, std::string* error) {
  // A CPU outside the process's own affinity mask is fine (a worker may be given a CPU the
  // application was kept off with taskset); one the machine does not have is not.
  const int configured = get_nprocs_conf();
  for (int cpu : cpus) {
    if (cpu < 0 || cpu >= configured) {
      *error = "CPU " + std::to_string(cpu) + " does not exist (this machine has CPUs 0-" +
               std::to_string(configured - 1) + ")";
      return false;
    }
  }
  return !cpus.empty();
}

Backlog* Backlog::get() {
  Backlog* backlog = g_backlog.load(std::memory_order_acquire);
  if (backlog != nullptr || g_backlog_tried.load(std::memory_order_acquire)) return backlog;
  std::lock_guard lock(g_backlog_mutex);
  if (g_backlog_tried.load(std::memory_order_relaxed)) return g_backlog.load();
  const config::Config& config = config::current();
  std::vector<int> cpus;
  std::string error;
  if (!config.backlog_inline) {
    cpus = default_cpus();
    if (config.backlog_cpus && !validate_cpus(*config.backlog_cpus, &error)) {
      SMC_LOG_ERROR(
          "SMCPRE_BACKLOG_CPUS: {}; using the default ({})", error,
          cpus.empty() ? std::string("inline below 4 CPUs") : "CPUs " + cpu_list_text(cpus));
    } else if (config.backlog_cpus) {
      cpus = *config.backlog_cpus;
    }
  }
  if (cpus.empty()) {
    SMC_LOG_DEBUG("backlog: none, receive processing inline{}",
                  config.backlog_inline ? "" : " (the default below 4 CPUs)");
  } else {
    RecvPool* pool = RecvPool::get();
    if (pool != nullptr) {
      // Lives as long as the process (its threads may be applying at exit).
      backlog = start(cpus, *pool, &error).release();
      if (backlog == nullptr) {
        SMC_LOG_ERROR("backlog workers: {}; receive processing runs inline", error);
      }
    }
  }
  g_backlog.store(backlog, std::memory_order_release);
  g_backlog_tried.store(true, std::memory_order_release);
  return backlog;
}

void Backlog::reset_after_fork() {
  keep_abandoned(g_backlog.exchange(nullptr, std::memory_order_acq_rel));
  g_backlog_tried.store(false, std::memory_order_release);
  new (&g_backlog_mutex) std::mutex();
}

void Backlog::stop_at_exit() {
  if (Backlog* backlog = g_backlog.load(std::memory_order_acquire)) backlog->stop();
}

Backlog::Backlog(RecvPool& pool, BacklogApplier applier)
    : pool_(pool), apply_(applier), process_stats_(stats::segment().process) {}

std::unique_ptr<Backlog> Backlog::start(const std::vector<int>& cpus, RecvPool& pool,
                                        std::string* error, BacklogApplier applier) {
  if (cpus.empty()) {
    *error = "no CPU to run on";
    return nullptr;
  }
  std::unique_ptr<Backlog> backlog(new Backlog(pool, applier));
  for (size_t i = 0; i < cpus.size(); ++i) {
    auto worker = std::make_unique<Worker>();
    worker->index = i;
    worker->cpu = cpus[i];
    worker->slot = stats::acquire_worker_slot();
    stats::set(worker->slot->cpu, static_cast<uint64_t>(cpus[i]));
    backlog->workers_.push_back(std::move(worker));
  }
  for (auto& worker : backlog->workers_) {
    try {
      Worker* w = worker.get();
      Backlog* b = backlog.get();
      worker->thread = std::thread([b, w] { b->run(*w); });
    } catch (const std::exception& e) {
      *error = std::string("cannot start a worker thread: ") + e.what();
      return nullptr;  // the destructor stops those that did start
    }
  }
  SMC_LOG_DEBUG("backlog: {} worker(s) on CPUs {}", cpus.size(), cpu_list_text(cpus));
  return backlog;
}

Backlog::~Backlog() {
  stop();
  for (auto& worker : workers_) {
    if (worker->thread.joinable()) worker->thread.join();
    stats::release_worker_slot(worker->slot);
  }
}

void Backlog::stop() {
  if (stopping_.exchange(true)) return;
  for (auto& worker : workers_) worker->wake.wake();
  // Bounded: a worker applying a message may wait for a lock that an exiting thread holds.
  const int64_t deadline = now_ns() + 200'000'000;
  for (auto& worker : workers_) {
    while (!worker->exited.load(std::memory_order_acquire) && worker->thread.joinable() &&
           now_ns() < deadline) {
      sched_yield();
    }
  }
  size_t left = 0;
  for (auto& worker : workers_) left += !worker->exited.load(std::memory_order_acquire);
  if (left == 0) {
    SMC_LOG_DEBUG("backlog: {} worker(s) stopped", workers_.size());
  } else {
    SMC_LOG_DEBUG("backlog: {} of {} worker(s) still busy at stop; the rest stopped", left,
                  workers_.size());
  }
  stopped_.store(true, std::memory_order_release);
}

bool Backlog::submit(BacklogItem&& item, bool may_run_here) {
  Worker& w = *workers_[worker_for(item.flow_hash)];
  if (stopping_.load(std::memory_order_acquire)) {
    // No worker may be left to apply it: this thread applies what is queued, then it.
    acquire(w.busy);
    std::vector<BacklogItem> earlier;
    {
      std::lock_guard lock(w.mutex);
      earlier.swap(w.queue);
      w.queued.store(0, std::memory_order_relaxed);
    }
    for (auto& e : earlier) apply_(e, pool_);
    apply_(item, pool_);
    w.busy.store(false, std::memory_order_release);
    return true;
  }
  if (may_run_here && !w.busy.exchange(true, std::memory_order_acquire)) {
    // Nobody is applying for this worker: this thread does, what is queued (older) first
    // and then this item, with no hop. The worker, if it was about to, finds nothing.
    // Thread-local so that its capacity is kept from call to call.
    thread_local std::vector<BacklogItem> earlier;
    if (w.queued.load(std::memory_order_acquire) != 0) {
      {
        std::lock_guard lock(w.mutex);
        earlier.swap(w.queue);
        w.queued.store(0, std::memory_order_relaxed);
      }
      stats::set(w.slot->queue_depth, 0);
      // (They were counted as backlogged when they were queued.)
      for (auto& e : earlier) apply_(e, pool_);
    }
    const bool cdc = item.kind == BacklogItem::Kind::kCdc;
    apply_(item, pool_);
    w.busy.store(false, std::memory_order_release);
    earlier.clear();  // the connections they held, released outside the busy section
    if (cdc) stats::add(process_stats_.cdc_inline);
    return true;
  }
  const bool cdc = item.kind == BacklogItem::Kind::kCdc;
  uint32_t depth;
  {
    std::lock_guard lock(w.mutex);
    w.queue.push_back(std::move(item));
    depth = static_cast<uint32_t>(w.queue.size());
    w.queued.store(depth, std::memory_order_release);
  }
  stats::set(w.slot->queue_depth, depth);
  stats::raise_to(w.slot->queue_max, depth);
  if (cdc) stats::add(process_stats_.cdc_backlogged);
  w.wake.wake();
  return false;
}

bool Backlog::wait_applied(uint64_t flow_hash, int64_t deadline_ns) {
  Worker& w = *workers_[worker_for(flow_hash)];
  while (w.queued.load(std::memory_order_acquire) != 0 || w.busy.load(std::memory_order_acquire)) {
    if (stopped_.load(std::memory_order_acquire) || now_ns() >= deadline_ns) return false;
    sched_yield();
  }
  return true;
}

bool Backlog::wait_all_applied() {
  const int64_t deadline = now_ns() + 1'000'000'000;
  bool all = true;
  for (size_t i = 0; i < workers_.size(); ++i) all &= wait_applied(i, deadline);
  return all;
}

namespace {

std::atomic<uint64_t> g_malformed_cdc{0};

// The one place a received CDC message is decoded.
bool decode_received_cdc(std::span<const uint8_t> bytes, cdc::Message* message) {
  std::string error;
  if (cdc::decode(bytes, message, &error)) return true;
  drop_malformed_cdc(error);
  return false;
}

// Applies `item` to its connection. A CDC is decoded from its pool buffer first; with
// `return_buffer` (the backlog's buffer) it goes back to `pool` before the message is
// applied, as applying may take a while; else it stays the caller's, to be posted again.
void apply_item(BacklogItem& item, RecvPool& pool, bool return_buffer) {
  switch (item.kind) {
    case BacklogItem::Kind::kCdc: {
      cdc::Message message;
      const bool ok = decode_received_cdc({pool.buffer(item.buffer), cdc::kSize}, &message);
      if (return_buffer) pool.give(item.buffer);
      if (ok) item.connection->on_cdc(message);
      return;
    }
    case BacklogItem::Kind::kSendComplete:
      item.connection->on_send_complete(item.wr_id);
      return;
    case BacklogItem::Kind::kLinkDown:
      item.connection->on_link_down();
      return;
  }
}

}  // namespace

void drop_malformed_cdc(std::string_view what) {
  const uint64_t n = g_malformed_cdc.fetch_add(1, std::memory_order_relaxed) + 1;
  if (log::thinned(n)) {
    SMC_LOG_WARN("malformed CDC message dropped: {} ({} so far)", what, n);
  }
}

void apply_to_connection(BacklogItem& item, RecvPool& pool) {
  apply_item(item, pool, true);
}

bool dispatch(Backlog* backlog, BacklogItem&& item, RecvPool& pool, bool may_run_here) {
  if (backlog != nullptr) {
    backlog->submit(std::move(item), may_run_here);
    return true;
  }
  apply_item(item, pool, false);
  return false;
}

void Backlog::run(Worker& w) {
  const std::string name = "smcpre-bl" + std::to_string(w.index);
  pthread_setname_np(pthread_self(), name.c_str());
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(w.cpu, &set);
  if (int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set); rc != 0) {
    SMC_LOG_WARN("backlog worker {}: cannot pin to CPU {}: errno {}", w.index, w.cpu, rc);
  }
  std::vector<BacklogItem> batch;
  int64_t idle_since = now_ns();
  while (true) {
    if (w.queued.load(std::memory_order_acquire) == 0) {
      if (stopping_.load(std::memory_order_acquire)) break;
      // Look again for a while: on a busy link the next message is microseconds away,
      // and a sleep would cost a futex wake per message (doc/design.md §6.1).
      const int64_t max_spin = worker_spin_ns();
      const int64_t spin = w.spin.spin_ns(max_spin);
      int64_t now = now_ns();
      const int64_t spin_until = now + spin;
      while (w.queued.load(std::memory_order_acquire) == 0 && now < spin_until &&
             !stopping_.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 16; ++i) cpu_relax();
        now = now_ns();
        if (now - idle_since > 5'000) sched_yield();  // others may need this CPU
      }
      if (w.queued.load(std::memory_order_acquire) == 0) {
        const uint32_t seen = w.wake.seq();
        if (w.queued.load(std::memory_order_acquire) == 0 &&
            !stopping_.load(std::memory_order_acquire)) {
          stats::add(w.slot->sleeps);
          w.wake.sleep(seen, now_ns() + 1'000'000'000);
        }
        continue;
      }
    }
    w.spin.record(now_ns() - idle_since, worker_spin_ns());
    acquire(w.busy);
    {
      std::lock_guard lock(w.mutex);
      batch.swap(w.queue);
      w.queued.store(0, std::memory_order_relaxed);
    }
    stats::set(w.slot->queue_depth, 0);
    uint64_t cdc = 0;
    for (auto& item : batch) {
      cdc += item.kind == BacklogItem::Kind::kCdc;
      apply_(item, pool_);
    }
    w.busy.store(false, std::memory_order_release);
    stats::add(w.slot->cdc_processed, cdc);
    stats::add(w.slot->other_processed, batch.size() - cdc);
    batch.clear();  // connections released outside the busy section
    idle_since = now_ns();
  }
  w.exited.store(true, std::memory_order_release);
}

}  // namespace smcpre::core
