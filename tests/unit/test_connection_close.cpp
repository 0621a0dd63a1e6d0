// The engine's SMC connections as they end, over the shm device between two processes:
// close() against a blocked send, EOF, EPIPE and ECONNRESET as on TCP, the close timeout,
// a peer that dies or stops answering (the keepalive), and unused link groups lingering.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "core/engine_state.h"
#include "tests/unit/engine_pair.h"

// As TCP's: the blocked call holds the socket (the kernel releases it only when the last
// system call using the file returns), so the close is deferred to the send's end.
TEST_CASE(
    "close() while another thread is blocked in send(): returns at once, the send completes") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);
        auto s = Engine::on_connected(fd);
        if (!s || !s->is_smc()) return 1;
        std::atomic<ssize_t> result{0};
        std::atomic<int> error{0};
        std::thread writer([&] {
          std::vector<uint8_t> big(4 << 20);  // far more than the peer's ring: blocks
          ssize_t n = sock_send(*s, fd, big.data(), big.size(), MSG_NOSIGNAL);
          error = errno;
          result = n;
        });
        usleep(200'000);  // the writer is now waiting for ring space
        timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        s->release(fd);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        writer.join();
        close(fd);
        const long close_ms =
            (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1'000'000;
        if (close_ms > 500) return 2;  // close() waited for the blocked writer
        // The peer read everything: the send completed, and only then was the
        // connection closed (the peer's reads end in EOF after all of it).
        if (result.load() != static_cast<ssize_t>(4 << 20)) return 3;
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        char c;
        REQUIRE(sock_recv(*s, fd, &c, 1) == 1);  // settles SMC; the ring is full behind it
        usleep(1'000'000);  // not reading: the writer stays blocked, the client closes
        std::vector<char> buf(1 << 16);
        int64_t total = 1;
        ssize_t n;
        while ((n = sock_recv(*s, fd, buf.data(), buf.size())) > 0) total += n;
        REQUIRE(n == 0);
        REQUIRE(total == (4 << 20));
        REQUIRE(s->is_smc());
        s->release(fd);
        close(fd);
      });
  close(lfd);
}

TEST_CASE("a peer that never closes its side: torn down after the close timeout") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);
        auto s = Engine::on_connected(fd);
        if (!s || !s->is_smc()) return 1;
        if (sock_send(*s, fd, "x", 1) != 1) return 2;
        char c;
        if (sock_recv(*s, fd, &c, 1) != 0) return 3;  // the server closed: EOF over SMC
        // Its TCP socket is still held open while it waits for our close...
        if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) != -1 || errno != EAGAIN) return 4;
        // ...which never comes: after the close timeout (1 s here) it is released (FIN).
        for (int i = 0; i < 50; ++i) {
          usleep(100'000);
          if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
            s->release(fd);
            close(fd);
            return i >= 5 ? 0 : 5;  // not before ~1 s
          }
        }
        return 6;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        char c;
        REQUIRE(sock_recv(*s, fd, &c, 1) == 1);
        REQUIRE(s->is_smc());
        s->release(fd);
        close(fd);
      });
  close(lfd);
}

TEST_CASE("close semantics: EOF, EPIPE after the peer closed, ECONNRESET on abortive close") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        // 1: the server closes after sending; we read the data, then EOF, then EPIPE.
        int fd = connect_loopback(port);
        auto s = Engine::on_connected(fd);
        if (!s || !s->is_smc()) return 1;
        if (sock_send(*s, fd, "go", 2) != 2) return 8;
        char buf[16];
        if (sock_recv(*s, fd, buf, 5, MSG_WAITALL) != 5) return 2;
        if (sock_recv(*s, fd, buf, sizeof buf) != 0) return 3;
        if (sock_send(*s, fd, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE) return 4;
        s->release(fd);
        close(fd);
        // 2: we close with unread data: the server sees ECONNRESET.
        fd = connect_loopback(port);
        s = Engine::on_connected(fd);
        if (!s || !s->is_smc()) return 5;
        if (sock_send(*s, fd, "ping", 4) != 4) return 6;
        // wait until the server's data has arrived, unread
        if (sock_recv(*s, fd, buf, 1, MSG_PEEK) != 1) return 7;
        s->release(fd);
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        char go[2];
        REQUIRE(sock_recv(*s, fd, go, 2, MSG_WAITALL) == 2);
        REQUIRE(sock_send(*s, fd, "hello", 5) == 5);
        REQUIRE(s->is_smc());
        s->release(fd);
        close(fd);

        fd = accept(lfd, nullptr, nullptr);
        s = Engine::on_accepted(fd, listener);
        char buf[8];
        REQUIRE(sock_recv(*s, fd, buf, 4, MSG_WAITALL) == 4);
        REQUIRE(sock_send(*s, fd, "unread", 6) == 6);
        ssize_t n = sock_recv(*s, fd, buf, sizeof buf);
        REQUIRE(n == -1);
        REQUIRE(errno == ECONNRESET);
        s->release(fd);
        close(fd);
      });
  close(lfd);
}

TEST_CASE("a peer process that dies mid-stream ends the connection with ECONNRESET") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    Engine::after_fork_in_child();
    close(lfd);
    int fd = connect_loopback(port);
    auto s = Engine::on_connected(fd);
    std::mt19937 rng(1);
    send_pattern(*s, fd, 1 << 20, rng);
    kill(getpid(), SIGKILL);  // mid-stream, without any close
    _exit(1);
  }
  int fd = accept(lfd, nullptr, nullptr);
  auto s = Engine::on_accepted(fd, listener);
  std::vector<uint8_t> buf(65536);
  ssize_t n;
  while ((n = sock_recv(*s, fd, buf.data(), buf.size())) > 0) {
  }
  REQUIRE(s->is_smc());
  REQUIRE(n == -1);
  REQUIRE(errno == ECONNRESET);
  int status;
  waitpid(pid, &status, 0);
  s->release(fd);
  close(fd);
  close(lfd);
}

// Polls `pred` every 50 ms for up to `ms`.
template <typename Pred>
bool eventually(int ms, Pred pred) {
  for (int waited = 0; waited <= ms; waited += 50) {
    if (pred()) return true;
    usleep(50'000);
  }
  return false;
}

TEST_CASE("an unused link group is deleted after the linger time, on both sides") {
  env();
  using smcpre::core::EngineState;
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);
        auto s = Engine::on_connected(fd);
        if (!s || !s->is_smc()) return 1;
        if (sock_send(*s, fd, "x", 1) != 1) return 2;
        char c;
        if (sock_recv(*s, fd, &c, 1) != 0) return 3;
        if (EngineState::get()->live_group_count() != 1) return 4;
        s->release(fd);
        close(fd);
        // The server's linger (0.5 s) ends first: its DELETE LINK takes ours down too,
        // long before our own (10 s longer) would.
        if (!eventually(5000, [] { return EngineState::get()->live_group_count() == 0; })) {
          return 5;
        }
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        char c;
        REQUIRE(sock_recv(*s, fd, &c, 1) == 1);
        REQUIRE(s->is_smc());
        REQUIRE(EngineState::get()->live_group_count() >= 1);
        s->release(fd);
        close(fd);
        REQUIRE(eventually(5000, [] { return EngineState::get()->live_group_count() == 0; }));
      });
  close(lfd);
}

// A client process connected over SMC that has sent one byte (already read here) and then
// runs `then` in the child, which never returns (it waits to be stopped or kills itself).
struct SilentPeer {
  explicit SilentPeer(const std::function<void()>& then) {
    env();
    uint16_t port;
    lfd = listen_loopback(&port);
    auto listener = Engine::on_listen(lfd);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      Engine::after_fork_in_child();
      close(lfd);
      int cfd = connect_loopback(port);
      auto cs = Engine::on_connected(cfd);
      sock_send(*cs, cfd, "x", 1);
      then();
      _exit(1);
    }
    fd = accept(lfd, nullptr, nullptr);
    s = Engine::on_accepted(fd, listener);
    char c;
    REQUIRE(sock_recv(*s, fd, &c, 1) == 1);
    REQUIRE(s->is_smc());
  }
  ~SilentPeer() {
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    s->release(fd);
    close(fd);
    close(lfd);
  }
  int lfd = -1;
  int fd = -1;
  pid_t pid = -1;
  std::shared_ptr<Socket> s;
};

TEST_CASE("a peer that stops answering is taken for gone after the keepalive (ECONNRESET)") {
  SilentPeer peer([] { pause(); });  // stopped below; its TCP connection stays up
  REQUIRE(kill(peer.pid, SIGSTOP) == 0);
  timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  // Blocks with nothing coming: the TEST LINK after 1 s of silence goes unanswered.
  char c;
  const ssize_t n = sock_recv(*peer.s, peer.fd, &c, 1);
  const int error = errno;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double waited =
      static_cast<double>(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  CHECK(n == -1);
  CHECK(error == ECONNRESET);
  CHECK(waited >= 0.9);  // not before a keepalive interval
  CHECK(waited < 10);
}

TEST_CASE("a stopped peer that fills the send queue: no spin, reset after the keepalive") {
  SilentPeer peer([] { pause(); });
  REQUIRE(kill(peer.pid, SIGSTOP) == 0);
  // One-byte writes, a CDC each: the peer's 16 receives go first, then every CDC meets
  // RNR and waits in the send queue until it is full. The writer then waits for room
  // (it spun before, and the keepalive never fired: it could not post its TEST LINK).
  clock_t cpu0 = clock();
  timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  ssize_t n = 1;
  int error = 0;
  for (int i = 0; i < 100000 && n == 1; ++i) {
    n = sock_send(*peer.s, peer.fd, "y", 1, MSG_NOSIGNAL);
    error = errno;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double waited =
      static_cast<double>(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  const double cpu = static_cast<double>(clock() - cpu0) / CLOCKS_PER_SEC;
  CHECK(n == -1);
  CHECK((error == ECONNRESET || error == EPIPE));
  CHECK(waited < 10);
  CHECK(cpu < waited / 4);  // this process's CPU over the wait: nowhere near a spinning core
}

TEST_CASE("a dead peer's TCP connection ends an idle SMC connection at once (ECONNRESET)") {
  SilentPeer peer([] {
    usleep(300'000);  // the server is blocked in recv by now
    kill(getpid(), SIGKILL);
  });
  char c;
  const ssize_t n = sock_recv(*peer.s, peer.fd, &c, 1);
  const int error = errno;
  CHECK(n == -1);
  CHECK(error == ECONNRESET);
}
