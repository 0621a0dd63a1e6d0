// The interposer's fd table (preload/fd_table.h): tracking, dup sharing and last-fd
// detection, fds beyond the table, and lookups racing with closes.
#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "preload/fd_table.h"

using smcpre::preload::FdTable;

namespace {

std::atomic<int> g_live{0};         // Items alive
std::atomic<int> g_bad_destroy{0};  // Items destroyed while still referenced by an fd

struct Item {
  static constexpr unsigned kAlive = 0xA11FEu;
  static constexpr unsigned kDead = 0xDEADu;

  explicit Item(int id) : id(id) { g_live.fetch_add(1); }
  ~Item() {
    if (fd_refs.load() != 0) g_bad_destroy.fetch_add(1);
    magic.store(kDead);
    g_live.fetch_sub(1);
  }

  std::atomic<int> fd_refs{0};
  const int id;
  std::atomic<unsigned> magic{kAlive};
};

using Table = FdTable<Item>;

// Tables are heap-allocated and left to the test process: the table never frees its
// chunks (see fd_table.h), so destroying one would only leak them anyway. They stay
// reachable from here, as the library's one table is from its static, so that
// LeakSanitizer (scripts/test --sanitize) counts none of them as lost.
Table& fresh_table() {
  static auto* kept = new std::vector<Table*>();  // never destroyed, like the tables
  kept->push_back(new Table());
  return *kept->back();
}

std::shared_ptr<Item> item(int id) {
  return std::make_shared<Item>(id);
}

}  // namespace

TEST_CASE("empty table tracks nothing", "[fd_table]") {
  Table& t = fresh_table();
  CHECK_FALSE(t.any());
  CHECK(t.count() == 0);
  for (int fd : {-1, 0, 3, 4095, 4096, Table::kMaxFds - 1, Table::kMaxFds, 1 << 30}) {
    CHECK(t.lookup(fd) == nullptr);
    CHECK(t.remove(fd).entry == nullptr);
  }
}

TEST_CASE("install, lookup, remove", "[fd_table]") {
  Table& t = fresh_table();
  REQUIRE(t.reserve(5));
  auto a = item(1);
  CHECK(t.install(5, a).entry == nullptr);
  CHECK(t.any());
  CHECK(t.count() == 1);
  CHECK(t.lookup(5) == a);
  CHECK(t.lookup(4) == nullptr);  // same chunk, untracked
  CHECK(t.lookup(6) == nullptr);
  CHECK(a->fd_refs == 1);

  auto removed = t.remove(5);
  CHECK(removed.entry == a);
  CHECK(removed.last);
  CHECK_FALSE(t.any());
  CHECK(t.lookup(5) == nullptr);
  CHECK(a->fd_refs == 0);
  CHECK(t.remove(5).entry == nullptr);  // a second close finds nothing
}

TEST_CASE("dup'd fds share one entry; only the last close is last", "[fd_table]") {
  Table& t = fresh_table();
  auto sock = item(7);
  for (int fd : {3, 9, 5000}) REQUIRE(t.reserve(fd));
  t.install(3, sock);
  t.install(9, t.lookup(3));     // dup(3) -> 9
  t.install(5000, t.lookup(9));  // dup(9) -> 5000, another chunk
  CHECK(sock->fd_refs == 3);
  CHECK(t.count() == 3);
  CHECK(t.lookup(5000) == sock);

  auto r1 = t.remove(9);
  CHECK(r1.entry == sock);
  CHECK_FALSE(r1.last);
  auto r2 = t.remove(3);
  CHECK_FALSE(r2.last);
  auto r3 = t.remove(5000);
  CHECK(r3.entry == sock);
  CHECK(r3.last);
  CHECK(t.count() == 0);
}

TEST_CASE("installing over a tracked fd hands back the old entry, counted down", "[fd_table]") {
  Table& t = fresh_table();
  REQUIRE(t.reserve(4));
  REQUIRE(t.reserve(8));
  auto old_item = item(1);
  auto other = item(2);
  t.install(4, old_item);
  t.install(8, other);

  // dup2(8, 4): fd 4 now refers to `other`; old_item lost its only fd.
  auto replaced = t.install(4, t.lookup(8));
  CHECK(replaced.entry == old_item);
  CHECK(replaced.last);
  CHECK(old_item->fd_refs == 0);
  CHECK(other->fd_refs == 2);
  CHECK(t.lookup(4) == other);
  CHECK(t.count() == 2);  // a replacement does not add a tracked fd
}

TEST_CASE("fds beyond the table are never tracked", "[fd_table]") {
  Table& t = fresh_table();
  CHECK_FALSE(t.reserve(-1));
  CHECK_FALSE(t.reserve(Table::kMaxFds));
  CHECK_FALSE(t.reserve(1 << 30));
  REQUIRE(t.reserve(Table::kMaxFds - 1));  // the last slot is still in range

  auto x = item(1);
  CHECK(t.install(Table::kMaxFds, x).entry == nullptr);
  CHECK(t.install(-3, x).entry == nullptr);
  CHECK(x->fd_refs == 0);  // nothing was counted for the refused fds
  CHECK_FALSE(t.any());

  t.install(Table::kMaxFds - 1, x);
  CHECK(t.lookup(Table::kMaxFds - 1) == x);
  CHECK(t.remove(Table::kMaxFds - 1).last);
}

TEST_CASE("install needs a reserved chunk", "[fd_table]") {
  Table& t = fresh_table();
  auto x = item(1);
  // fd 70000's chunk was never reserved: the install is refused, not half-done.
  CHECK(t.install(70000, x).entry == nullptr);
  CHECK(x->fd_refs == 0);
  CHECK(t.lookup(70000) == nullptr);
  CHECK_FALSE(t.any());
}

TEST_CASE("remove_range removes exactly the tracked fds in an inclusive range", "[fd_table]") {
  Table& t = fresh_table();
  std::vector<int> tracked = {2, 10, 4095, 4096, 4200, 3 * 4096 + 1, Table::kMaxFds - 1};
  auto shared = item(1);
  for (int fd : tracked) {
    REQUIRE(t.reserve(fd));
    t.install(fd, shared);
  }

  std::vector<int> seen;
  int lasts = 0;
  t.remove_range(10, 4200, [&](int fd, Table::Removed r) {
    seen.push_back(fd);
    CHECK(r.entry == shared);
    if (r.last) ++lasts;
  });
  CHECK(seen == std::vector<int>{10, 4095, 4096, 4200});
  CHECK(lasts == 0);
  CHECK(t.lookup(2) == shared);
  CHECK(t.lookup(4200) == nullptr);
  CHECK(t.lookup(3 * 4096 + 1) == shared);

  // close_range(3, ~0U): the upper bound is clamped, nothing overflows.
  seen.clear();
  t.remove_range(3, ~0U, [&](int fd, Table::Removed r) {
    seen.push_back(fd);
    if (r.last) ++lasts;
  });
  CHECK(seen == std::vector<int>{3 * 4096 + 1, Table::kMaxFds - 1});
  CHECK(lasts == 0);
  CHECK(t.count() == 1);  // fd 2 remains, and with it the last reference
  CHECK(t.remove(2).last);

  t.remove_range(static_cast<unsigned>(Table::kMaxFds), ~0U,
                 [&](int, Table::Removed) { FAIL("nothing is tracked up there"); });
}

TEST_CASE("an entry looked up stays alive while another thread's close drops it", "[fd_table]") {
  Table& t = fresh_table();
  REQUIRE(t.reserve(11));
  const int live_before = g_live.load();
  {
    t.install(11, item(11));
    std::shared_ptr<Item> held = t.lookup(11);
    auto removed = t.remove(11);
    CHECK(removed.last);
    removed.entry.reset();
    CHECK(held->magic == Item::kAlive);  // the reader's copy keeps it
    CHECK(g_live.load() == live_before + 1);
  }
  CHECK(g_live.load() == live_before);
}

TEST_CASE("racing closes of one fd: exactly one gets the entry", "[fd_table][threads]") {
  Table& t = fresh_table();
  REQUIRE(t.reserve(100));
  constexpr int kRounds = 2000;
  std::atomic<int> round{-1};  // the round the other closer may start
  std::atomic<int> done{-1};   // the last round it finished
  std::atomic<int> winners{0};
  std::atomic<int> lasts{0};
  auto close_once = [&] {
    auto r = t.remove(100);
    if (r.entry != nullptr) winners.fetch_add(1);
    if (r.last) lasts.fetch_add(1);
  };
  std::thread other([&] {
    for (int n = 0; n < kRounds; ++n) {
      while (round.load() < n) std::this_thread::yield();
      close_once();
      done.store(n);
    }
  });
  int failures = 0;
  for (int n = 0; n < kRounds; ++n) {
    winners = 0;
    lasts = 0;
    t.install(100, item(n));
    round.store(n);
    close_once();  // races with the other thread's close of the same fd
    while (done.load() < n) std::this_thread::yield();
    if (winners != 1 || lasts != 1) ++failures;
  }
  other.join();
  CHECK(failures == 0);
  CHECK_FALSE(t.any());
}

// Readers look up fds in a loop while writers open (install), dup (share) and close
// (remove) them. Each writer owns its fds and keeps a model of how many of its fds
// refer to each item, so every Removed::last can be checked exactly; readers check
// that whatever they hold is alive. Run under ThreadSanitizer, this is the
// no-use-after-free test of the lock-free lookup.
TEST_CASE("concurrent lookups against open/dup/close", "[fd_table][threads]") {
  Table& t = fresh_table();
  constexpr int kWriters = 2;
  constexpr int kReaders = 4;
  constexpr int kFdsPerWriter = 48;
  constexpr int kBase = 4096 - 40;  // the fds straddle a chunk boundary
  constexpr int kOps = 60000;
  for (int fd = kBase; fd < kBase + kWriters * kFdsPerWriter; ++fd) REQUIRE(t.reserve(fd));
  const int bad_destroy_before = g_bad_destroy.load();

  std::atomic<bool> stop{false};
  std::atomic<long> reader_errors{0};
  std::atomic<long> reader_hits{0};
  std::atomic<int> writer_errors{0};

  auto reader = [&](int seed) {
    std::minstd_rand rng(seed);
    long hits = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const int fd = kBase + static_cast<int>(rng() % (kWriters * kFdsPerWriter));
      if (!t.any()) continue;
      std::shared_ptr<Item> e = t.lookup(fd);
      if (e == nullptr) continue;
      ++hits;
      if (e->magic.load() != Item::kAlive || e->fd_refs.load() < 0) reader_errors.fetch_add(1);
    }
    reader_hits.fetch_add(hits);
  };

  auto writer = [&](int w) {
    std::minstd_rand rng(1000 + w);
    const int first = kBase + w * kFdsPerWriter;
    std::map<int, std::shared_ptr<Item>> at;  // model: fd -> item
    std::map<Item*, int> refs;                // model: item -> number of fds
    auto check_removed = [&](const Table::Removed& r, const std::shared_ptr<Item>& expect) {
      if (r.entry != expect) {
        writer_errors.fetch_add(1);
        return;
      }
      if (expect == nullptr) return;
      const bool last = --refs[expect.get()] == 0;
      if (r.last != last) writer_errors.fetch_add(1);
      if (last) refs.erase(expect.get());
    };
    for (int op = 0; op < kOps; ++op) {
      const int fd = first + static_cast<int>(rng() % kFdsPerWriter);
      const auto it = at.find(fd);
      std::shared_ptr<Item> current = it == at.end() ? nullptr : it->second;
      switch (rng() % 3) {
        case 0: {  // a new connection on fd (replacing a stale one, if any)
          auto fresh = item(op);
          refs[fresh.get()] = 1;
          check_removed(t.install(fd, fresh), current);
          at[fd] = fresh;
          break;
        }
        case 1: {  // dup2(src, fd)
          const int src = first + static_cast<int>(rng() % kFdsPerWriter);
          if (src == fd || at.count(src) == 0) break;
          std::shared_ptr<Item> shared = t.lookup(src);
          if (shared != at[src]) {
            writer_errors.fetch_add(1);
            break;
          }
          ++refs[shared.get()];
          check_removed(t.install(fd, shared), current);
          at[fd] = shared;
          break;
        }
        default:  // close(fd)
          check_removed(t.remove(fd), current);
          at.erase(fd);
          break;
      }
    }
    for (auto& [fd, entry] : at) check_removed(t.remove(fd), entry);
    if (!refs.empty()) writer_errors.fetch_add(1);
  };

  std::vector<std::thread> threads;
  for (int r = 0; r < kReaders; ++r) threads.emplace_back(reader, r + 1);
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) writers.emplace_back(writer, w);
  for (auto& th : writers) th.join();
  stop.store(true);
  for (auto& th : threads) th.join();

  CHECK(writer_errors == 0);
  CHECK(reader_errors == 0);
  CHECK(reader_hits > 0);  // the readers did race with live entries
  CHECK(g_bad_destroy.load() == bad_destroy_before);
  CHECK_FALSE(t.any());
  CHECK(t.count() == 0);
}
