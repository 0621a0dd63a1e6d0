// Tests for core/epoll_set.h: user-space epoll registrations over sockets whose readiness
// the test sets by hand (a Socket that only answers poll_state and keeps its watchers).
#include <sys/epoll.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "core/epoll_set.h"

using namespace smcpre::core;

namespace {

class FakeSocket final : public Socket {
 public:
  Readiness state;
  bool smc = true;
  std::vector<std::weak_ptr<ReadinessWatcher>> watchers;

  // A change, as the connection reports it.
  void change(Readiness r) {
    state = r;
    for (auto& w : watchers) {
      if (auto watcher = w.lock()) watcher->readiness_changed();
    }
  }

  Readiness poll_state() override { return state; }
  bool add_readiness_watcher(std::weak_ptr<ReadinessWatcher> w) override {
    if (!smc) return false;
    watchers.push_back(std::move(w));
    return true;
  }
  void drop_readiness_watchers() override {
    for (auto& w : watchers) {
      if (auto watcher = w.lock()) watcher->socket_released();
    }
    watchers.clear();
  }
  bool is_smc() const override { return smc; }

  Path route_recv(int, int) override { return Path::kSmc; }
  Path route_send(int, int) override { return Path::kSmc; }
  ssize_t recv(const iovec*, int, int) override { return -1; }
  ssize_t send(const iovec*, int, int) override { return -1; }
  int shutdown(int) override { return 0; }
  void release(int) override {}
  void mark_shared() override {}
  void after_fork_in_child() override {}
  bool take_so_error(int*) override { return false; }
  void count_kernel_bytes(bool, uint64_t) override {}
  bool undecided() const override { return false; }
  bool queue_sizes(uint64_t*, uint64_t*) override { return false; }
  int readiness_fd() override { return -1; }
  void want_readiness_edges() override {}
  void on_status_flags(int) override {}
  void on_sockopt(int, int, const void*, socklen_t) override {}
};

Readiness readable() {
  Readiness r;
  r.readable = true;
  return r;
}

epoll_event ev(uint32_t events, uint64_t data) {
  epoll_event e{};
  e.events = events;
  e.data.u64 = data;
  return e;
}

struct Fixture {
  int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  std::shared_ptr<EpollSet> set;
  std::string error;
  Fixture() {
    REQUIRE(epfd >= 0);
    set = EpollSet::create(epfd, &error);
    REQUIRE(set != nullptr);
  }
  ~Fixture() {
    set.reset();
    ::close(epfd);
  }
  std::vector<epoll_event> harvest(int max = 16) {
    std::vector<epoll_event> out(static_cast<size_t>(max));
    out.resize(static_cast<size_t>(set->harvest(out.data(), max)));
    return out;
  }
};

}  // namespace

TEST_CASE("level-triggered members report while ready", "[epoll_set]") {
  Fixture f;
  auto s = std::make_shared<FakeSocket>();
  REQUIRE(f.set->add(5, s, ev(EPOLLIN, 42)) == 0);
  CHECK(f.harvest().empty());  // queued at once, but nothing ready
  s->change(readable());
  auto got = f.harvest();
  REQUIRE(got.size() == 1);
  CHECK(got[0].events == EPOLLIN);
  CHECK(got[0].data.u64 == 42);
  CHECK(f.harvest().size() == 1);  // still readable: reported again
  s->state = Readiness{};          // drained by a read: no change is reported for that
  CHECK(f.harvest().empty());
  CHECK(!f.set->any_queued());
}

TEST_CASE("edge-triggered members report once per change", "[epoll_set]") {
  Fixture f;
  auto s = std::make_shared<FakeSocket>();
  REQUIRE(f.set->add(5, s, ev(EPOLLIN | EPOLLET, 1)) == 0);
  s->change(readable());
  CHECK(f.harvest().size() == 1);
  CHECK(f.harvest().empty());  // still readable, no new edge
  s->change(readable());       // more data
  CHECK(f.harvest().size() == 1);
}

TEST_CASE("one-shot members are disarmed until modified", "[epoll_set]") {
  Fixture f;
  auto s = std::make_shared<FakeSocket>();
  s->state = readable();
  REQUIRE(f.set->add(5, s, ev(EPOLLIN | EPOLLONESHOT, 1)) == 0);
  CHECK(f.harvest().size() == 1);
  s->change(readable());
  CHECK(f.harvest().empty());
  REQUIRE(f.set->modify(5, ev(EPOLLIN | EPOLLONESHOT, 2)) == 0);
  auto got = f.harvest();
  REQUIRE(got.size() == 1);
  CHECK(got[0].data.u64 == 2);
  SECTION("added disarmed (fired on the kernel socket before it turned SMC)") {
    auto t = std::make_shared<FakeSocket>();
    t->state = readable();
    REQUIRE(f.set->add(6, t, ev(EPOLLIN | EPOLLONESHOT, 3), false) == 0);
    CHECK(f.harvest().empty());
  }
}

TEST_CASE("masks: ERR and HUP always, the rest as asked", "[epoll_set]") {
  Fixture f;
  auto s = std::make_shared<FakeSocket>();
  REQUIRE(f.set->add(5, s, ev(EPOLLOUT, 1)) == 0);
  Readiness r;
  r.readable = r.writable = r.hangup = r.rdhup = r.error = true;
  s->change(r);
  auto got = f.harvest();
  REQUIRE(got.size() == 1);
  CHECK(got[0].events == (EPOLLOUT | EPOLLHUP | EPOLLERR));
}

TEST_CASE("epoll_ctl's error codes", "[epoll_set]") {
  Fixture f;
  auto s = std::make_shared<FakeSocket>();
  CHECK(f.set->modify(5, ev(EPOLLIN, 1)) == ENOENT);
  CHECK(f.set->remove(5) == ENOENT);
  REQUIRE(f.set->add(5, s, ev(EPOLLIN, 1)) == 0);
  CHECK(f.set->add(5, s, ev(EPOLLIN, 1)) == EEXIST);
  CHECK(f.set->add(6, s, ev(EPOLLIN | EPOLLEXCLUSIVE | EPOLLONESHOT, 1)) == EINVAL);
  REQUIRE(f.set->add(7, s, ev(EPOLLIN | EPOLLEXCLUSIVE, 1)) == 0);
  CHECK(f.set->modify(7, ev(EPOLLIN, 1)) == EINVAL);
  CHECK(f.set->modify(5, ev(EPOLLIN | EPOLLEXCLUSIVE, 1)) == EINVAL);
  CHECK(f.set->remove(5) == 0);
  CHECK(!f.set->contains(5));
  auto tcp = std::make_shared<FakeSocket>();
  tcp->smc = false;
  CHECK(f.set->add(8, tcp, ev(EPOLLIN, 1)) == EpollSet::kUseKernel);
  CHECK(!f.set->contains(8));
}

TEST_CASE("a released socket leaves the set", "[epoll_set]") {
  Fixture f;
  auto s = std::make_shared<FakeSocket>();
  s->state = readable();
  REQUIRE(f.set->add(5, s, ev(EPOLLIN, 1)) == 0);
  s->drop_readiness_watchers();
  CHECK(!f.set->contains(5));
  CHECK(f.harvest().empty());
}

TEST_CASE("a harvest serves every ready member before any twice", "[epoll_set]") {
  Fixture f;
  std::vector<std::shared_ptr<FakeSocket>> socks;
  for (int i = 0; i < 4; ++i) {
    socks.push_back(std::make_shared<FakeSocket>());
    socks.back()->state = readable();
    REQUIRE(f.set->add(10 + i, socks.back(), ev(EPOLLIN, static_cast<uint64_t>(i))) == 0);
  }
  std::vector<uint64_t> seen;
  for (int round = 0; round < 2; ++round) {
    for (const auto& e : f.harvest(2)) seen.push_back(e.data.u64);
  }
  CHECK(seen == std::vector<uint64_t>{0, 1, 2, 3});
}

TEST_CASE("a change wakes a blocked wait through the eventfd", "[epoll_set]") {
  Fixture f;
  auto s = std::make_shared<FakeSocket>();
  REQUIRE(f.set->add(5, s, ev(EPOLLIN, 1)) == 0);
  CHECK(f.harvest().empty());
  REQUIRE(f.set->begin_blocking());  // nothing queued
  s->change(readable());
  epoll_event events[4];
  int n = ::epoll_wait(f.epfd, events, 4, 1000);
  f.set->end_blocking();
  REQUIRE(n == 1);
  CHECK(f.set->filter_notifications(events, n) == 0);  // only the notification
  CHECK(f.harvest().size() == 1);
  // Drained: the kernel's set is quiet again, and no change while nobody blocks writes.
  s->change(readable());
  CHECK(::epoll_wait(f.epfd, events, 4, 0) == 0);
  // A member queued before the wait: no blocking at all.
  CHECK(!f.set->begin_blocking());
  f.set->end_blocking();
}

TEST_CASE("moving to the kernel empties the set for good", "[epoll_set]") {
  Fixture f;
  auto a = std::make_shared<FakeSocket>();
  auto b = std::make_shared<FakeSocket>();
  a->state = readable();
  REQUIRE(f.set->add(5, a, ev(EPOLLIN | EPOLLONESHOT, 1)) == 0);
  REQUIRE(f.set->add(6, b, ev(EPOLLOUT | EPOLLET, 2)) == 0);
  CHECK(f.harvest().size() == 1);  // a fires and is disarmed
  auto regs = f.set->take_members_for_kernel();
  REQUIRE(regs.size() == 2);
  for (const auto& r : regs) {
    if (r.fd == 5) {
      CHECK(!r.armed);
      CHECK(r.event.data.u64 == 1);
    } else {
      CHECK(r.fd == 6);
      CHECK(r.armed);
      CHECK((r.event.events & EPOLLET) != 0);
    }
  }
  CHECK(f.set->retired());
  CHECK(f.set->add(7, a, ev(EPOLLIN, 3)) == EpollSet::kUseKernel);
  CHECK(f.harvest().empty());
  // The notification eventfd left the kernel's set.
  epoll_event events[2];
  CHECK(::epoll_wait(f.epfd, events, 2, 0) == 0);
}
