// The receive path's moving parts without a link: the receive buffer pool (lock-free,
// shared by reapers and workers) and the backlog workers (per-connection order, the
// apply-at-once path, stop, CPU validation).
#include <sched.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/datapath/backlog.h"
#include "core/datapath/recv_pool.h"
#include "core/stats/segment.h"
#include "core/datapath/wait.h"

using smcpre::core::Backlog;
using smcpre::core::BacklogItem;
using smcpre::core::RecvPool;

namespace {

struct TestEnv {
  TestEnv() {
    char tmpl[] = "/tmp/smcpre-test-XXXXXX";
    const char* dir = mkdtemp(tmpl);
    if (dir != nullptr) setenv("SMCPRE_RUNTIME_DIR", dir, 1);
  }
  ~TestEnv() { smcpre::stats::unpublish_at_exit(); }
} test_env;

std::vector<int> usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

// What the order test's applier sees. Flow f's items carry wr_id 1, 2, 3, ... in the
// order they were submitted; any other order, or two appliers of one flow at once, is
// counted as a violation.
constexpr size_t kFlows = 64;
struct Observed {
  std::atomic<uint64_t> last[kFlows];
  std::atomic<int> inside[kFlows];
  std::atomic<uint64_t> violations{0};
  std::atomic<uint64_t> applied{0};
  std::atomic<uint64_t> slow_every{0};  // applying every n-th item takes ~20 µs (0: never)
};
Observed observed;

void record(BacklogItem& item, RecvPool& pool) {
  const size_t flow = item.flow_hash % kFlows;
  if (observed.inside[flow].fetch_add(1) != 0) observed.violations.fetch_add(1);
  if (observed.last[flow].load() + 1 != item.wr_id) observed.violations.fetch_add(1);
  observed.last[flow].store(item.wr_id);
  const uint64_t n = observed.applied.fetch_add(1) + 1;
  const uint64_t slow = observed.slow_every.load();
  if (slow != 0 && n % slow == 0) {
    const int64_t until = smcpre::core::now_ns() + 20'000;
    while (smcpre::core::now_ns() < until) smcpre::core::cpu_relax();
  }
  observed.inside[flow].fetch_sub(1);
  if (item.kind == BacklogItem::Kind::kCdc) pool.give(item.buffer);
}

void reset_observed() {
  for (size_t i = 0; i < kFlows; ++i) {
    observed.last[i] = 0;
    observed.inside[i] = 0;
  }
  observed.violations = 0;
  observed.applied = 0;
}

}  // namespace

TEST_CASE("the receive pool hands out every buffer once, from any thread") {
  auto pool = RecvPool::create(256);
  REQUIRE(pool);
  CHECK(pool->size() == 256);
  CHECK(pool->bytes() == 256 * RecvPool::kBufferSize);

  std::vector<uint32_t> taken;
  uint32_t index;
  while (pool->take(&index)) taken.push_back(index);
  CHECK(taken.size() == 256);
  CHECK(pool->free_count() == 0);
  CHECK(pool->low_water() == 0);
  std::vector<bool> seen(256);
  for (uint32_t i : taken) {
    REQUIRE(i < 256);
    CHECK_FALSE(seen[i]);
    seen[i] = true;
  }
  for (uint32_t i : taken) pool->give(i);
  CHECK(pool->free_count() == 256);

  // Several threads taking and giving back at once: a buffer is never held twice.
  std::unique_ptr<std::atomic<int>[]> held(new std::atomic<int>[256]);
  for (int i = 0; i < 256; ++i) held[i] = 0;
  std::atomic<uint64_t> doubles{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::vector<uint32_t> mine;
      for (int round = 0; round < 20000; ++round) {
        uint32_t i;
        if (mine.size() < 40 && pool->take(&i)) {
          if (held[i].fetch_add(1) != 0) doubles.fetch_add(1);
          mine.push_back(i);
        }
        if (!mine.empty() && (round % 3 == 0 || mine.size() >= 40)) {
          held[mine.back()].fetch_sub(1);
          pool->give(mine.back());
          mine.pop_back();
        }
      }
      for (uint32_t i : mine) {
        held[i].fetch_sub(1);
        pool->give(i);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(doubles == 0);
  CHECK(pool->free_count() == 256);
  taken.clear();
  while (pool->take(&index)) taken.push_back(index);
  CHECK(taken.size() == 256);
}

TEST_CASE("each flow's items are applied in order, one applier at a time, across workers") {
  reset_observed();
  const std::vector<int> cpus = usable_cpus();
  // Four workers, on whatever CPUs there are (two share one on a 2-core machine).
  std::vector<int> worker_cpus;
  for (size_t i = 0; i < 4; ++i) worker_cpus.push_back(cpus[i % cpus.size()]);
  auto pool = RecvPool::create(4096);
  REQUIRE(pool);
  std::string error;
  auto backlog = Backlog::start(worker_cpus, *pool, &error, record);
  REQUIRE(backlog);
  REQUIRE(backlog->worker_count() == 4);

  // Three "links", each with its own flows and one reaper, as the engine has; some items
  // carry a pool buffer, some take the apply-at-once path, some applications are slow so
  // that queues build up.
  observed.slow_every = 97;
  constexpr uint64_t kPerReaper = 40000;
  std::atomic<uint64_t> applied_here{0};
  std::vector<std::thread> reapers;
  for (size_t r = 0; r < 3; ++r) {
    reapers.emplace_back([&, r] {
      std::mt19937 rng(static_cast<unsigned>(r) + 1);
      std::vector<uint64_t> next(kFlows, 1);
      for (uint64_t n = 0; n < kPerReaper; ++n) {
        const size_t flow = r + 3 * (rng() % (kFlows / 3));  // flows r, r+3, r+6, ...
        BacklogItem item;
        item.flow_hash = flow;
        item.wr_id = next[flow]++;
        item.kind = BacklogItem::Kind::kSendComplete;
        uint32_t buffer;
        if (n % 2 == 0 && pool->take(&buffer)) {
          item.kind = BacklogItem::Kind::kCdc;
          item.buffer = buffer;
        }
        if (backlog->submit(std::move(item), rng() % 4 == 0)) applied_here.fetch_add(1);
      }
    });
  }
  for (auto& t : reapers) t.join();
  for (uint64_t flow = 0; flow < kFlows; ++flow) {
    CHECK(backlog->wait_applied(flow, smcpre::core::now_ns() + 10'000'000'000));
  }
  CHECK(observed.violations == 0);
  CHECK(observed.applied == 3 * kPerReaper);
  CHECK(pool->free_count() == pool->size());
  CHECK(applied_here > 0);               // the apply-at-once path was taken
  CHECK(applied_here < 3 * kPerReaper);  // and so was the queue
  observed.slow_every = 0;
}

TEST_CASE("after stop, the submitting thread applies, in order") {
  reset_observed();
  auto pool = RecvPool::create(64);
  REQUIRE(pool);
  std::string error;
  auto backlog = Backlog::start({usable_cpus().front()}, *pool, &error, record);
  REQUIRE(backlog);
  BacklogItem first;
  first.flow_hash = 5;
  first.wr_id = 1;
  first.kind = BacklogItem::Kind::kSendComplete;
  backlog->submit(std::move(first), false);
  backlog->stop();
  CHECK(observed.applied == 1);  // what was queued was applied before the worker stopped
  for (uint64_t seq = 2; seq <= 10; ++seq) {
    BacklogItem item;
    item.flow_hash = 5;
    item.wr_id = seq;
    item.kind = BacklogItem::Kind::kSendComplete;
    CHECK(backlog->submit(std::move(item), false));
  }
  CHECK(observed.applied == 10);
  CHECK(observed.violations == 0);
}

TEST_CASE("a CPU list naming CPUs that do not exist is refused with the reason") {
  std::string error;
  CHECK(Backlog::validate_cpus(usable_cpus(), &error));
  CHECK_FALSE(Backlog::validate_cpus({4095}, &error));
  CHECK(error.find("CPU 4095") != std::string::npos);
  CHECK(error.find("does not exist") != std::string::npos);
  CHECK_FALSE(Backlog::validate_cpus({}, &error));
  // The default: inline below 4 CPUs (measured), else one worker per 8 CPUs (1 to 8) on
  // the highest-numbered ones.
  const std::vector<int> cpus = usable_cpus();
  const std::vector<int> defaults = Backlog::default_cpus();
  if (cpus.size() < 4) {
    CHECK(defaults.empty());
  } else {
    REQUIRE_FALSE(defaults.empty());
    CHECK(defaults.size() == std::clamp<size_t>(cpus.size() / 8, 1, 8));
    CHECK(defaults.back() == cpus.back());
    CHECK(Backlog::validate_cpus(defaults, &error));
  }
}
