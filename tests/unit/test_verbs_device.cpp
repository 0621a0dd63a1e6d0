// The verbs device between two processes (fork) over real RC queue pairs. It needs an
// RDMA device with an active port (Soft-RoCE in the test VM: scripts/rxe-vm); where there
// is none, as on hosts without RDMA, every case returns early with a note.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rdma/device.h"
#include "tests/unit/two_process.h"

using namespace smcpre::rdma;

namespace {

// Opens and closes a device in the parent only to learn whether one exists; each process
// then opens its own (a verbs context must not be used across fork).
bool have_device() {
  static const bool available = [] {
    std::string error;
    auto device = open_verbs_device("", 0, -1, &error);
    if (!device) std::printf("verbs tests skipped: %s\n", error.c_str());
    return device != nullptr;
  }();
  return available;
}

// One process's side: device, PD, a WRITE target region, receive buffers, a QP.
struct Side : DeviceSide {
  bool open(const QpConfig& qp_config) {
    return open_on(open_verbs_device("", 0, -1, &error), qp_config);
  }
};

// The CLC order: the server's data goes out in Accept, the client connects and answers
// with Confirm, then the server connects and says so (verbs drops packets that reach a
// QP not yet in RTR; the retry would recover, but slowly).
bool rendezvous(Side& side, Channel& channel, Role role, PeerInfo* peer) {
  if (role == Role::kServer) {
    return channel.put(info_of(side)) && channel.get(peer) &&
           side.qp->connect(peer->endpoint, Role::kServer, kTimeoutMs, &side.error) &&
           channel.signal('c');
  }
  return channel.get(peer) &&
         side.qp->connect(peer->endpoint, Role::kClient, kTimeoutMs, &side.error) &&
         channel.put(info_of(side)) && channel.expect('c');
}

QpConfig small_config() {
  QpConfig c;
  c.send_depth = 16;
  c.recv_depth = 16;
  c.max_inline = 64;
  return c;
}

std::vector<uint8_t> message(int i) {
  std::vector<uint8_t> m(static_cast<size_t>(1 + i % 64));
  for (size_t k = 0; k < m.size(); ++k) m[k] = static_cast<uint8_t>(i * 7 + k);
  return m;
}

// Server side used by most cases: posts receives, connects, then runs `body`.
template <typename Body>
int serve(Channel& channel, Body body) {
  Side side;
  CHILD_CHECK(side.open(small_config()));
  CHILD_CHECK(side.post_all_recvs());
  PeerInfo peer;
  CHILD_CHECK(rendezvous(side, channel, Role::kServer, &peer));
  return body(side, channel);
}

}  // namespace

TEST_CASE("verbs: device and QP parameters", "[verbs]") {
  if (!have_device()) return;
  Side side;
  REQUIRE(side.open(small_config()));
  CHECK(!side.device->name().empty());
  CHECK_FALSE(side.device->caps().write_from_any_memory);
  CHECK(side.device->caps().kind == DeviceKind::kVerbs);
  CHECK_FALSE(side.device->caps().reports_rnr);
  CHECK(side.device->caps().max_inline >= 64);
  CHECK(side.device->gid() != Gid{});
  // Soft-RoCE has RoCE v2 GIDs only: SMC-R version 2.
  CHECK(side.device->caps().roce_v2_gid);
  CHECK(reinterpret_cast<uintptr_t>(side.region->addr()) % 4096 == 0);
  const QpEndpoint ep = side.qp->local_endpoint();
  CHECK(ep.gid == side.device->gid());
  CHECK(ep.qp_num != 0);
  CHECK(ep.psn <= 0xffffff);
  CHECK(side.qp->notify_fd() >= 0);
  CHECK(side.qp->next_deadline_ns() == -1);
  // Not connected yet: nothing may be posted to the send queue.
  CHECK(side.qp->post_send_inline("x", 1, 1, true) == ENOTCONN);
  std::string error;
  CHECK_FALSE(side.qp->prepare_remote_region(RemoteRegion{1, 2, 0}, 0, &error));
  CHECK(side.qp->prepare_remote_region(RemoteRegion{1, 2, 10}, 0, &error));
  CHECK(side.post_all_recvs());
  CHECK(side.qp->posted_recvs() == side.config.recv_depth);
  // One more than the queue holds: refused, and the QP stays usable.
  CHECK(side.post_recv(0) == ENOMEM);
  CHECK_FALSE(side.qp->in_error());
  CHECK(side.qp->post_send_inline(std::vector<char>(1000).data(), 1000, 1, true) != 0);
  // The announced MTU respects the configured cap.
  QpConfig capped = small_config();
  capped.mtu = PathMtu::k256;
  auto small = side.pd->create_qp(capped, &error);
  REQUIRE(small);
  CHECK(small->local_endpoint().mtu == PathMtu::k256);
  // A peer endpoint that fails validation is refused with a reason, the QP untouched.
  QpEndpoint bad = small->local_endpoint();
  bad.gid = Gid{};
  error.clear();
  CHECK_FALSE(small->connect(bad, Role::kClient, kTimeoutMs, &error));
  CHECK(error == "peer GID is zero");
  bad = small->local_endpoint();
  bad.mtu = static_cast<PathMtu>(7);
  CHECK_FALSE(small->connect(bad, Role::kClient, kTimeoutMs, &error));
  CHECK_FALSE(small->in_error());
  // Configurations verbs would misread are refused before any verbs call.
  QpConfig wrong = small_config();
  wrong.rnr_retry = 8;
  CHECK_FALSE(side.pd->create_qp(wrong, &error));
  CHECK(error.find("rnr_retry") != std::string::npos);
  wrong = small_config();
  wrong.send_depth = 0;
  CHECK_FALSE(side.pd->create_qp(wrong, &error));
}

TEST_CASE("verbs: RDMA writes land, ordered before a later send", "[verbs]") {
  if (!have_device()) return;
  Child child([](Channel& channel) {
    return serve(channel, [](Side& side, Channel&) {
      const auto got = receive(side, 1);
      CHILD_CHECK(got.size() == 1 && got[0] == std::vector<uint8_t>({'d', 'o', 'n', 'e'}));
      // The WRITEs posted before that SEND are visible now (RC ordering).
      for (size_t i = 0; i < 3 * 4096; ++i) {
        CHILD_CHECK(side.bytes()[1000 + i] == static_cast<uint8_t>(i * 13 + 1));
      }
      CHILD_CHECK(side.bytes()[999] == 0 && side.bytes()[1000 + 3 * 4096] == 0);
      return 0;
    });
  });
  Side side;
  REQUIRE(side.open(small_config()));
  PeerInfo peer;
  REQUIRE(rendezvous(side, child.channel(), Role::kClient, &peer));
  REQUIRE(side.qp->prepare_remote_region(peer.region, kTimeoutMs, &side.error));
  for (size_t i = 0; i < 3 * 4096; ++i) side.bytes()[i] = static_cast<uint8_t>(i * 13 + 1);
  for (uint32_t chunk = 0; chunk < 3; ++chunk) {
    REQUIRE(side.qp->post_write(side.bytes() + chunk * 4096, 4096, side.region->lkey(),
                                peer.region.addr + 1000 + chunk * 4096, peer.region.rkey,
                                100 + chunk, chunk == 2) == 0);
  }
  REQUIRE(side.qp->post_send_inline("done", 4, 7, true) == 0);
  const auto wcs = reap(*side.qp, true, 2);
  REQUIRE(wcs.size() == 2);
  CHECK(wcs[0].wr_id == 102);
  CHECK(wcs[0].opcode == WcOpcode::kRdmaWrite);
  CHECK(wcs[0].status == WcStatus::kSuccess);
  CHECK(wcs[1].wr_id == 7);
  CHECK(wcs[1].opcode == WcOpcode::kSend);
  CHECK(side.qp->counters().writes == 3);
  CHECK(side.qp->counters().write_bytes == 3 * 4096);
  CHECK(side.qp->counters().sends == 1);
  CHECK(child.wait() == 0);
}

TEST_CASE("verbs: sends arrive in order through a small send queue", "[verbs]") {
  if (!have_device()) return;
  constexpr int kCount = 300;
  Child child([](Channel& channel) {
    return serve(channel, [](Side& side, Channel&) {
      const auto got = receive(side, kCount);
      CHILD_CHECK(got.size() == kCount);
      for (int i = 0; i < kCount; ++i) CHILD_CHECK(got[static_cast<size_t>(i)] == message(i));
      CHILD_CHECK(side.qp->counters().recvs == kCount);
      CHILD_CHECK(side.qp->posted_recvs() == side.config.recv_depth);
      return 0;
    });
  });
  Side side;
  REQUIRE(side.open(small_config()));
  PeerInfo peer;
  REQUIRE(rendezvous(side, child.channel(), Role::kClient, &peer));
  // Mostly unsignaled, so the device must signal on its own to free send-queue slots; the
  // caller only ever sees completions for what it asked to be signaled.
  std::vector<WorkCompletion> seen;
  int eagain = 0;
  WorkCompletion wc[16];
  const int64_t deadline = now_ms() + kTimeoutMs;
  for (int i = 0; i < kCount && now_ms() < deadline;) {
    const auto m = message(i);
    const bool signaled = i % 50 == 49;
    const int rc = side.qp->post_send_inline(m.data(), static_cast<uint32_t>(m.size()),
                                             static_cast<uint64_t>(i), signaled);
    if (rc == EAGAIN) {
      ++eagain;
      const int n = side.qp->poll_send(wc);
      seen.insert(seen.end(), wc, wc + n);
      continue;
    }
    REQUIRE(rc == 0);
    ++i;
  }
  const auto rest = reap(*side.qp, true, kCount / 50 - seen.size());
  seen.insert(seen.end(), rest.begin(), rest.end());
  REQUIRE(seen.size() == kCount / 50);
  for (size_t k = 0; k < seen.size(); ++k) {
    CHECK(seen[k].wr_id == 50 * k + 49);
    CHECK(seen[k].status == WcStatus::kSuccess);
  }
  CHECK(eagain > 0);  // 300 posts through 16 slots must have waited for some
  CHECK(side.qp->counters().sends == kCount);
  CHECK(child.wait() == 0);
  CHECK_FALSE(side.qp->in_error());
}

TEST_CASE("verbs: a message longer than its buffer continues in the overflow region", "[verbs]") {
  if (!have_device()) return;
  // SMC-Rv2's long LLC messages: the first kSlot bytes land in the posted buffer, the rest
  // in the region every receive shares; a short message after it uses its buffer only.
  constexpr uint32_t kLong = 200;
  constexpr uint32_t kOverflow = 8192 - kSlot;
  auto long_message = [] {
    std::vector<uint8_t> m(kLong);
    for (size_t k = 0; k < m.size(); ++k) m[k] = static_cast<uint8_t>(k * 13 + 1);
    return m;
  };
  Child child([&](Channel& channel) {
    Side side;
    CHILD_CHECK(side.open(small_config()));
    auto overflow = side.pd->register_memory(kOverflow, &side.error);
    CHILD_CHECK(overflow != nullptr);
    CHILD_CHECK(side.qp->set_recv_overflow(overflow->addr(), kOverflow, overflow->lkey()));
    CHILD_CHECK(side.post_all_recvs());
    PeerInfo peer;
    CHILD_CHECK(rendezvous(side, channel, Role::kServer, &peer));
    const auto wcs = reap(*side.qp, false, 2);
    CHILD_CHECK(wcs.size() == 2);
    CHILD_CHECK(wcs[0].status == WcStatus::kSuccess && wcs[0].byte_len == kLong);
    std::vector<uint8_t> got(side.buffer(wcs[0].wr_id), side.buffer(wcs[0].wr_id) + kSlot);
    const auto* rest = static_cast<const uint8_t*>(overflow->addr());
    got.insert(got.end(), rest, rest + (kLong - kSlot));
    CHILD_CHECK(got == long_message());
    CHILD_CHECK(wcs[1].status == WcStatus::kSuccess && wcs[1].byte_len == 5);
    return 0;
  });
  Side side;
  QpConfig config = small_config();
  config.max_inline = 256;
  REQUIRE(side.open(config));
  PeerInfo peer;
  REQUIRE(rendezvous(side, child.channel(), Role::kClient, &peer));
  const auto m = long_message();
  REQUIRE(side.qp->post_send_inline(m.data(), kLong, 1, true) == 0);
  REQUIRE(side.qp->post_send_inline(m.data(), 5, 2, true) == 0);
  const auto done = reap(*side.qp, true, 2);
  REQUIRE(done.size() == 2);
  CHECK(done[0].status == WcStatus::kSuccess);
  CHECK(done[1].status == WcStatus::kSuccess);
  CHECK(child.wait() == 0);
}

TEST_CASE("verbs: a bad rkey fails the write and puts both QPs in error", "[verbs]") {
  if (!have_device()) return;
  Child child([](Channel& channel) {
    return serve(channel, [](Side& side, Channel& ch) {
      side.qp->arm_recv_notify();
      CHILD_CHECK(ch.signal('r'));
      // The responder drops the bad WRITE and goes to error too: its receives flush (the
      // SEND behind the WRITE never lands), which wakes the armed fd.
      CHILD_CHECK(readable(side.qp->notify_fd(), kTimeoutMs));
      side.qp->consume_notify();
      std::vector<bool> seen(side.config.recv_depth, false);
      const auto flushed = reap(*side.qp, false, side.config.recv_depth);
      CHILD_CHECK(flushed.size() == side.config.recv_depth);
      for (const WorkCompletion& wc : flushed) {
        CHILD_CHECK(wc.status == WcStatus::kFlushError);
        CHILD_CHECK(wc.opcode == WcOpcode::kRecv);
        CHILD_CHECK(wc.byte_len == 0);
        CHILD_CHECK(wc.wr_id < seen.size() && !seen[wc.wr_id]);
        seen[wc.wr_id] = true;
      }
      CHILD_CHECK(side.qp->in_error());
      CHILD_CHECK(side.qp->posted_recvs() == 0);
      CHILD_CHECK(side.qp->counters().recvs == 0);
      for (size_t i = 0; i < 64; ++i) CHILD_CHECK(side.bytes()[i] == 0);
      return ch.expect('d') ? 0 : 1;
    });
  });
  Side side;
  REQUIRE(side.open(small_config()));
  PeerInfo peer;
  REQUIRE(rendezvous(side, child.channel(), Role::kClient, &peer));
  REQUIRE(child.channel().expect('r'));
  REQUIRE(side.post_recv(3) == 0);
  side.qp->arm_recv_notify();
  std::memset(side.bytes(), 0xee, 64);
  // Unsignaled: its failure must be reported all the same, with the caller's wr_id and
  // opcode, and the SEND behind it flushed.
  REQUIRE(side.qp->post_write(side.bytes(), 64, side.region->lkey(), peer.region.addr,
                              peer.region.rkey ^ 0x5a5a00, 9, false) == 0);
  REQUIRE(side.qp->post_send_inline("x", 1, 10, true) == 0);
  const auto wcs = reap(*side.qp, true, 2);
  REQUIRE(wcs.size() == 2);
  CHECK(wcs[0].wr_id == 9);
  CHECK(wcs[0].status == WcStatus::kRemoteAccessError);
  CHECK(wcs[0].opcode == WcOpcode::kRdmaWrite);
  CHECK(wcs[1].wr_id == 10);
  CHECK(wcs[1].status == WcStatus::kFlushError);
  CHECK(wcs[1].opcode == WcOpcode::kSend);
  CHECK(side.qp->in_error());
  CHECK(side.qp->post_send_inline("x", 1, 11, true) == EIO);
  CHECK(side.qp->post_write(side.bytes(), 1, side.region->lkey(), peer.region.addr,
                            peer.region.rkey, 12, true) == EIO);
  CHECK(side.qp->post_recv(side.buffer(0), kSlot, side.recv_buffers->lkey(), 0) != 0);
  // The error flushes the posted receive, which wakes an armed notify fd.
  CHECK(readable(side.qp->notify_fd(), kTimeoutMs));
  side.qp->consume_notify();
  const auto flushed = reap(*side.qp, false, 1);
  REQUIRE(flushed.size() == 1);
  CHECK(flushed[0].wr_id == 3);
  CHECK(flushed[0].status == WcStatus::kFlushError);
  CHECK(flushed[0].opcode == WcOpcode::kRecv);
  CHECK(side.qp->posted_recvs() == 0);
  // Nothing more comes: every completion was reported exactly once.
  WorkCompletion more[4];
  CHECK(side.qp->poll_send(more) == 0);
  CHECK(side.qp->poll_recv(more) == 0);
  child.channel().signal('d');
  CHECK(child.wait() == 0);
}

TEST_CASE("verbs: a signaled WRITE's completion wakes the armed notify fd", "[verbs]") {
  if (!have_device()) return;
  Child child([](Channel& channel) {
    return serve(channel, [](Side&, Channel& ch) { return ch.expect('d') ? 0 : 1; });
  });
  Side side;
  REQUIRE(side.open(small_config()));
  PeerInfo peer;
  REQUIRE(rendezvous(side, child.channel(), Role::kClient, &peer));
  const int fd = side.qp->notify_fd();
  side.qp->arm_recv_notify();
  CHECK_FALSE(readable(fd, 0));
  // Unsignaled work completes silently: no wakeup (given time to happen if it would).
  REQUIRE(side.qp->post_write(side.bytes(), 64, side.region->lkey(), peer.region.addr,
                              peer.region.rkey, 1, false) == 0);
  CHECK_FALSE(readable(fd, 300));
  // A signaled one is what the engine sleeps on to reuse a staged send buffer.
  REQUIRE(side.qp->post_write(side.bytes(), 4096, side.region->lkey(), peer.region.addr,
                              peer.region.rkey, 2, true) == 0);
  CHECK(readable(fd, kTimeoutMs));
  side.qp->consume_notify();
  CHECK_FALSE(readable(fd, 0));
  WorkCompletion wc[4];
  REQUIRE(side.qp->poll_send(wc) == 1);
  CHECK(wc[0].wr_id == 2);
  CHECK(wc[0].status == WcStatus::kSuccess);
  CHECK(wc[0].opcode == WcOpcode::kRdmaWrite);
  // Not re-armed: the next signaled completion does not wake it.
  REQUIRE(side.qp->post_send_inline("x", 1, 3, true) == 0);
  CHECK(reap(*side.qp, true, 1).size() == 1);
  CHECK_FALSE(readable(fd, 0));
  // Re-armed with a completion already waiting in the CQ: the engine polls after arming,
  // so only new completions need to wake it; this one does.
  side.qp->arm_recv_notify();
  REQUIRE(side.qp->post_send_inline("y", 1, 4, true) == 0);
  CHECK(readable(fd, kTimeoutMs));
  side.qp->consume_notify();
  CHECK(reap(*side.qp, true, 1).size() == 1);
  CHECK_FALSE(side.qp->in_error());
  child.channel().signal('d');
  CHECK(child.wait() == 0);
}

TEST_CASE("verbs: posts from two threads while a third reaps", "[verbs]") {
  if (!have_device()) return;
  constexpr int kPerThread = 200;
  Child child([](Channel& channel) {
    return serve(channel, [](Side& side, Channel&) {
      // Each thread's messages arrive in its own posting order.
      const auto got = receive(side, 2 * kPerThread);
      CHILD_CHECK(got.size() == 2 * kPerThread);
      int next[2] = {0, 0};
      for (const auto& m : got) {
        CHILD_CHECK(m.size() == 2);
        CHILD_CHECK(m[0] < 2 && m[1] == static_cast<uint8_t>(next[m[0]]++));
      }
      CHILD_CHECK(next[0] == kPerThread && next[1] == kPerThread);
      return 0;
    });
  });
  Side side;
  REQUIRE(side.open(small_config()));
  PeerInfo peer;
  REQUIRE(rendezvous(side, child.channel(), Role::kClient, &peer));
  std::mutex send_lock;  // the engine's send lock
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::atomic<size_t> reaped_count{0};
  std::vector<WorkCompletion> reaped;  // the reaper's until it is joined
  std::thread reaper([&] {
    WorkCompletion wc[16];
    while (!stop) {
      const int n = side.qp->poll_send(wc);
      reaped.insert(reaped.end(), wc, wc + n);
      reaped_count += static_cast<size_t>(n);
    }
  });
  auto sender = [&](uint8_t who) {
    const int64_t deadline = now_ms() + kTimeoutMs;
    for (int i = 0; i < kPerThread && now_ms() < deadline;) {
      const uint8_t m[2] = {who, static_cast<uint8_t>(i)};
      int rc;
      {
        const std::lock_guard lock(send_lock);
        rc = side.qp->post_send_inline(m, 2, uint64_t{who} << 32 | i, i % 3 == 0);
      }
      if (rc == EAGAIN) continue;  // the reaper frees the slots
      if (rc != 0) {
        ++failures;
        return;
      }
      ++i;
    }
  };
  std::thread a(sender, 0);
  std::thread b(sender, 1);
  a.join();
  b.join();
  constexpr size_t kSignaled = 2 * ((kPerThread + 2) / 3);
  const int64_t deadline = now_ms() + kTimeoutMs;
  while (now_ms() < deadline && reaped_count < kSignaled) sleep_ms(1);
  sleep_ms(50);  // time for a (wrong) extra completion to show up
  stop = true;
  reaper.join();
  CHECK(failures == 0);
  CHECK(side.qp->counters().sends == 2 * kPerThread);
  // Exactly the signaled ones, each once, all successful.
  REQUIRE(reaped.size() == kSignaled);
  std::vector<uint64_t> ids;
  for (const WorkCompletion& wc : reaped) {
    CHECK(wc.status == WcStatus::kSuccess);
    CHECK(wc.opcode == WcOpcode::kSend);
    ids.push_back(wc.wr_id);
  }
  std::sort(ids.begin(), ids.end());
  CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
  for (uint64_t id : ids) CHECK((id & 0xffffffff) % 3 == 0);
  CHECK(child.wait() == 0);
  CHECK_FALSE(side.qp->in_error());
}

TEST_CASE("verbs: the async event fd", "[verbs]") {
  if (!have_device()) return;
  std::string error;
  auto device = open_verbs_device("", 0, -1, &error);
  REQUIRE(device);
  const int fd = device->async_fd();
  REQUIRE(fd >= 0);
  CHECK((::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
  CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
  // Nothing pending: the handler returns at once instead of blocking the progress thread.
  const int64_t start = now_ms();
  device->handle_async_events();
  CHECK(now_ms() - start < 1000);
  CHECK_FALSE(readable(fd, 0));
}

TEST_CASE("verbs: an explicit GID index is used exactly", "[verbs]") {
  if (!have_device()) return;
  std::string error;
  auto chosen = open_verbs_device("", 0, -1, &error);
  REQUIRE(chosen);
  // Asked for by number, each valid index gives its own GID; the one the automatic choice
  // took is among them.
  int matches = 0;
  for (int i = 0; i < 16; ++i) {
    auto d = open_verbs_device(chosen->name(), 0, i, &error);
    if (!d) continue;
    CHECK(d->gid() != Gid{});
    if (d->gid() == chosen->gid()) ++matches;
  }
  CHECK(matches >= 1);
  // Out of range or invalid: an error naming the index, never a silent fallback.
  CHECK_FALSE(open_verbs_device(chosen->name(), 0, 100000, &error));
  CHECK(error.find("100000") != std::string::npos);
  CHECK_FALSE(open_verbs_device(chosen->name(), 0, -2, &error));
  CHECK_FALSE(open_verbs_device(chosen->name(), 0, 250, &error));
  CHECK(error.find("250") != std::string::npos);
  CHECK_FALSE(open_verbs_device("no-such-device", 0, -1, &error));
  CHECK(error.find("no-such-device") != std::string::npos);
}

TEST_CASE("verbs: the notify fd turns readable after arm and a send", "[verbs]") {
  if (!have_device()) return;
  Child child([](Channel& channel) {
    return serve(channel, [](Side& side, Channel& ch) {
      const int fd = side.qp->notify_fd();
      side.qp->arm_recv_notify();
      CHILD_CHECK(!readable(fd, 0));
      CHILD_CHECK(ch.signal('a'));
      CHILD_CHECK(readable(fd, kTimeoutMs));
      side.qp->consume_notify();
      CHILD_CHECK(!readable(fd, 0));
      // Consuming twice must not block (the fd is non-blocking).
      side.qp->consume_notify();
      WorkCompletion wc[4];
      CHILD_CHECK(side.qp->poll_recv(wc) == 1);
      CHILD_CHECK(wc[0].byte_len == 3 && std::memcmp(side.buffer(wc[0].wr_id), "hey", 3) == 0);
      // Not armed: a second message completes without waking the fd.
      CHILD_CHECK(ch.signal('b'));
      CHILD_CHECK(receive(side, 1).size() == 1);
      CHILD_CHECK(!readable(fd, 0));
      return 0;
    });
  });
  Side side;
  REQUIRE(side.open(small_config()));
  PeerInfo peer;
  REQUIRE(rendezvous(side, child.channel(), Role::kClient, &peer));
  REQUIRE(child.channel().expect('a'));
  REQUIRE(side.qp->post_send_inline("hey", 3, 1, true) == 0);
  REQUIRE(child.channel().expect('b'));
  REQUIRE(side.qp->post_send_inline("you", 3, 2, true) == 0);
  CHECK(reap(*side.qp, true, 2).size() == 2);
  CHECK(child.wait() == 0);
}

// Takes the device's netdev down and up again, so only where that is ours to do: as root
// in the throw-away guest of scripts/rxe-vm.
TEST_CASE("verbs: port events are read and acknowledged", "[verbs]") {
  if (!have_device()) return;
  if (std::getenv("RXE_VM_SCRATCH") == nullptr || ::geteuid() != 0) {
    std::printf("port event test skipped: not in the rxe-vm guest\n");
    return;
  }
  std::string error;
  auto device = open_verbs_device("", 0, -1, &error);
  REQUIRE(device);
  char netdev[64] = {};
  {
    const std::string path =
        "/sys/class/infiniband/" + device->name() + "/ports/1/gid_attrs/ndevs/0";
    FILE* f = std::fopen(path.c_str(), "r");
    REQUIRE(f != nullptr);
    const bool read = std::fscanf(f, "%63s", netdev) == 1;
    std::fclose(f);
    REQUIRE(read);
  }
  const int fd = device->async_fd();
  const std::string ip = std::string("ip link set dev ") + netdev;
  for (const char* state : {" down", " up"}) {
    INFO("link" << state);
    REQUIRE(std::system((ip + state).c_str()) == 0);
    CHECK(readable(fd, kTimeoutMs));
    device->handle_async_events();
    // Drained to EAGAIN (and acked, or closing the device below would hang).
    CHECK_FALSE(readable(fd, 0));
  }
  // The port is active again for the cases that follow.
  std::unique_ptr<Device> again;
  const int64_t deadline = now_ms() + kTimeoutMs;
  while (!again && now_ms() < deadline) {
    again = open_verbs_device(device->name(), 0, -1, &error);
    if (!again) sleep_ms(50);
  }
  CHECK(again);
}
