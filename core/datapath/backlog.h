// Backlog workers (doc/design.md §3.2): the threads that do receive-side connection work,
// so that the thread reaping a link's completions only classifies and re-posts.
//
// Each worker owns a queue. A connection's messages always go to the worker chosen by the
// hash of its TCP 4-tuple, and a worker applies its queue in order, so one connection's
// messages are applied in the order they arrived. A worker spins briefly when its queue
// runs empty (a busy link refills it within microseconds) and then sleeps; it is woken by
// the next submission.
//
// No thread hop where none is needed (doc/design.md §6.1): an application thread that reaps a
// link itself (it waits on a socket, or is about to read or write one) applies a message
// at once when nobody is applying for the message's worker — first what is queued there,
// then the message — which keeps each connection's order. Only the background poller (the
// progress thread) always hands over: it never does connection work.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/datapath/connection_events.h"
#include "core/stats/layout.h"
#include "core/datapath/wait.h"

namespace smcpre::core {

class RecvPool;

struct BacklogItem {
  enum class Kind : uint8_t {
    kCdc,           // a CDC message in receive pool buffer `buffer` (given back when applied)
    kSendComplete,  // a signaled CDC of the connection completed (wr_id)
    kLinkDown,      // the link went down after everything before this was applied
  };
  std::shared_ptr<ConnectionEvents> connection;
  uint64_t flow_hash = 0;  // the connection's: chooses the worker
  uint64_t wr_id = 0;
  uint32_t buffer = 0;
  Kind kind = Kind::kCdc;
};

// Applies one item. The engine's applier hands it to the connection (a CDC's buffer goes
// back to `pool` first); tests pass their own.
using BacklogApplier = void (*)(BacklogItem& item, RecvPool& pool);
void apply_to_connection(BacklogItem& item, RecvPool& pool);

// A CDC message that is not one (wrong length or type, a bad field) is dropped, as Linux
// drops it, and the connection goes on; counted for the process and logged the 1st, 2nd,
// 4th, 8th... time, so that a peer that sends a million is heard, not echoed.
void drop_malformed_cdc(std::string_view what);

class Backlog;

// The one place that chooses who applies receive-side work. With workers (`backlog` not
// null) the item is submitted in its connection's order, and may still run on this thread
// (Backlog::submit); a CDC's buffer is then the backlog's. In inline mode it is applied
// here, now, and a CDC's buffer stays the caller's, to be posted again. Returns whether
// the buffer was handed over.
bool dispatch(Backlog* backlog, BacklogItem&& item, RecvPool& pool, bool may_run_here);

class Backlog {
 public:
  // The process's workers, started on first use per SMCPRE_BACKLOG_CPUS; nullptr in inline
  // mode (SMCPRE_BACKLOG_CPUS=none) or when no worker could be started (logged, and the
  // process runs inline).
  static Backlog* get();
  // In a fork child: the parent's workers do not exist here; the child starts its own on
  // first use.
  static void reset_after_fork();
  // At exit: every worker applies what is queued and stops (bounded wait); anything
  // submitted afterwards is applied by the submitting thread.
  static void stop_at_exit();

  // Starts one worker per CPU (pinned). Tests make their own; `pool` takes back the
  // buffers of applied CDC messages.
  static std::unique_ptr<Backlog> start(const std::vector<int>& cpus, RecvPool& pool,
                                        std::string* error,
                                        BacklogApplier applier = apply_to_connection);
  ~Backlog();  // stops and joins the workers
  Backlog(const Backlog&) = delete;
  Backlog& operator=(const Backlog&) = delete;

  size_t worker_count() const { return workers_.size(); }
  size_t worker_for(uint64_t flow_hash) const { return flow_hash % workers_.size(); }
  // At exit, and by the destructor: every worker applies what is queued and stops.
  void stop();

  // Applies `item` in the connection's order: at once on this thread if `may_run_here`
  // and the worker is idle, else by the worker. Returns true if it was applied here.
  bool submit(BacklogItem&& item, bool may_run_here);
  // Waits (bounded by deadline_ns) until everything submitted so far for `connection`'s
  // worker has been applied: for whoever must judge a connection after its messages (the
  // peer's TCP connection ended: did its SMC close come first?).
  bool wait_applied(uint64_t flow_hash, int64_t deadline_ns);
  // The same for every worker, bounded (a second): for a waiter whose link went down,
  // so that what arrived before is applied before it reports the failure.
  bool wait_all_applied();

  // The CPUs the default uses (empty: inline, below 4 CPUs; from those the process may
  // run on), and the validation of a configured list: every CPU must exist. On failure
  // *error names the first one that does not.
  static std::vector<int> default_cpus();
  static bool validate_cpus(const std::vector<int>& cpus, std::string* error);

 private:
  struct Worker;
  Backlog(RecvPool& pool, BacklogApplier applier);
  void run(Worker& worker);

  RecvPool& pool_;
  const BacklogApplier apply_;
  stats::ProcessCounters& process_stats_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> stopped_{false};
};

}  // namespace smcpre::core
