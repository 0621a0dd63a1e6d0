// The shm device's RC semantics between two real processes (fork): WRITEs and their
// bounds, SENDs in order, RNR and its retries, the notify fd, a killed peer, and posting
// against polling on two threads. A socketpair stands in for the CLC exchange on TCP.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "rdma/device.h"
#include "tests/unit/shm_side.h"

namespace {

// Waits until the QP notices an error (the peer's hangup), consuming notifications;
// region announcements may wake us first.
bool wait_error(QueuePair& qp, int timeout_ms = kTimeoutMs) {
  const int64_t deadline = now_ms() + timeout_ms;
  while (!qp.in_error() && now_ms() < deadline) {
    if (readable(qp.notify_fd(), static_cast<int>(deadline - now_ms()))) qp.consume_notify();
  }
  return qp.in_error();
}

}  // namespace

TEST_CASE("shm: RDMA WRITEs land in the peer's region, bounds are enforced", "[shm][fork]") {
  Child child([](Channel& ch) {
    Side s;
    CHILD_CHECK(s.open(small_config()));
    CHILD_CHECK(s.post_all_recvs());
    PeerInfo peer;
    CHILD_CHECK(rendezvous(s, ch, Role::kServer, &peer));
    // A region registered after connect is announced to the connected peer.
    auto late = s.pd->register_memory(8192, &s.error);
    CHILD_CHECK(late != nullptr);
    CHILD_CHECK(ch.put(RemoteRegion{late->remote_addr(), late->rkey(), 8192}));
    // The parent's SEND follows its WRITEs: once it is here, so are they.
    auto got = receive(s, 1);
    CHILD_CHECK(got.size() == 1);
    const uint8_t* b = s.bytes();
    const size_t n = s.region->length();
    for (size_t i = 0; i < 1000; ++i) CHILD_CHECK(b[i] == static_cast<uint8_t>(i * 7));
    for (size_t i = 0; i < 100; ++i) CHILD_CHECK(b[n - 100 + i] == 0xA0);  // wrapped piece 1
    for (size_t i = 0; i < 50; ++i) CHILD_CHECK(b[1000 + i] == 0xA1);      // wrapped piece 2
    CHILD_CHECK(b[1050] == 0);
    CHILD_CHECK(static_cast<uint8_t*>(late->addr())[8191] == 0x5C);
    CHILD_CHECK(ch.signal('V'));
    // The parent's QP goes to error on its bad WRITE; we see the hangup.
    CHILD_CHECK(wait_error(*s.qp));
    return 0;
  });
  Channel& ch = child.channel();
  Side s;
  REQUIRE(s.open(small_config()));
  PeerInfo peer;
  REQUIRE(rendezvous(s, ch, Role::kClient, &peer));
  RemoteRegion late{};
  REQUIRE(ch.get(&late));
  std::string error;
  REQUIRE(s.qp->prepare_remote_region(peer.region, 1000, &error));
  REQUIRE(s.qp->prepare_remote_region(late, 1000, &error));
  RemoteRegion too_long = peer.region;
  too_long.length += 1;
  CHECK_FALSE(s.qp->prepare_remote_region(too_long, 100, &error));
  CHECK_FALSE(s.qp->prepare_remote_region(RemoteRegion{peer.region.addr, 12345, 10}, 100, &error));

  std::vector<uint8_t> pattern(1000);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(i * 7);
  CHECK(s.qp->post_write(pattern.data(), 1000, 0, peer.region.addr, peer.region.rkey, 1, true) ==
        0);
  // An RMB wrap: the end of the region, then its start.
  std::vector<uint8_t> tail(100, 0xA0), head(50, 0xA1);
  const uint64_t end = peer.region.addr + peer.region.length;
  CHECK(s.qp->post_write(tail.data(), 100, 0, end - 100, peer.region.rkey, 2, false) == 0);
  CHECK(s.qp->post_write(head.data(), 50, 0, peer.region.addr + 1000, peer.region.rkey, 3, false) ==
        0);
  const uint8_t last = 0x5C;
  CHECK(s.qp->post_write(&last, 1, 0, late.addr + 8191, late.rkey, 4, false) == 0);
  CHECK(s.qp->post_send_inline("done", 4, 5, false) == 0);
  auto wc = reap(*s.qp, true, 1);
  REQUIRE(wc.size() == 1);
  CHECK(wc[0].wr_id == 1);
  CHECK(wc[0].status == WcStatus::kSuccess);
  CHECK(wc[0].opcode == WcOpcode::kRdmaWrite);
  CHECK(s.qp->counters().writes == 4);
  CHECK(s.qp->counters().write_bytes == 1151);
  CHECK(s.qp->counters().sends == 1);
  REQUIRE(ch.expect('V'));

  // 10 bytes past the end: a remote access error (unsignaled, yet reported), QP in error.
  CHECK(s.qp->post_write(tail.data(), 20, 0, end - 10, peer.region.rkey, 6, false) == 0);
  wc = reap(*s.qp, true, 1);
  REQUIRE(wc.size() == 1);
  CHECK(wc[0].wr_id == 6);
  CHECK(wc[0].status == WcStatus::kRemoteAccessError);
  CHECK(s.qp->in_error());
  CHECK(s.qp->post_write(tail.data(), 1, 0, peer.region.addr, peer.region.rkey, 7, false) == EPIPE);
  CHECK(s.qp->post_send_inline("x", 1, 8, false) == EPIPE);
  CHECK(child.wait() == 0);
}

TEST_CASE("shm: SENDs arrive in order with their bytes", "[shm][fork]") {
  constexpr int kMessages = 1000;
  auto message = [](int i, uint8_t* out) {
    const uint32_t len = 4 + static_cast<uint32_t>(i % 61);
    std::memcpy(out, &i, 4);
    for (uint32_t j = 4; j < len; ++j) out[j] = static_cast<uint8_t>(i + j);
    return len;
  };
  Child child([&](Channel& ch) {
    Side s;
    CHILD_CHECK(s.open(small_config()));
    CHILD_CHECK(s.post_all_recvs());
    PeerInfo peer;
    CHILD_CHECK(rendezvous(s, ch, Role::kServer, &peer));
    auto got = receive(s, kMessages);
    CHILD_CHECK(got.size() == size_t{kMessages});
    uint8_t expected[64];
    for (int i = 0; i < kMessages; ++i) {
      const uint32_t len = message(i, expected);
      CHILD_CHECK(got[i].size() == size_t{len});
      CHILD_CHECK(std::memcmp(got[i].data(), expected, len) == 0);
    }
    CHILD_CHECK(s.qp->counters().recvs == kMessages);
    return 0;
  });
  Side s;
  QpConfig config = small_config();
  config.send_depth = 16;
  REQUIRE(s.open(config));
  PeerInfo peer;
  REQUIRE(rendezvous(s, child.channel(), Role::kClient, &peer));
  uint8_t data[64];
  CHECK(s.qp->post_send_inline(data, 65, 0, false) == EINVAL);
  int signaled = 0;
  std::vector<WorkCompletion> completions;
  WorkCompletion wc[16];
  for (int i = 0; i < kMessages; ++i) {
    const uint32_t len = message(i, data);
    const bool sig = i % 8 == 7;
    int rc;
    while ((rc = s.qp->post_send_inline(data, len, i, sig)) == EAGAIN) {
      const int n = s.qp->poll_send(wc);
      completions.insert(completions.end(), wc, wc + n);
    }
    REQUIRE(rc == 0);
    signaled += sig;
  }
  auto rest = reap(*s.qp, true, signaled - completions.size());
  completions.insert(completions.end(), rest.begin(), rest.end());
  REQUIRE(completions.size() == static_cast<size_t>(signaled));
  for (size_t k = 0; k < completions.size(); ++k) {
    CHECK(completions[k].status == WcStatus::kSuccess);
    CHECK(completions[k].wr_id == 8 * k + 7);
    CHECK(completions[k].opcode == WcOpcode::kSend);
  }
  CHECK(s.qp->counters().sends == kMessages);
  CHECK(child.wait() == 0);
}

TEST_CASE("shm: RNR exactly when no receive is posted; a WRITE behind it waits", "[shm][fork]") {
  Child child([](Channel& ch) {
    Side s;
    QpConfig config = small_config();
    config.recv_depth = 4;
    CHILD_CHECK(s.open(config));
    CHILD_CHECK(s.post_all_recvs());
    PeerInfo peer;
    CHILD_CHECK(rendezvous(s, ch, Role::kServer, &peer));
    CHILD_CHECK(ch.expect('P'));
    // SEND 5 met RNR; the WRITE posted after it must not be visible yet.
    for (int i = 128; i < 384; ++i) CHILD_CHECK(s.bytes()[i] == 0);
    auto got = receive(s, 6);
    CHILD_CHECK(got.size() == 6);
    for (int i = 0; i < 6; ++i) CHILD_CHECK(got[i].size() == 1 && got[i][0] == i + 1);
    // SEND 6 was posted after the WRITE: the WRITE is done, with the bytes of post time.
    for (int i = 128; i < 384; ++i) CHILD_CHECK(s.bytes()[i] == 0x5A);
    return 0;
  });
  Side s;
  REQUIRE(s.open(small_config()));
  PeerInfo peer;
  REQUIRE(rendezvous(s, child.channel(), Role::kClient, &peer));
  std::string error;
  REQUIRE(s.qp->prepare_remote_region(peer.region, 1000, &error));
  for (uint8_t i = 1; i <= 4; ++i) REQUIRE(s.qp->post_send_inline(&i, 1, i, false) == 0);
  CHECK(s.qp->counters().rnr_events == 0);
  CHECK(s.qp->next_deadline_ns() == -1);
  const uint8_t five = 5, six = 6;
  REQUIRE(s.qp->post_send_inline(&five, 1, 5, false) == 0);
  CHECK(s.qp->counters().rnr_events == 1);
  CHECK(s.qp->next_deadline_ns() > 0);
  std::vector<uint8_t> pattern(256, 0x5A);
  REQUIRE(s.qp->post_write(pattern.data(), 256, 0, peer.region.addr + 128, peer.region.rkey, 50,
                           false) == 0);
  std::fill(pattern.begin(), pattern.end(), 0xEE);  // the queued WRITE owns a copy
  REQUIRE(s.qp->post_send_inline(&six, 1, 6, true) == 0);
  CHECK(s.qp->counters().writes == 0);
  REQUIRE(child.channel().signal('P'));
  auto wc = reap(*s.qp, true, 1);
  REQUIRE(wc.size() == 1);
  CHECK(wc[0].wr_id == 6);
  CHECK(wc[0].status == WcStatus::kSuccess);
  CHECK(s.qp->next_deadline_ns() == -1);
  CHECK(s.qp->counters().rnr_retries >= 1);
  CHECK(s.qp->counters().rnr_events >= 1);
  CHECK(s.qp->counters().writes == 1);
  CHECK(s.qp->counters().sends == 6);
  CHECK_FALSE(s.qp->in_error());
  CHECK(child.wait() == 0);
}

TEST_CASE("shm: RNR retry exceeded fails the SEND and flushes the rest", "[shm][fork]") {
  Child child([](Channel& ch) {
    Side s;
    QpConfig config = small_config();
    config.min_rnr_timer = 26;  // 81.92 ms: the parent posts its queue well within it
    CHILD_CHECK(s.open(config));
    PeerInfo peer;
    CHILD_CHECK(rendezvous(s, ch, Role::kServer, &peer));
    CHILD_CHECK(wait_error(*s.qp));  // posts nothing: waits for the parent's QP to fail
    return 0;
  });
  Side s;
  QpConfig config = small_config();
  config.rnr_retry = 1;
  config.send_depth = 8;
  REQUIRE(s.open(config));
  PeerInfo peer;
  REQUIRE(rendezvous(s, child.channel(), Role::kClient, &peer));
  std::string error;
  REQUIRE(s.qp->prepare_remote_region(peer.region, 1000, &error));
  REQUIRE(s.qp->post_send_inline("a", 1, 100, true) == 0);
  CHECK(s.qp->counters().rnr_events == 1);
  const uint8_t byte = 1;
  REQUIRE(s.qp->post_write(&byte, 1, 0, peer.region.addr, peer.region.rkey, 101, true) == 0);
  for (uint64_t id = 102; id < 108; ++id) REQUIRE(s.qp->post_send_inline("b", 1, id, false) == 0);
  CHECK(s.qp->post_send_inline("c", 1, 108, false) == EAGAIN);  // send_depth queued
  auto wc = reap(*s.qp, true, 8);
  REQUIRE(wc.size() == 8);
  CHECK(wc[0].wr_id == 100);
  CHECK(wc[0].status == WcStatus::kRnrRetryExceeded);
  for (size_t i = 1; i < 8; ++i) {
    CHECK(wc[i].wr_id == 100 + i);
    CHECK(wc[i].status == WcStatus::kFlushError);
  }
  CHECK(wc[1].opcode == WcOpcode::kRdmaWrite);
  CHECK(s.qp->in_error());
  CHECK(s.qp->counters().rnr_events == 2);
  CHECK(s.qp->counters().rnr_retries == 1);
  CHECK(s.qp->counters().sends == 0);
  CHECK(s.qp->next_deadline_ns() == -1);
  CHECK(s.qp->post_send_inline("d", 1, 109, false) == EPIPE);
  CHECK(child.wait() == 0);
}

TEST_CASE("shm: the notify fd wakes a poll() only when armed", "[shm][fork]") {
  Child child([](Channel& ch) {
    Side s;
    CHILD_CHECK(s.open(small_config()));
    PeerInfo peer;
    CHILD_CHECK(rendezvous(s, ch, Role::kClient, &peer));
    CHILD_CHECK(ch.expect('1'));
    CHILD_CHECK(s.qp->post_send_inline("one", 3, 1, false) == 0);
    CHILD_CHECK(ch.signal('s'));
    CHILD_CHECK(ch.expect('2'));
    sleep_ms(50);
    CHILD_CHECK(s.qp->post_send_inline("two", 3, 2, false) == 0);
    CHILD_CHECK(ch.expect('q'));
    return 0;
  });
  Channel& ch = child.channel();
  Side s;
  REQUIRE(s.open(small_config()));
  REQUIRE(s.post_all_recvs());
  PeerInfo peer;
  REQUIRE(rendezvous(s, ch, Role::kServer, &peer));
  const int fd = s.qp->notify_fd();
  s.qp->consume_notify();  // takes in the client's region announcements
  CHECK_FALSE(readable(fd, 0));

  REQUIRE(ch.signal('1'));
  REQUIRE(ch.expect('s'));
  CHECK_FALSE(readable(fd, 100));  // a message arrived, but we did not arm
  s.qp->arm_recv_notify();
  CHECK(readable(fd, 0));  // arming finds the waiting message
  s.qp->consume_notify();
  CHECK_FALSE(readable(fd, 0));
  auto got = receive(s, 1);
  REQUIRE(got.size() == 1);

  s.qp->arm_recv_notify();
  CHECK_FALSE(readable(fd, 0));
  const int64_t start = now_ms();
  REQUIRE(ch.signal('2'));
  CHECK(readable(fd, kTimeoutMs));  // the peer's SEND wakes us
  CHECK(now_ms() - start >= 40);
  s.qp->consume_notify();
  got = receive(s, 1);
  REQUIRE(got.size() == 1);
  CHECK(std::string(got[0].begin(), got[0].end()) == "two");
  REQUIRE(ch.signal('q'));
  CHECK(child.wait() == 0);
}

TEST_CASE("shm: a killed peer puts the QP in error, never a hang", "[shm][fork]") {
  Child child([](Channel& ch) {
    Side s;
    CHILD_CHECK(s.open(small_config()));
    PeerInfo peer;
    CHILD_CHECK(rendezvous(s, ch, Role::kServer, &peer));
    CHILD_CHECK(ch.signal('R'));
    for (;;) ::pause();
    return 0;
  });
  Side s;
  QpConfig config = small_config();
  config.recv_depth = 4;
  REQUIRE(s.open(config));
  REQUIRE(s.post_all_recvs());
  PeerInfo peer;
  REQUIRE(rendezvous(s, child.channel(), Role::kClient, &peer));
  REQUIRE(child.channel().expect('R'));
  REQUIRE(s.qp->post_send_inline("x", 1, 7, true) == 0);  // RNR: the peer posted nothing
  CHECK(s.qp->counters().rnr_events == 1);
  ::kill(child.pid(), SIGKILL);
  child.reap();

  REQUIRE(wait_error(*s.qp));
  auto recvs = reap(*s.qp, false, 4, 1000);
  REQUIRE(recvs.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    CHECK(recvs[i].wr_id == i);
    CHECK(recvs[i].status == WcStatus::kFlushError);
  }
  auto sends = reap(*s.qp, true, 1, 1000);
  REQUIRE(sends.size() == 1);
  CHECK(sends[0].wr_id == 7);
  CHECK(sends[0].status == WcStatus::kFlushError);
  CHECK(s.qp->post_send_inline("y", 1, 8, false) == EPIPE);
  CHECK(s.qp->post_recv(s.buffer(0), kSlot, 0, 0) == EPIPE);
  CHECK(s.qp->next_deadline_ns() == -1);
}

TEST_CASE("shm: posting and poll_send on two threads across RNR stalls", "[shm][fork]") {
  constexpr uint32_t kCount = 2000;
  Child child([](Channel& ch) {
    Side s;
    QpConfig config = small_config();
    config.recv_depth = 8;
    CHILD_CHECK(s.open(config));
    CHILD_CHECK(s.post_all_recvs());
    PeerInfo peer;
    CHILD_CHECK(rendezvous(s, ch, Role::kServer, &peer));
    for (uint32_t next = 0; next < kCount;) {
      auto got = receive(s, std::min<uint32_t>(50, kCount - next));
      CHILD_CHECK(!got.empty());
      for (const auto& m : got) {
        uint32_t value;
        CHILD_CHECK(m.size() == sizeof value);
        std::memcpy(&value, m.data(), sizeof value);
        CHILD_CHECK(value == next);
        ++next;
      }
      sleep_ms(1);  // a slow receiver: the sender meets RNR
    }
    return 0;
  });
  Side s;
  QpConfig config = small_config();
  config.send_depth = 32;
  REQUIRE(s.open(config));
  PeerInfo peer;
  REQUIRE(rendezvous(s, child.channel(), Role::kClient, &peer));
  std::string error;
  REQUIRE(s.qp->prepare_remote_region(peer.region, 1000, &error));

  std::vector<WorkCompletion> completions;
  std::atomic<bool> stop{false};
  std::thread poller([&] {
    WorkCompletion wc[8];
    const int64_t deadline = now_ms() + 20000;
    while (completions.size() < kCount / 4 && !stop.load() && now_ms() < deadline) {
      const int n = s.qp->poll_send(wc);
      completions.insert(completions.end(), wc, wc + n);
    }
  });
  bool posted_all = true;
  for (uint32_t i = 0; i < kCount && posted_all; ++i) {
    if (i % 10 == 0) {
      const uint64_t target = peer.region.addr + (i % 800) * 8;
      int rc;
      while ((rc = s.qp->post_write(&i, 4, 0, target, peer.region.rkey, 1u << 31, false)) ==
             EAGAIN) {
        std::this_thread::yield();
      }
      posted_all = rc == 0;
    }
    int rc;
    while ((rc = s.qp->post_send_inline(&i, 4, i, i % 4 == 3)) == EAGAIN) {
      std::this_thread::yield();
    }
    posted_all = posted_all && rc == 0;
  }
  if (!posted_all) stop.store(true);
  poller.join();
  REQUIRE(posted_all);
  REQUIRE(completions.size() == kCount / 4);
  for (size_t k = 0; k < completions.size(); ++k) {
    CHECK(completions[k].status == WcStatus::kSuccess);
    CHECK(completions[k].wr_id == 4 * k + 3);
  }
  CHECK(s.qp->counters().rnr_events > 0);
  CHECK(s.qp->counters().sends == kCount);
  CHECK(s.qp->counters().writes == kCount / 10);
  CHECK(child.wait() == 0);
}
