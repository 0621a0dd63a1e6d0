// The verbs device between two processes (fork) over real RC queue pairs. It needs an
// RDMA device with an active port (Soft-RoCE in the test VM: scripts/rxe-vm); where there
// is none, as on hosts without RDMA, every case returns early with a note.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
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

std::vector<WorkCompletion> reap(QueuePair& qp, bool send, size_t count,
                                 int timeout_ms = kTimeoutMs) {
  std::vector<WorkCompletion> got;
  const int64_t deadline = now_ms() + timeout_ms;
  WorkCompletion wc[16];
  while (got.size() < count && now_ms() < deadline) {
    const int n = send ? qp.poll_send(wc) : qp.poll_recv(wc);
    got.insert(got.end(), wc, wc + n);
  }
  return got;
}

// Receives `count` messages, reposting each buffer; returns their bytes in order.
std::vector<std::vector<uint8_t>> receive(Side& side, size_t count) {
  std::vector<std::vector<uint8_t>> messages;
  const int64_t deadline = now_ms() + kTimeoutMs;
  WorkCompletion wc[16];
  while (messages.size() < count && now_ms() < deadline) {
    const int n = side.qp->poll_recv(wc);
    for (int i = 0; i < n; ++i) {
      if (wc[i].status != WcStatus::kSuccess || wc[i].opcode != WcOpcode::kRecv) return messages;
      const uint8_t* data = side.buffer(wc[i].wr_id);
      messages.emplace_back(data, data + wc[i].byte_len);
      if (side.post_recv(wc[i].wr_id) != 0) return messages;
    }
  }
  return messages;
}

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
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
  CHECK(side.device->caps().max_inline >= 64);
  CHECK(side.device->gid() != Gid{});
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
  CHECK(side.qp->post_send_inline(std::vector<char>(1000).data(), 1000, 1, true) != 0);
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

TEST_CASE("verbs: a bad rkey fails the write and puts the QP in error", "[verbs]") {
  if (!have_device()) return;
  Child child([](Channel& channel) {
    return serve(channel, [](Side&, Channel& ch) { return ch.expect('d') ? 0 : 1; });
  });
  Side side;
  REQUIRE(side.open(small_config()));
  PeerInfo peer;
  REQUIRE(rendezvous(side, child.channel(), Role::kClient, &peer));
  REQUIRE(side.post_recv(3) == 0);
  side.qp->arm_recv_notify();
  REQUIRE(side.qp->post_write(side.bytes(), 64, side.region->lkey(), peer.region.addr,
                              peer.region.rkey ^ 0x5a5a00, 9, true) == 0);
  const auto wcs = reap(*side.qp, true, 1);
  REQUIRE(wcs.size() == 1);
  CHECK(wcs[0].wr_id == 9);
  CHECK(wcs[0].status == WcStatus::kRemoteAccessError);
  CHECK(side.qp->in_error());
  CHECK(side.qp->post_send_inline("x", 1, 10, true) != 0);
  CHECK(side.qp->post_recv(side.buffer(0), kSlot, side.recv_buffers->lkey(), 0) != 0);
  // The error flushes the posted receive, which wakes an armed notify fd.
  CHECK(readable(side.qp->notify_fd(), kTimeoutMs));
  side.qp->consume_notify();
  const auto flushed = reap(*side.qp, false, 1);
  REQUIRE(flushed.size() == 1);
  CHECK(flushed[0].wr_id == 3);
  CHECK(flushed[0].status == WcStatus::kFlushError);
  CHECK(side.qp->posted_recvs() == 0);
  child.channel().signal('d');
  CHECK(child.wait() == 0);
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
