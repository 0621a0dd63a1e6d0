// The kernel's epoll machinery on a readiness mirror (core/datapath/readiness_mirror.h),
// as on TCP: edges, a sleeper woken, EPOLLONESHOT, several sets and removal on close; and
// what a mirror costs, concurrent apply() calls, and the lazy apply.
#include <dirent.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/datapath/readiness_mirror.h"
#include "tests/unit/mirror_masks.h"

namespace {

// Events that an epoll set has for us right now (0 = none).
unsigned ready(int ep, uint64_t* data = nullptr) {
  epoll_event out{};
  int n = epoll_wait(ep, &out, 1, 0);
  REQUIRE(n >= 0);
  if (n == 0) return 0;
  if (data) *data = out.data.u64;
  return out.events;
}

Fd epoll_with(int fd, uint32_t events, uint64_t data = 0) {
  Fd ep(epoll_create1(EPOLL_CLOEXEC));
  REQUIRE(ep >= 0);
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = data;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
  return ep;
}

int open_fds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  REQUIRE(d != nullptr);
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

}  // namespace

TEST_CASE("mirror: EPOLLET edges as TCP gives them") {
  auto m = make_mirror(st(false, true));
  Fd ep = epoll_with(m->app_fd(), EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, 7);
  uint64_t data = 0;
  CHECK(ready(ep, &data) == kEOut);  // the edge every new registration of a ready fd gets
  CHECK(data == 7);
  CHECK(ready(ep) == 0);

  m->apply(st(false, true), false);
  CHECK(ready(ep) == 0);  // nothing changed: no edge

  m->apply(st(true, true), true);
  CHECK(ready(ep) == (kEIn | kEOut));  // not readable -> readable
  CHECK(ready(ep) == 0);
  m->apply(st(true, true), false);
  CHECK(ready(ep) == 0);  // still readable, nothing new

  // Each arrival while readable is a new edge, also far beyond the bytes kept queued.
  for (int i = 0; i < 40; ++i) {
    m->apply(st(true, true), true);
    INFO("arrival " << i);
    REQUIRE(ready(ep) == (kEIn | kEOut));
    REQUIRE(ready(ep) == 0);
    REQUIRE(queued_to_app(*m) <= 16);
  }

  m->apply(st(false, true), false);
  CHECK(ready(ep) == 0);  // losing readiness is no edge
  CHECK(queued_to_app(*m) == 0);

  m->apply(st(false, false), false);
  CHECK(ready(ep) == 0);  // losing space is no edge
  m->apply(st(false, true), false);
  CHECK(ready(ep) == kEOut);  // space returns
  CHECK(ready(ep) == 0);

  m->apply(st(false, true, true), false);
  CHECK(ready(ep) == (kEIn | kEOut | kERdhup));  // FIN
  m->apply(st(false, true, true, true), false);
  CHECK(ready(ep) == (kEIn | kEOut | kERdhup | kEHup));  // full close
  m->apply(reset_state(false), false);
  CHECK(ready(ep) == (kEIn | kEOut | kERdhup | kEHup | kEErr));  // reset
}

TEST_CASE("mirror: a thread asleep in epoll_wait is woken") {
  auto m = make_mirror(st(false, false));
  Fd ep = epoll_with(m->app_fd(), EPOLLIN | EPOLLOUT | EPOLLET);
  std::atomic<unsigned> got{0};
  auto wait_one = [&] {
    epoll_event out{};
    int n = epoll_wait(ep, &out, 1, 5000);
    got = n == 1 ? out.events : 0xFFFF;
  };
  std::thread t(wait_one);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  m->apply(st(true, false), true);
  t.join();
  CHECK(got == kEIn);

  got = 0;
  std::thread t2(wait_one);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  m->apply(st(true, true), false);
  t2.join();
  CHECK(got == (kEIn | kEOut));

  // An edge for new data while readable wakes a sleeper too.
  got = 0;
  std::thread t3(wait_one);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  m->apply(st(true, true), true);
  t3.join();
  CHECK(got == (kEIn | kEOut));
}

TEST_CASE("mirror: EPOLLONESHOT fires once and re-arms") {
  auto m = make_mirror(st(false, true));
  Fd ep = epoll_with(m->app_fd(), EPOLLIN | EPOLLONESHOT);
  CHECK(ready(ep) == 0);
  m->apply(st(true, true), true);
  CHECK(ready(ep) == kEIn);
  m->apply(st(true, true), true);
  CHECK(ready(ep) == 0);  // disarmed
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLONESHOT;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_MOD, m->app_fd(), &ev) == 0);
  CHECK(ready(ep) == kEIn);  // re-armed while readable: reported at once
  m->apply(st(false, true), false);
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_MOD, m->app_fd(), &ev) == 0);
  CHECK(ready(ep) == 0);
  m->apply(st(true, true), true);
  CHECK(ready(ep) == kEIn);
  CHECK(ready(ep) == 0);
}

TEST_CASE("mirror: in two epoll sets at once, gone from both when destroyed") {
  auto m = make_mirror(st(false, true));
  const int fd = m->app_fd();
  Fd ep1 = epoll_with(fd, EPOLLIN, 111);
  Fd ep2 = epoll_with(fd, EPOLLIN | EPOLLET, 222);
  uint64_t d1 = 0, d2 = 0;
  m->apply(st(true, true), true);
  CHECK(ready(ep1, &d1) == kEIn);
  CHECK(ready(ep2, &d2) == kEIn);
  CHECK(d1 == 111);
  CHECK(d2 == 222);
  CHECK(ready(ep1) == kEIn);  // level-triggered: again
  CHECK(ready(ep2) == 0);     // edge-triggered: once

  // Destroyed while ready (an event pending in both ready lists): no stale event, and
  // the fd numbers, reused at once, are not watched.
  m->apply(st(true, true), true);
  m.reset();
  CHECK(ready(ep1) == 0);
  CHECK(ready(ep2) == 0);
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  REQUIRE(write(sv[1], "x", 1) == 1);
  CHECK(ready(ep1) == 0);
  CHECK(ready(ep2) == 0);
  close(sv[0]);
  close(sv[1]);
}

TEST_CASE("mirror: 2000 mirrors cost two fds each and nothing else") {
  rlimit lim{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &lim) == 0);
  if (lim.rlim_cur < 4200 && lim.rlim_max >= 4200) {
    lim.rlim_cur = lim.rlim_max;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &lim) == 0);
  }
  if (lim.rlim_cur < 4200) {
    WARN("RLIMIT_NOFILE below 4200: skipped");
    return;
  }
  const int before = open_fds();
  {
    std::vector<std::unique_ptr<ReadinessMirror>> mirrors;
    for (int i = 0; i < 2000; ++i) {
      std::string error;
      auto m = ReadinessMirror::create(&error);
      INFO("mirror " << i << ": " << error);
      REQUIRE(m);
      // Every state's kernel memory at once: queued bytes and full send queues.
      m->apply(st(i % 2 == 0, i % 3 == 0, i % 5 == 0), false);
      for (int k = 0; k < 20; ++k) m->apply(st(i % 2 == 0, i % 3 == 0, i % 5 == 0), true);
      mirrors.push_back(std::move(m));
    }
    CHECK(open_fds() == before + 4000);
    for (int i = 0; i < 2000; ++i) {
      const bool peer_done = i % 5 == 0;
      unsigned expect =
          (i % 2 == 0 || peer_done ? kIn : 0) | (i % 3 == 0 ? kOut : 0) | (peer_done ? kRdhup : 0);
      INFO("mirror " << i);
      REQUIRE(names(poll_mask(mirrors[i]->app_fd())) == names(expect));
    }
  }
  CHECK(open_fds() == before);
}

TEST_CASE("mirror: concurrent apply() calls leave it consistent") {
  auto m = make_mirror(st(false, true));
  std::atomic<bool> go{false};
  auto worker = [&](int id) {
    while (!go.load()) {
    }
    for (int i = 0; i < 20000; ++i) {
      const bool odd = i & 1;
      if (id == 0) {
        m->apply(st(odd, true), false);
      } else {
        m->apply(st(!odd, odd), true);
      }
    }
  };
  std::thread t0(worker, 0), t1(worker, 1);
  go = true;
  t0.join();
  t1.join();
  // Whatever state won, the mirror's bookkeeping must match the kernel: every state
  // applied now must show exactly its mask (a stale record would skip a needed syscall).
  CHECK(queued_to_app(*m) <= 16);
  for (auto s : {st(false, true), st(true, true), st(true, false), st(false, false),
                 st(false, true), st(true, false, true), st(false, true, true)}) {
    m->apply(s, false);
    unsigned expect = (s.readable || s.peer_done ? kIn : 0) | (s.writable ? kOut : 0) |
                      (s.peer_done ? kRdhup : 0);
    CHECK(names(poll_mask(m->app_fd())) == names(expect));
  }
}

TEST_CASE("mirror: a lazy apply leaves IN on until the next plain apply") {
  auto m = make_mirror();
  m->apply(st(true, true), false);
  REQUIRE((poll_mask(m->app_fd()) & POLLIN) != 0);
  // The reader drained the connection: lazily, IN stays and the caller is told.
  bool deferred = false;
  m->apply(st(false, true), false, true, &deferred);
  CHECK(deferred);
  CHECK((poll_mask(m->app_fd()) & POLLIN) != 0);
  // Data again before anyone waited: nothing to undo, no byte added.
  const int queued = queued_to_app(*m);
  m->apply(st(true, true), false);
  CHECK(queued_to_app(*m) == queued);
  // Drained again, then settled before a wait: IN goes.
  deferred = false;
  m->apply(st(false, true), false, true, &deferred);
  CHECK(deferred);
  m->apply(st(false, true), false);
  CHECK((poll_mask(m->app_fd()) & POLLIN) == 0);
  // Nothing to defer when IN is already off, or when other bits change with it.
  deferred = false;
  m->apply(st(false, true), false, true, &deferred);
  CHECK_FALSE(deferred);
  m->apply(st(true, true), false);
  deferred = false;
  m->apply(st(false, true, true), false, true, &deferred);
  CHECK_FALSE(deferred);
  CHECK((poll_mask(m->app_fd()) & POLLRDHUP) != 0);
}
