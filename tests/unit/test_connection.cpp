// The engine end to end over the shm device, without the interposer: two processes, a
// real TCP connection on loopback, the CLC handshake, and data through RMB rings.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "core/engine_state.h"
#include "core/wire/clc.h"

using smcpre::core::Engine;
using smcpre::core::Path;
using smcpre::core::Socket;

namespace {

struct TestEnv {
  TestEnv() {
    char tmpl[] = "/tmp/smcpre-test-XXXXXX";
    dir = mkdtemp(tmpl);
    setenv("SMCPRE_RUNTIME_DIR", dir.c_str(), 1);
    setenv("SMCPRE_RMB_SIZE", "64K", 1);  // small rings: wraps and flow control get exercised
    setenv("SMCPRE_RQ_DEPTH", "16", 1);   // a short receive queue: RNR gets exercised
    setenv("SMCPRE_CLOSE_TIMEOUT_MS", "1000", 1);
    setenv("SMCPRE_LINGER_MS", "500", 1);      // unused link groups go soon
    setenv("SMCPRE_KEEPALIVE_MS", "1000", 1);  // and silent peers are noticed soon
    signal(SIGPIPE, SIG_IGN);
#ifdef SMCPRE_TEST_STAGED_WRITES
    smcpre::core::EngineState::stage_shm_writes_for_tests(true);
#endif
  }
  std::string dir;
};
TestEnv& env() {
  static TestEnv e;
  return e;
}

int listen_loopback(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(listen(fd, 64) == 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

int connect_loopback(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  return fd;
}

uint8_t pattern(uint64_t i) {
  return static_cast<uint8_t>((i * 2654435761u) >> 13);
}

// Moves bytes through the engine's Socket the way the interposer would.
ssize_t sock_send(Socket& s, int fd, const void* buf, size_t len, int flags = 0) {
  if (s.route_send(fd, flags) == Path::kKernel) return send(fd, buf, len, flags);
  iovec v{const_cast<void*>(buf), len};
  return s.send(&v, 1, flags);
}
ssize_t sock_recv(Socket& s, int fd, void* buf, size_t len, int flags = 0) {
  if (s.route_recv(fd, flags) == Path::kKernel) return recv(fd, buf, len, flags);
  iovec v{buf, len};
  return s.recv(&v, 1, flags);
}

bool send_pattern(Socket& s, int fd, uint64_t total, std::mt19937& rng) {
  std::vector<uint8_t> buf(1 << 20);
  uint64_t sent = 0;
  while (sent < total) {
    size_t chunk =
        std::min<uint64_t>(total - sent, 1 + rng() % (rng() % 4 == 0 ? buf.size() : 9000));
    for (size_t i = 0; i < chunk; ++i) buf[i] = pattern(sent + i);
    ssize_t n = sock_send(s, fd, buf.data(), chunk);
    if (n <= 0) return false;
    sent += static_cast<uint64_t>(n);
  }
  return true;
}

// Returns bytes received until EOF, or -1 on a content mismatch or error.
int64_t recv_pattern(Socket& s, int fd, std::mt19937& rng) {
  std::vector<uint8_t> buf(1 << 20);
  uint64_t got = 0;
  while (true) {
    size_t want = 1 + rng() % buf.size();
    ssize_t n = sock_recv(s, fd, buf.data(), want);
    if (n < 0) return -1;
    if (n == 0) return static_cast<int64_t>(got);
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] != pattern(got + i)) return -1;
    }
    got += static_cast<uint64_t>(n);
  }
}

// Runs `child` in a forked process (exit status 0 = pass) and `parent` here.
void run_pair(const std::function<int()>& child, const std::function<void()>& parent) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    Engine::after_fork_in_child();
    alarm(60);
    _exit(child());
  }
  parent();
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

}  // namespace

TEST_CASE("client and server move data over SMC in both directions") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  REQUIRE(listener);
  const uint64_t sizes[] = {1, 100, 65535, 65536, 65537, 3 * 1024 * 1024 + 7};
  run_pair(
      [&] {
        close(lfd);
        std::mt19937 rng(7);
        for (uint64_t size : sizes) {
          int fd = connect_loopback(port);
          auto s = Engine::on_connected(fd);
          if (!s || !s->is_smc()) return 10;
#ifdef SMCPRE_TEST_STAGED_WRITES
          // The device really makes the engine stage its writes.
          uint32_t decline = 0;
          auto* device = smcpre::core::EngineState::get()->device_for(fd, &decline);
          if (device == nullptr || device->caps().write_from_any_memory) return 14;
#endif
          if (!send_pattern(*s, fd, size, rng)) return 11;
          if (s->shutdown(SHUT_WR) != 0) return 12;
          // Then the server sends the same amount back.
          if (recv_pattern(*s, fd, rng) != static_cast<int64_t>(size)) return 13;
          s->release(fd);
          close(fd);
        }
        return 0;
      },
      [&] {
        std::mt19937 rng(9);
        for (uint64_t size : sizes) {
          int fd = accept(lfd, nullptr, nullptr);
          REQUIRE(fd >= 0);
          auto s = Engine::on_accepted(fd, listener);
          REQUIRE(s);
          REQUIRE(recv_pattern(*s, fd, rng) == static_cast<int64_t>(size));
          REQUIRE(s->is_smc());
          REQUIRE(send_pattern(*s, fd, size, rng));
          s->release(fd);
          close(fd);
        }
      });
  close(lfd);
}

TEST_CASE("one-byte writes, one CDC each, far more than the receive queue holds") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  const int kBytes = 20000;
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);
        auto s = Engine::on_connected(fd);
        if (!s || !s->is_smc()) return 1;
        for (int i = 0; i < kBytes; ++i) {
          uint8_t b = pattern(static_cast<uint64_t>(i));
          if (sock_send(*s, fd, &b, 1) != 1) return 2;
        }
        s->shutdown(SHUT_WR);
        char c;
        if (sock_recv(*s, fd, &c, 1) != 0) return 3;
        s->release(fd);
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        std::mt19937 rng(3);
        REQUIRE(recv_pattern(*s, fd, rng) == kBytes);
        REQUIRE(s->is_smc());
        s->release(fd);
        close(fd);
      });
  close(lfd);
}

TEST_CASE("SO_RCVTIMEO bounds a blocking SMC receive: EAGAIN, as TCP gives") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  auto set_timeout = [](int fd, int ms) {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  };
  auto elapsed_ms = [](timespec a) {
    timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1'000'000;
  };
  run_pair(
      [&] {
        close(lfd);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        set_timeout(fd, 300);  // before connect: the engine reads it when it takes over
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(port);
        if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return 1;
        auto s = Engine::on_connected(fd);
        if (!s || !s->is_smc()) return 2;
        char c;
        timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (sock_recv(*s, fd, &c, 1) != -1 || errno != EAGAIN) return 3;
        if (elapsed_ms(t0) < 250) return 4;
        if (sock_send(*s, fd, "done", 4) != 4) return 5;
        s->release(fd);
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        REQUIRE(set_timeout(fd, 100) == 0);
        auto s = Engine::on_accepted(fd, listener);
        char buf[4];
        int timeouts = 0;
        ssize_t n;
        while ((n = sock_recv(*s, fd, buf, 4, MSG_WAITALL)) == -1 && errno == EAGAIN) ++timeouts;
        REQUIRE(n == 4);
        REQUIRE(s->is_smc());
        REQUIRE(timeouts >= 2);  // ~300 ms of client silence in 100 ms steps
        s->release(fd);
        close(fd);
      });
  close(lfd);
}

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

TEST_CASE("a plain TCP client is served as TCP, bytes untouched") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);
        const char msg[] = "GET / HTTP/1.0\r\n\r\n";
        if (send(fd, msg, sizeof msg, 0) != sizeof msg) return 1;
        char reply[5] = {};
        if (recv(fd, reply, 4, MSG_WAITALL) != 4 || std::strcmp(reply, "pong") != 0) return 2;
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        char buf[64] = {};
        REQUIRE(sock_recv(*s, fd, buf, 19, MSG_WAITALL) == 19);
        REQUIRE(std::string(buf) == "GET / HTTP/1.0\r\n\r\n");
        REQUIRE_FALSE(s->is_smc());
        REQUIRE(sock_send(*s, fd, "pong", 4) == 4);
        close(fd);
      });
  close(lfd);
}

TEST_CASE("a server that writes first is correct whichever path it takes") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);
        auto s = Engine::on_connected(fd);
        if (!s) return 1;
        char buf[8] = {};
        if (sock_recv(*s, fd, buf, 7, MSG_WAITALL) != 7 || std::string(buf) != "220 hi\n") return 2;
        if (sock_send(*s, fd, "QUIT\n", 5) != 5) return 3;
        s->release(fd);
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        REQUIRE(sock_send(*s, fd, "220 hi\n", 7) == 7);
        char buf[8] = {};
        REQUIRE(sock_recv(*s, fd, buf, 5, MSG_WAITALL) == 5);
        REQUIRE(std::string(buf) == "QUIT\n");
        s->release(fd);
        close(fd);
      });
  close(lfd);
}

TEST_CASE("a Proposal arriving after the server spoke is swallowed, never shown") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);  // a raw client, playing a late smcpre client
        char buf[8] = {};
        if (recv(fd, buf, 7, MSG_WAITALL) != 7) return 1;
        smcpre::core::clc::Proposal proposal;
        proposal.ipv4_subnet_be = htonl(0x7f000000);
        proposal.ipv4_prefix_len = 8;
        std::vector<uint8_t> bytes = smcpre::core::clc::encode(proposal);
        bytes.insert(bytes.end(), {'Q', 'U', 'I', 'T', '\n'});
        if (send(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) return 2;
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        REQUIRE(sock_send(*s, fd, "220 hi\n", 7) == 7);  // before any Proposal: TCP for good
        char buf[16] = {};
        REQUIRE(sock_recv(*s, fd, buf, 5, MSG_WAITALL) == 5);
        REQUIRE(std::string(buf) == "QUIT\n");
        REQUIRE(sock_recv(*s, fd, buf, sizeof buf) == 0);
        REQUIRE_FALSE(s->is_smc());
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

TEST_CASE("urgent data and SO_LINGER {1, 0} on an SMC connection behave as on TCP") {
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
        // MSG_OOB has no SMC equivalent: refused, never sent inline.
        iovec v{const_cast<char*>("u"), 1};
        if (s->send(&v, 1, MSG_OOB) != -1 || errno != EOPNOTSUPP) return 2;
        char c;
        iovec r{&c, 1};
        if (s->recv(&r, 1, MSG_OOB) != -1 || errno != EINVAL) return 3;  // none pending
        if (sock_send(*s, fd, "x", 1) != 1) return 4;
        // A zero linger time makes close() abortive: the server sees ECONNRESET.
        const ::linger abortive{1, 0};
        s->on_sockopt(SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
        s->release(fd);
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        char c;
        REQUIRE(sock_recv(*s, fd, &c, 1) == 1);
        REQUIRE(c == 'x');  // the urgent byte never arrived
        REQUIRE(s->is_smc());
        CHECK(sock_recv(*s, fd, &c, 1) == -1);
        CHECK(errno == ECONNRESET);
        s->release(fd);
        close(fd);
      });
  close(lfd);
}
