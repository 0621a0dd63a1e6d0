// The readiness mirror (core/datapath/readiness_mirror.h): in every state an SMC connection can be
// in, its poll and epoll masks must equal those of a kernel TCP socket in the same state
// (each checked against a real loopback TCP pair driven through the same steps), and the
// kernel's epoll machinery (edges, EPOLLONESHOT, several sets, removal on close) must work
// on it as it does on TCP.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/datapath/readiness_mirror.h"

using smcpre::core::MirrorState;
using smcpre::core::ReadinessMirror;

namespace {

// Everything TCP can report, except POLLWRBAND (see the test "WRBAND").
constexpr short kPollAsk =
    POLLIN | POLLPRI | POLLOUT | POLLRDHUP | POLLRDNORM | POLLRDBAND | POLLWRNORM;
constexpr uint32_t kEpollAsk =
    EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM;

constexpr unsigned kIn = POLLIN | POLLRDNORM;
constexpr unsigned kOut = POLLOUT | POLLWRNORM;
constexpr unsigned kRdhup = POLLRDHUP;
constexpr unsigned kHup = POLLHUP;
constexpr unsigned kErr = POLLERR;
// What an epoll set asking for plain EPOLLIN/EPOLLOUT reports.
constexpr unsigned kEIn = EPOLLIN;
constexpr unsigned kEOut = EPOLLOUT;
constexpr unsigned kERdhup = EPOLLRDHUP;
constexpr unsigned kEHup = EPOLLHUP;
constexpr unsigned kEErr = EPOLLERR;

std::string names(unsigned m) {
  static const std::pair<unsigned, const char*> bits[] = {
      {POLLIN, "IN"},         {POLLPRI, "PRI"},       {POLLOUT, "OUT"},      {POLLRDHUP, "RDHUP"},
      {POLLHUP, "HUP"},       {POLLERR, "ERR"},       {POLLNVAL, "NVAL"},    {POLLRDNORM, "RDNORM"},
      {POLLRDBAND, "RDBAND"}, {POLLWRNORM, "WRNORM"}, {POLLWRBAND, "WRBAND"}};
  std::string s;
  for (auto [bit, name] : bits) {
    if (m & bit) s += std::string(s.empty() ? "" : " ") + name;
    m &= ~bit;
  }
  if (m != 0) s += " +" + std::to_string(m);
  return s.empty() ? "-" : s;
}

unsigned poll_mask(int fd, short ask = kPollAsk) {
  pollfd p{fd, ask, 0};
  REQUIRE(poll(&p, 1, 0) >= 0);
  return static_cast<unsigned short>(p.revents);
}

// A fresh level-triggered epoll set's view of `fd`. (epoll's bits equal poll's.)
unsigned epoll_mask(int fd) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  REQUIRE(ep >= 0);
  epoll_event ev{};
  ev.events = kEpollAsk;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
  epoll_event out{};
  int n = epoll_wait(ep, &out, 1, 0);
  close(ep);
  REQUIRE(n >= 0);
  return n == 0 ? 0 : out.events;
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& other) noexcept : fd(other.fd) { other.fd = -1; }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  operator int() const { return fd; }
};

// A connected loopback TCP pair, both ends non-blocking: `a` plays the SMC socket.
struct TcpPair {
  Fd a, b;
  TcpPair() {
    Fd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(listener >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(listener, 1) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    a.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(connect(a, reinterpret_cast<sockaddr*>(&addr), len) == 0);
    b.fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(b >= 0);
    for (int fd : {a.fd, b.fd}) REQUIRE(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
  }
  // Sends from `a` until the kernel takes no more (`b` does not read).
  void fill_a() {
    static char buf[65536];
    for (int eagains = 0; eagains < 3;) {
      if (send(a, buf, sizeof buf, MSG_NOSIGNAL) > 0) {
        eagains = 0;
        continue;
      }
      REQUIRE(errno == EAGAIN);
      ++eagains;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  void drain(int fd) {
    static char buf[65536];
    while (read(fd, buf, sizeof buf) > 0) {
    }
  }
  // b aborts the connection: an RST reaches a.
  void reset_from_b() {
    linger lg{1, 0};
    REQUIRE(setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    b.reset();
  }
};

// Loopback delivers within the sending call, but window updates and the like may lag:
// gives TCP up to 2 s to show `expected`, then returns what it shows.
unsigned settled_tcp_mask(int fd, unsigned expected) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  unsigned m = poll_mask(fd);
  while (m != expected && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    m = poll_mask(fd);
  }
  return m;
}

// TCP and the mirror, in poll and in LT epoll, all show `expected`.
void check_same(int tcp, const ReadinessMirror& mirror, unsigned expected, const char* what) {
  INFO("state: " << what);
  CHECK(names(settled_tcp_mask(tcp, expected)) == names(expected));
  CHECK(names(epoll_mask(tcp)) == names(expected));
  CHECK(names(poll_mask(mirror.app_fd())) == names(expected));
  CHECK(names(epoll_mask(mirror.app_fd())) == names(expected));
}

std::unique_ptr<ReadinessMirror> make_mirror(const MirrorState& initial = {.writable = true}) {
  std::string error;
  auto m = ReadinessMirror::create(&error);
  INFO(error);
  REQUIRE(m);
  m->apply(initial, false);
  return m;
}

MirrorState st(bool readable, bool writable, bool peer_done = false, bool closed = false) {
  return MirrorState{
      .readable = readable, .writable = writable, .peer_done = peer_done, .closed = closed};
}

MirrorState reset_state(bool error_reported) {
  return MirrorState{.reset = true, .error_reported = error_reported};
}

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

int queued_to_app(const ReadinessMirror& m) {
  int n = -1;
  REQUIRE(ioctl(m.app_fd(), FIONREAD, &n) == 0);
  return n;
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

TEST_CASE("mirror: app_fd is a non-blocking CLOEXEC AF_UNIX stream socket") {
  auto m = make_mirror();
  int fd = m->app_fd();
  CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
  CHECK((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
  int v = 0;
  socklen_t len = sizeof v;
  REQUIRE(getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) == 0);
  CHECK(v == AF_UNIX);
  REQUIRE(getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) == 0);
  CHECK(v == SOCK_STREAM);
  // A fresh mirror shows what an idle connection with send space shows.
  std::string error;
  auto fresh = ReadinessMirror::create(&error);
  REQUIRE(fresh);
  CHECK(names(poll_mask(fresh->app_fd())) == names(kOut));
}

TEST_CASE("mirror equals TCP: data, draining, peer FIN, then our shutdown") {
  TcpPair tcp;
  auto m = make_mirror();
  check_same(tcp.a, *m, kOut, "established, idle");

  REQUIRE(send(tcp.b, "x", 1, 0) == 1);
  m->apply(st(true, true), true);
  check_same(tcp.a, *m, kIn | kOut, "data to read");

  tcp.drain(tcp.a);
  m->apply(st(false, true), false);
  check_same(tcp.a, *m, kOut, "data read");

  REQUIRE(send(tcp.b, "y", 1, 0) == 1);
  REQUIRE(shutdown(tcp.b, SHUT_WR) == 0);
  m->apply(st(true, true, true), true);
  check_same(tcp.a, *m, kIn | kOut | kRdhup, "peer FIN, data unread");

  tcp.drain(tcp.a);
  m->apply(st(false, true, true), false);
  check_same(tcp.a, *m, kIn | kOut | kRdhup, "peer FIN, data read, EOF");

  REQUIRE(shutdown(tcp.a, SHUT_WR) == 0);
  m->apply(st(false, true, true, true), false);
  check_same(tcp.a, *m, kIn | kOut | kRdhup | kHup, "both directions closed");
}

TEST_CASE("mirror equals TCP: send buffer full, data and FIN meanwhile, space again") {
  TcpPair tcp;
  auto m = make_mirror();
  tcp.fill_a();
  m->apply(st(false, false), false);
  check_same(tcp.a, *m, 0, "send buffer full");

  REQUIRE(send(tcp.b, "x", 1, 0) == 1);
  m->apply(st(true, false), true);
  check_same(tcp.a, *m, kIn, "full, data to read");

  REQUIRE(shutdown(tcp.b, SHUT_WR) == 0);
  m->apply(st(true, false, true), false);
  check_same(tcp.a, *m, kIn | kRdhup, "full, peer FIN");

  // b reads everything a sent: space returns.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((poll_mask(tcp.a) & POLLOUT) == 0 && std::chrono::steady_clock::now() < deadline) {
    tcp.drain(tcp.b);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  m->apply(st(true, true, true), false);
  check_same(tcp.a, *m, kIn | kOut | kRdhup, "space again, peer FIN");

  // Full once more after FIN: OUT goes, IN RDHUP stay.
  tcp.fill_a();
  m->apply(st(true, false, true), false);
  check_same(tcp.a, *m, kIn | kRdhup, "full again, peer FIN");

  // Our shutdown(SHUT_WR) with the buffer full: TCP reports OUT at once (a send fails).
  REQUIRE(shutdown(tcp.a, SHUT_WR) == 0);
  m->apply(st(true, false, true, true), false);
  check_same(tcp.a, *m, kIn | kOut | kRdhup | kHup, "full, then both directions closed");
}

TEST_CASE("mirror equals TCP: our own shutdowns") {
  SECTION("SHUT_WR: OUT only (the connection maps it to writable)") {
    TcpPair tcp;
    auto m = make_mirror();
    REQUIRE(shutdown(tcp.a, SHUT_WR) == 0);
    m->apply(st(false, true), false);
    check_same(tcp.a, *m, kOut, "local SHUT_WR");
  }
  SECTION("SHUT_RD: IN RDHUP (the connection maps it to peer_done)") {
    TcpPair tcp;
    auto m = make_mirror();
    REQUIRE(shutdown(tcp.a, SHUT_RD) == 0);
    m->apply(st(false, true, true), false);
    check_same(tcp.a, *m, kIn | kOut | kRdhup, "local SHUT_RD");
  }
  SECTION("SHUT_RDWR: closed") {
    TcpPair tcp;
    auto m = make_mirror();
    REQUIRE(shutdown(tcp.a, SHUT_RDWR) == 0);
    m->apply(st(false, true, true, true), false);
    check_same(tcp.a, *m, kIn | kOut | kRdhup | kHup, "local SHUT_RDWR");
  }
}

TEST_CASE("mirror equals TCP: reset, before and after the error is read") {
  const unsigned all = kIn | kOut | kRdhup | kHup;
  SECTION("from idle; the error read by recv") {
    TcpPair tcp;
    auto m = make_mirror();
    tcp.reset_from_b();
    m->apply(reset_state(false), false);
    check_same(tcp.a, *m, all | kErr, "reset");
    char c;
    REQUIRE(read(tcp.a, &c, 1) == -1);
    CHECK(errno == ECONNRESET);
    m->apply(reset_state(true), false);
    check_same(tcp.a, *m, all, "reset, error read");
    // Final: nothing brings it back or changes it.
    m->apply(st(true, false), true);
    m->apply(reset_state(false), false);
    check_same(tcp.a, *m, all, "reset, error read, later states");
  }
  SECTION("with the send buffer full and data unread; the error read by SO_ERROR") {
    TcpPair tcp;
    auto m = make_mirror();
    tcp.fill_a();
    REQUIRE(send(tcp.b, "x", 1, 0) == 1);
    m->apply(st(true, false), true);
    check_same(tcp.a, *m, kIn, "full, data to read");
    tcp.reset_from_b();
    m->apply(reset_state(false), false);
    check_same(tcp.a, *m, all | kErr, "reset");
    int err = 0;
    socklen_t len = sizeof err;
    REQUIRE(getsockopt(tcp.a, SOL_SOCKET, SO_ERROR, &err, &len) == 0);
    CHECK(err == ECONNRESET);
    m->apply(reset_state(true), false);
    check_same(tcp.a, *m, all, "reset, error read");
  }
  SECTION("after peer FIN") {
    TcpPair tcp;
    auto m = make_mirror();
    REQUIRE(shutdown(tcp.b, SHUT_WR) == 0);
    m->apply(st(false, true, true), false);
    check_same(tcp.a, *m, kIn | kOut | kRdhup, "peer FIN");
    tcp.reset_from_b();
    m->apply(reset_state(false), false);
    check_same(tcp.a, *m, all | kErr, "peer FIN, then reset");
  }
  SECTION("the mirror alone: a reset after a full close still shows ERR (the primer)") {
    auto m = make_mirror();
    m->apply(st(false, false), false);  // a full send queue read back empties it wholly
    m->apply(st(false, true), false);
    m->apply(st(false, true, true, true), false);
    CHECK(names(poll_mask(m->app_fd())) == names(all));
    m->apply(reset_state(false), false);
    CHECK(names(poll_mask(m->app_fd())) == names(all | kErr));
  }
  SECTION("the mirror alone: made after the error was read, it never shows ERR") {
    auto m = make_mirror(reset_state(true));
    CHECK(names(poll_mask(m->app_fd())) == names(all));
    CHECK(names(epoll_mask(m->app_fd())) == names(all));
  }
}

TEST_CASE("mirror: WRBAND is the one bit TCP and the mirror disagree on") {
  // The interposer must not ask app_fd for POLLWRBAND/EPOLLWRBAND: TCP never reports it.
  TcpPair tcp;
  auto m = make_mirror();
  CHECK((poll_mask(tcp.a, POLLOUT | POLLWRBAND) & POLLWRBAND) == 0);
  CHECK((poll_mask(m->app_fd(), POLLOUT | POLLWRBAND) & POLLWRBAND) != 0);
}

TEST_CASE("mirror: any sequence of states gives the mask of the last one") {
  // A model of what TCP reports, with peer_done, closed and reset sticky as in TCP.
  std::mt19937 rng(Catch::rngSeed());
  for (int round = 0; round < 200; ++round) {
    auto m = make_mirror(st(false, true));
    bool peer_done = false, closed = false, reset = false, reported = false;
    for (int step = 0; step < 30; ++step) {
      MirrorState s;
      unsigned r = rng();
      s.readable = r & 1;
      s.writable = r & 2;
      s.peer_done = (r % 97) < 6;
      s.closed = (r % 89) < 3;
      s.reset = (r % 83) < 2;
      s.error_reported = (r % 7) == 0;
      const bool new_data = r & 4;
      m->apply(s, new_data);
      reset = reset || s.reset;
      reported = reset && (reported || s.error_reported);
      closed = closed || s.closed;
      peer_done = peer_done || s.peer_done || closed;
      unsigned expect;
      if (reset) {
        expect = kIn | kOut | kRdhup | kHup | (reported ? 0 : kErr);
      } else if (closed) {
        expect = kIn | kOut | kRdhup | kHup;
      } else {
        expect = (s.readable || peer_done ? kIn : 0) | (s.writable ? kOut : 0) |
                 (peer_done ? kRdhup : 0);
      }
      INFO("round " << round << " step " << step << " bits " << r);
      REQUIRE(names(poll_mask(m->app_fd())) == names(expect));
      REQUIRE(queued_to_app(*m) <= 16);
    }
  }
}

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
