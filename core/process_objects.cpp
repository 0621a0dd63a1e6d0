#include "core/process_objects.h"

#include "config/option_map.h"
#include "core/connection.h"
#include "core/datapath/backlog.h"
#include "core/datapath/progress.h"
#include "core/datapath/recv_pool.h"
#include "core/engine.h"
#include "core/engine_state.h"
#include "core/stats/exit_summary.h"
#include "core/stats/segment.h"
#include "rdma/device.h"

namespace smcpre::core {
namespace {

void close_connections_at_exit() {
  if (EngineState* engine = EngineState::get_if_created()) engine->close_all_at_exit();
}

void summarize_and_unpublish_at_exit() {
  print_exit_summary();
  stats::unpublish_at_exit();
}

// The order is the exit order: messages the workers still hold are applied first (a
// peer's close among them); then connections still open get their orderly close, applied
// by the exiting thread; the counters are summed up and withdrawn last, when nothing
// counts any more. In a fork child the resets are independent of each other.
constexpr ProcessObject kObjects[] = {
    {"device keys", rdma::reset_devices_after_fork, nullptr},
    {"backlog workers", Backlog::reset_after_fork, Backlog::stop_at_exit},
    {"engine state", EngineState::reset_after_fork, close_connections_at_exit},
    {"progress thread", reset_progress_thread_after_fork, nullptr},
    {"stale readiness mirrors", forget_stale_mirrors_after_fork, nullptr},
    {"receive pool", RecvPool::reset_after_fork, nullptr},
    {"listeners", Engine::renew_listeners_in_fork_child, nullptr},
    {"option program map", option::reset_after_fork, nullptr},
    {"published counters", stats::reset_after_fork, summarize_and_unpublish_at_exit},
};

}  // namespace

std::span<const ProcessObject> process_objects() {
  return kObjects;
}

void reset_process_objects_in_fork_child() {
  for (const ProcessObject& o : kObjects) {
    if (o.reset_in_fork_child != nullptr) o.reset_in_fork_child();
  }
}

void run_process_objects_at_exit() {
  for (const ProcessObject& o : kObjects) {
    if (o.at_exit != nullptr) o.at_exit();
  }
}

// The engine's fork and exit entry points (core/engine.h) are the table's two passes.
void Engine::after_fork_in_child() {
  reset_process_objects_in_fork_child();
}

void Engine::at_exit() {
  run_process_objects_at_exit();
}

}  // namespace smcpre::core
