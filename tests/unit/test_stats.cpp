// Tests for core/stats/segment.h (the published counters) and core/stats/reader.h (reading them
// from another process). The process publishes once, in a temporary runtime dir; forked
// children exercise what needs a fresh process (fork, stale files, the private fallback).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "config/high_fd.h"
#include "core/stats/reader.h"
#include "core/stats/segment.h"
#include "core/stats/text.h"
#include "tests/unit/child_check.h"

using namespace smcpre::stats;

namespace {

// Set up before main(): whatever runs first must find SMCPRE_RUNTIME_DIR set, since the
// configuration is parsed once per process.
struct TestEnv {
  TestEnv() {
    char tmpl[] = "/tmp/smcpre-test-stats-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) fail("mkdtemp");
    runtime_dir = tmpl;
    if (setenv("SMCPRE_RUNTIME_DIR", runtime_dir.c_str(), 1) != 0) fail("setenv");
    if (smcpre::config::current().runtime_dir != runtime_dir) fail("SMCPRE_RUNTIME_DIR ignored");
    shared = stats_dir(runtime_dir);
    dir = user_stats_dir(runtime_dir, geteuid());
  }
  ~TestEnv() {
    const std::string cmd = "rm -rf '" + runtime_dir + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", cmd.c_str());
  }
  [[noreturn]] static void fail(const char* what) {
    std::fprintf(stderr, "test_stats setup failed: %s\n", what);
    std::abort();
  }
  std::string runtime_dir;
  std::string shared;  // <runtime_dir>/stats, what readers are given
  std::string dir;     // our uid's subtree in it, where our files are
};
const TestEnv g_env;
const TestEnv& env() {
  return g_env;
}

std::string path_of(pid_t pid) {
  return env().dir + "/" + std::to_string(pid);
}

bool exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

int wait_exit(pid_t pid) {
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// One byte through a pipe: the other side's "go on".
void signal_pipe(int fd) {
  const char c = 'x';
  if (write(fd, &c, 1) != 1) std::perror("write");
}
bool wait_pipe(int fd) {
  char c;
  return read(fd, &c, 1) == 1;
}

ReadResult read_self() {
  return read_segment(env().shared, static_cast<uint32_t>(getpid()));
}

bool in_published_links(const LinkSlot* slot) {
  const Segment& s = segment();
  return slot >= &s.links[0] && slot < &s.links[kMaxLinkSlots];
}

// A file at <dir>/<pid> with `len` bytes of `header` (a Segment's first bytes), held
// locked shared like a live owner would; the fd is returned.
int fake_segment(uint32_t pid, const Segment* header, size_t len) {
  const std::string path = env().dir + "/" + std::to_string(pid);
  const int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(flock(fd, LOCK_SH) == 0);
  if (len > 0) REQUIRE(pwrite(fd, header, len, 0) == static_cast<ssize_t>(len));
  return fd;
}

}  // namespace

TEST_CASE("segment() publishes <runtime_dir>/stats/<pid>, locked, at the top of the fd space",
          "[stats]") {
  CHECK(stats_dir("/run/smcpre") == "/run/smcpre/stats");
  CHECK(user_stats_dir("/run/smcpre", 0) == "/run/smcpre/stats/0");
  Segment& s = segment();
  CHECK(&segment() == &s);
  const std::string path = path_of(getpid());
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK(static_cast<size_t>(st.st_size) == sizeof(Segment));
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(stat(env().dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  REQUIRE(stat(env().shared.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 01777);

  // The header as another process sees it in the file.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  uint64_t magic = 0;
  uint32_t version_and_pid[2] = {};
  REQUIRE(pread(fd, &magic, sizeof magic, offsetof(Segment, magic)) == sizeof magic);
  REQUIRE(pread(fd, version_and_pid, sizeof version_and_pid, offsetof(Segment, version)) ==
          sizeof version_and_pid);
  static_assert(offsetof(Segment, pid) == offsetof(Segment, version) + 4);
  CHECK(magic == kStatsMagic);
  CHECK(version_and_pid[0] == kStatsVersion);
  CHECK(version_and_pid[1] == static_cast<uint32_t>(getpid()));
  // The owner holds LOCK_SH: another open file cannot take LOCK_EX.
  const int locked = flock(fd, LOCK_EX | LOCK_NB);
  const int err = errno;
  CHECK(locked == -1);
  CHECK(err == EWOULDBLOCK);
  close(fd);

  CHECK(std::string(s.comm) == "test_stats");
  CHECK(std::string(s.cmdline).find("test_stats") != std::string::npos);
  CHECK(std::string(s.cmdline).back() != ' ');

  // Our descriptor of the file: close-on-exec, moved up.
  int found = -1;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(entry.path(), ec).string() == path) {
      found = std::stoi(entry.path().filename().string());
    }
  }
  REQUIRE(found >= 0);
  CHECK((fcntl(found, F_GETFD) & FD_CLOEXEC) != 0);
  if (smcpre::sys::high_fd_floor() > 0) CHECK(found >= smcpre::sys::high_fd_floor());
}

TEST_CASE("slots are zeroed on reuse; beyond the published ones come private slots", "[stats]") {
  Segment& s = segment();
  LinkSlot* a = acquire_link_slot(7);
  REQUIRE(a != nullptr);
  CHECK(in_published_links(a));
  CHECK(a->in_use == 7);
  add(a->sends, 3);
  set(a->rq_depth, 64);
  release_link_slot(a);
  CHECK(a->in_use == 0);
  LinkSlot* b = acquire_link_slot(8);
  CHECK(b == a);  // the first free one
  CHECK(b->in_use == 8);
  for (const auto& f : kLinkFields) {
    if (f.member != &LinkSlot::in_use) CHECK((b->*f.member).load() == 0);
  }

  std::vector<LinkSlot*> held{b};
  while (held.size() < kMaxLinkSlots) held.push_back(acquire_link_slot(100 + held.size()));
  for (LinkSlot* slot : held) CHECK(in_published_links(slot));
  const uint64_t overflowed = s.process.link_slots_overflowed;
  LinkSlot* extra = acquire_link_slot(999);
  REQUIRE(extra != nullptr);
  CHECK_FALSE(in_published_links(extra));
  CHECK(extra->in_use == 999);
  CHECK(s.process.link_slots_overflowed == overflowed + 1);
  add(extra->recvs, 5);
  release_link_slot(extra);
  LinkSlot* extra2 = acquire_link_slot(1000);
  CHECK(extra2 == extra);  // a released private slot is reused, zeroed
  CHECK(extra2->recvs == 0);
  CHECK(s.process.link_slots_overflowed == overflowed + 2);
  release_link_slot(extra2);

  // Id 0 would read as a free slot: it gets a private one.
  release_link_slot(held.back());
  held.pop_back();
  LinkSlot* zero = acquire_link_slot(0);
  CHECK_FALSE(in_published_links(zero));
  CHECK(zero->in_use != 0);
  release_link_slot(zero);
  for (LinkSlot* slot : held) release_link_slot(slot);

  std::vector<WorkerSlot*> workers;
  for (size_t i = 0; i < kMaxWorkerSlots + 2; ++i) workers.push_back(acquire_worker_slot());
  for (size_t i = 0; i < workers.size(); ++i) {
    CHECK(workers[i]->in_use == 1);
    const bool published = workers[i] >= &s.workers[0] && workers[i] < &s.workers[kMaxWorkerSlots];
    CHECK(published == (i < kMaxWorkerSlots));
  }
  add(workers[0]->sleeps, 4);
  release_worker_slot(workers[0]);
  WorkerSlot* again = acquire_worker_slot();
  CHECK(again == workers[0]);
  CHECK(again->sleeps == 0);
  workers[0] = again;
  for (WorkerSlot* w : workers) release_worker_slot(w);
}

TEST_CASE("slots acquired from several threads are all distinct", "[stats]") {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 40;  // 320 in all: past the 256 published slots
  std::vector<std::vector<LinkSlot*>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &got] {
      for (int i = 0; i < kPerThread; ++i) {
        got[t].push_back(acquire_link_slot(static_cast<uint64_t>(t * 1000 + i + 1)));
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<LinkSlot*> distinct;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      distinct.insert(got[t][i]);
      CHECK(got[t][i]->in_use == static_cast<uint64_t>(t * 1000 + i + 1));
    }
  }
  CHECK(distinct.size() == kThreads * kPerThread);
  for (auto& v : got) {
    for (LinkSlot* slot : v) release_link_slot(slot);
  }
}

TEST_CASE("a reader sees counters updated after it looked first", "[stats]") {
  ReadResult first = read_self();
  REQUIRE(first.status == ReadStatus::kOk);
  CHECK(first.snapshot.pid == static_cast<uint32_t>(getpid()));
  CHECK(first.snapshot.comm == "test_stats");
  CHECK(first.snapshot.links.empty());

  Segment& s = segment();
  set(s.process.pool_size, 1024);
  set(s.process.pool_free, 1000);
  LinkSlot* link = acquire_link_slot(42);
  set(link->role, 1);
  add(link->rnr_events, 2);
  add(link->write_bytes, 1 << 20);
  acquire_link_slot(43);  // a second link, released below
  WorkerSlot* w1 = acquire_worker_slot();
  WorkerSlot* w2 = acquire_worker_slot();
  release_worker_slot(w1);  // leaves a hole: index tells which slot
  set(w2->cpu, 3);
  raise_to(w2->queue_max, 17);

  ReadResult r = read_self();
  REQUIRE(r.status == ReadStatus::kOk);
  CHECK(r.snapshot.process[&ProcessCounters::pool_size] == 1024);
  CHECK(r.snapshot.process[&ProcessCounters::pool_free] == 1000);
  REQUIRE(r.snapshot.links.size() == 2);
  const auto& l = r.snapshot.links[0];
  CHECK(l[&LinkSlot::in_use] == 42);
  CHECK(l[&LinkSlot::role] == 1);
  CHECK(l[&LinkSlot::rnr_events] == 2);
  CHECK(l[&LinkSlot::write_bytes] == 1 << 20);
  CHECK(r.snapshot.links[1][&LinkSlot::in_use] == 43);
  REQUIRE(r.snapshot.workers.size() == 1);
  CHECK(r.snapshot.workers[0].index == 1);
  CHECK(r.snapshot.workers[0].counters[&WorkerSlot::cpu] == 3);
  CHECK(r.snapshot.workers[0].counters[&WorkerSlot::queue_max] == 17);

  // Updates after the reader's copy show in the next one.
  add(link->rnr_events);
  r = read_self();
  REQUIRE(r.status == ReadStatus::kOk);
  CHECK(r.snapshot.links[0][&LinkSlot::rnr_events] == 3);

  // RNR figures mean something only for links whose device counts them (rnr_counted):
  // the summary says when some link's are missing.
  const std::string uncounted = "(not counted on RDMA adapter links)";
  CHECK(summary_text(r.snapshot, "t").find("RNR 3 events") != std::string::npos);
  CHECK(summary_text(r.snapshot, "t").find(uncounted) != std::string::npos);
  for (LinkSlot& slot : s.links) {
    if (slot.in_use.load() != 0) set(slot.rnr_counted, 1);
  }
  r = read_self();
  REQUIRE(r.status == ReadStatus::kOk);
  CHECK(summary_text(r.snapshot, "t").find(uncounted) == std::string::npos);

  std::vector<uint32_t> pids;
  std::string error;
  REQUIRE(list_pids(env().shared, &pids, &error));
  CHECK(std::find(pids.begin(), pids.end(), static_cast<uint32_t>(getpid())) != pids.end());

  for (LinkSlot& slot : s.links) release_link_slot(&slot);
  release_worker_slot(w2);
  r = read_self();
  CHECK(r.snapshot.links.empty());
  CHECK(r.snapshot.workers.empty());
}

TEST_CASE("a fork child publishes its own file, which turns stale when it dies", "[stats]") {
  Segment& parent = segment();
  LinkSlot* inherited = acquire_link_slot(77);
  add(inherited->sends, 5);
  int ready[2];
  int go[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(go) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const std::string parent_path = path_of(getppid());
    reset_after_fork();
    // The inherited descriptor is gone: only the parent keeps its lock.
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      CHILD_CHECK(std::filesystem::read_symlink(entry.path(), ec).string() != parent_path);
    }
    // An abandoned object counting into the parent's slot changes the parent's file no more.
    add(inherited->sends, 100);
    release_link_slot(inherited);
    Segment& own = segment();
    CHILD_CHECK(&own != &parent);
    CHILD_CHECK(own.pid == static_cast<uint32_t>(getpid()));
    add(own.process.cdc_inline, 9);
    signal_pipe(ready[1]);
    wait_pipe(go[0]);
    _exit(0);  // no unpublish_at_exit: the file is left behind
  }
  close(ready[1]);
  close(go[0]);
  REQUIRE(wait_pipe(ready[0]));
  CHECK(inherited->sends == 5);
  CHECK(inherited->in_use == 77);
  ReadResult r = read_segment(env().shared, static_cast<uint32_t>(child));
  REQUIRE(r.status == ReadStatus::kOk);
  CHECK(r.snapshot.pid == static_cast<uint32_t>(child));
  CHECK(r.snapshot.process[&ProcessCounters::cdc_inline] == 9);
  CHECK(r.snapshot.links.empty());  // the child's own segment, not a copy of ours

  signal_pipe(go[1]);
  CHECK(wait_exit(child) == 0);
  CHECK(exists(path_of(child)));
  CHECK(read_segment(env().shared, static_cast<uint32_t>(child)).status == ReadStatus::kStale);
  CHECK_FALSE(exists(path_of(child)));
  CHECK(read_segment(env().shared, static_cast<uint32_t>(child)).status == ReadStatus::kAbsent);
  CHECK(read_self().status == ReadStatus::kOk);  // ours is still locked
  close(ready[0]);
  close(go[1]);
  release_link_slot(inherited);
}

TEST_CASE("unpublish_at_exit removes only the caller's own file", "[stats]") {
  segment();
  // A child that did not reset (no atfork handler ran) must not unpublish its parent.
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    unpublish_at_exit();
    _exit(0);
  }
  CHECK(wait_exit(child) == 0);
  CHECK(exists(path_of(getpid())));

  int ready[2];
  int go[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(go) == 0);
  child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    reset_after_fork();
    segment();
    CHILD_CHECK(exists(path_of(getpid())));
    unpublish_at_exit();
    CHILD_CHECK(!exists(path_of(getpid())));
    segment().process.pool_size.store(1);  // counting goes on in the mapping
    signal_pipe(ready[1]);
    wait_pipe(go[0]);
    _exit(0);
  }
  close(ready[1]);
  close(go[0]);
  REQUIRE(wait_pipe(ready[0]));
  CHECK(read_segment(env().shared, static_cast<uint32_t>(child)).status == ReadStatus::kAbsent);
  signal_pipe(go[1]);
  CHECK(wait_exit(child) == 0);
  CHECK(exists(path_of(getpid())));
  close(ready[0]);
  close(go[1]);
}

TEST_CASE("a stale file at our own path is replaced; a live one makes the segment private",
          "[stats]") {
  segment();
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Left by a dead process with our pid (or by ourselves before an exec): unlocked.
    const std::string path = path_of(getpid());
    const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHILD_CHECK(fd >= 0 && write(fd, "junk", 4) == 4);
    close(fd);
    reset_after_fork();
    Segment& s = segment();
    CHILD_CHECK(s.pid == static_cast<uint32_t>(getpid()));
    struct stat st;
    CHILD_CHECK(stat(path.c_str(), &st) == 0 && static_cast<size_t>(st.st_size) == sizeof(Segment));
    unpublish_at_exit();
    _exit(0);
  }
  CHECK(wait_exit(child) == 0);

  child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Held by a live process: the file is left alone, the counters live in private memory.
    const std::string path = path_of(getpid());
    const int fd = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    CHILD_CHECK(fd >= 0 && flock(fd, LOCK_SH) == 0 && write(fd, "held", 4) == 4);
    reset_after_fork();
    Segment& s = segment();
    CHILD_CHECK(s.pid == static_cast<uint32_t>(getpid()));
    CHILD_CHECK(s.magic == kStatsMagic);
    add(s.process.pool_exhausted);
    LinkSlot* slot = acquire_link_slot(5);
    CHILD_CHECK(slot != nullptr && slot->in_use == 5);
    struct stat st;
    CHILD_CHECK(fstat(fd, &st) == 0 && st.st_size == 4);
    unpublish_at_exit();  // not ours: stays
    CHILD_CHECK(exists(path));
    unlink(path.c_str());
    _exit(0);
  }
  CHECK(wait_exit(child) == 0);
}

TEST_CASE("without a usable stats dir the counters live in private memory", "[stats]") {
  segment();
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // A regular file where the stats dir belongs (this works even for root).
    const std::string away = env().dir + ".away";
    CHILD_CHECK(rename(env().dir.c_str(), away.c_str()) == 0);
    const int fd = open(env().dir.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHILD_CHECK(fd >= 0);
    close(fd);
    reset_after_fork();
    Segment& s = segment();
    CHILD_CHECK(s.magic == kStatsMagic && s.pid == static_cast<uint32_t>(getpid()));
    add(s.process.links_total);
    CHILD_CHECK(acquire_worker_slot() != nullptr);
    unpublish_at_exit();
    CHILD_CHECK(unlink(env().dir.c_str()) == 0);
    CHILD_CHECK(rename(away.c_str(), env().dir.c_str()) == 0);
    _exit(0);
  }
  CHECK(wait_exit(child) == 0);
  CHECK(read_self().status == ReadStatus::kOk);
}

TEST_CASE("the reader refuses files it does not understand", "[stats]") {
  segment();
  constexpr uint32_t kPid = 2000000001u;  // above any pid_max: only the name matters here
  auto header = std::make_unique<Segment>();
  header->pid = kPid;
  header->version = kStatsVersion;

  int fd = fake_segment(kPid, header.get(), 0);
  CHECK(read_segment(env().shared, kPid).status == ReadStatus::kStarting);  // empty: not sized yet
  close(fd);
  fd = fake_segment(kPid, header.get(), sizeof(Segment));
  CHECK(read_segment(env().shared, kPid).status == ReadStatus::kStarting);  // no magic yet
  close(fd);

  header->magic = 0x1234;
  fd = fake_segment(kPid, header.get(), sizeof(Segment));
  ReadResult r = read_segment(env().shared, kPid);
  CHECK(r.status == ReadStatus::kInvalid);
  CHECK(r.error.find("not an smcpre stats file") != std::string::npos);
  close(fd);

  header->magic = kStatsMagic;
  header->version = kStatsVersion + 1;
  fd = fake_segment(kPid, header.get(), sizeof(Segment));
  r = read_segment(env().shared, kPid);
  CHECK(r.status == ReadStatus::kInvalid);
  CHECK(r.error.find("version " + std::to_string(kStatsVersion + 1)) != std::string::npos);
  close(fd);

  header->version = kStatsVersion;
  fd = fake_segment(kPid, header.get(), 100);
  r = read_segment(env().shared, kPid);
  CHECK(r.status == ReadStatus::kInvalid);
  CHECK(r.error.find("truncated") != std::string::npos);
  close(fd);

  fd = fake_segment(kPid + 1, header.get(), sizeof(Segment));  // names another pid
  CHECK(read_segment(env().shared, kPid + 1).status == ReadStatus::kInvalid);
  close(fd);
  unlink((env().dir + "/" + std::to_string(kPid + 1)).c_str());

  // Strings are bounded and sanitized: no terminator, control characters, a cut UTF-8
  // sequence at the end.
  std::memset(header->comm, 'a', sizeof header->comm);
  header->comm[1] = '\x1b';
  std::snprintf(header->cmdline, sizeof header->cmdline, "prog \xc3\xa9t\xc3");
  fd = fake_segment(kPid, header.get(), sizeof(Segment));
  r = read_segment(env().shared, kPid);
  REQUIRE(r.status == ReadStatus::kOk);
  CHECK(r.snapshot.comm == "a?" + std::string(sizeof header->comm - 2, 'a'));
  CHECK(r.snapshot.cmdline == "prog \xc3\xa9t?");
  close(fd);  // and now nobody holds it: stale
  CHECK(read_segment(env().shared, kPid).status == ReadStatus::kStale);

  // Names that are not pids are not listed.
  for (const char* name : {"abc", "0", "012", "99999999999", "12x"}) {
    const int junk = open((env().dir + "/" + name).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    REQUIRE(junk >= 0);
    close(junk);
  }
  std::vector<uint32_t> pids;
  std::string error;
  REQUIRE(list_pids(env().shared, &pids, &error));
  CHECK(pids == std::vector<uint32_t>{static_cast<uint32_t>(getpid())});
  for (const char* name : {"abc", "0", "012", "99999999999", "12x"}) {
    unlink((env().dir + "/" + name).c_str());
  }
  REQUIRE(list_pids(env().runtime_dir + "/nowhere", &pids, &error));
  CHECK(pids.empty());
}

TEST_CASE("lower_to and raise_to move marks one way only", "[stats]") {
  Counter c{10};
  lower_to(c, 12);
  CHECK(c == 10);
  lower_to(c, 4);
  CHECK(c == 4);
  raise_to(c, 3);
  CHECK(c == 4);
  raise_to(c, 9);
  CHECK(c == 9);

  // Concurrent marks end at the extreme.
  Counter high{0};
  Counter low{~uint64_t{0}};
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([t, &high, &low] {
      for (uint64_t i = 1; i <= 10000; ++i) {
        raise_to(high, i * 4 + t);
        lower_to(low, i * 4 + t);
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(high == 40003);
  CHECK(low == 4);
}
