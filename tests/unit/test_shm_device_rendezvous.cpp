// Who may connect to an shm QP, and at what cost to this process: malformed or mismatched
// rendezvous attempts, peer credentials against the allowed uids, and rendezvous floods
// from the same uid and from one not allowed. A socketpair stands in for the CLC exchange.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "rdma/device.h"
#include "rdma/shm/ring.h"
#include "rdma/shm/state.h"
#include "rdma/shm/wire.h"
#include "tests/unit/shm_side.h"

TEST_CASE("shm: malformed rendezvous attempts are refused", "[shm]") {
  Side server;
  REQUIRE(server.open(small_config()));
  const QpEndpoint ep = server.qp->local_endpoint();
  uint64_t instance = 0;
  REQUIRE(shm::instance_from_gid(ep.gid, &instance));
  sockaddr_un addr;
  const socklen_t len = shm::rendezvous_address(instance, &addr);
  auto raw_connect = [&] {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0);
    return shm::UniqueFd(fd);
  };
  // A hello that names the server QP correctly but carries the wrong kinds of fds.
  auto crafted_hello = [&](int ring_fd, int event_fd) {
    shm::EndpointMsg hello{};
    hello.header = {shm::kWireMagic, shm::kWireVersion, uint16_t(shm::MsgType::kHello)};
    hello.from_qp_num = 0x1234;
    hello.from_psn = 0x5678;
    hello.to_qp_num = ep.qp_num;
    hello.to_psn = ep.psn;
    hello.ring_depth = 16;
    hello.ring_payload = 64;
    hello.min_rnr_timer = 5;
    shm::UniqueFd sock = raw_connect();
    const int fds[2] = {ring_fd, event_fd};
    std::string error;
    REQUIRE(shm::send_message(sock.get(), &hello, sizeof hello, fds, shm::deadline_after_ms(1000),
                              &error));
    return sock;
  };
  QpEndpoint client_ep{};
  client_ep.gid = ep.gid;
  client_ep.qp_num = 0x1234;
  client_ep.psn = 0x5678;

  // Garbage first: dropped without disturbing what follows.
  shm::UniqueFd junk = raw_connect();
  REQUIRE(::send(junk.get(), "not a hello", 11, 0) == 11);

  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  shm::UniqueFd pipe_r(pipe_fds[0]), pipe_w(pipe_fds[1]);
  SECTION("a pipe instead of a memfd") {
    shm::UniqueFd sock = crafted_hello(pipe_r.get(), pipe_w.get());
    CHECK_FALSE(server.qp->connect(client_ep, Role::kServer, 1000, &server.error));
    CHECK(server.error.find("not a memfd") != std::string::npos);
  }
  SECTION("an unsealed memfd") {
    shm::UniqueFd memfd(::memfd_create("unsealed", MFD_CLOEXEC));
    REQUIRE(::ftruncate(memfd.get(), 1 << 20) == 0);
    shm::UniqueFd sock = crafted_hello(memfd.get(), pipe_w.get());
    CHECK_FALSE(server.qp->connect(client_ep, Role::kServer, 1000, &server.error));
    CHECK(server.error.find("not sealed") != std::string::npos);
  }
  SECTION("a valid ring but a pipe instead of an eventfd") {
    shm::SharedMemory ring;
    std::string error;
    REQUIRE(ring.create("ring", shm::RingGeometry{16, 64}.bytes(), &error));
    shm::UniqueFd sock = crafted_hello(ring.fd(), pipe_w.get());
    CHECK_FALSE(server.qp->connect(client_ep, Role::kServer, 1000, &server.error));
    CHECK(server.error.find("not an eventfd") != std::string::npos);
  }
  SECTION("a legitimate client still gets through") {
    Side client;
    REQUIRE(client.open(small_config()));
    REQUIRE(client.qp->connect(ep, Role::kClient, 1000, &client.error));
    REQUIRE(server.qp->connect(client.qp->local_endpoint(), Role::kServer, 1000, &server.error));
    REQUIRE(client.post_all_recvs());
    CHECK(server.qp->post_send_inline("ping", 4, 1, true) == 0);
    auto got = receive(client, 1);
    REQUIRE(got.size() == 1);
    CHECK(std::string(got[0].begin(), got[0].end()) == "ping");
  }
}

namespace {

size_t open_fds() {
  size_t n = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (::readdir(dir) != nullptr) ++n;
    ::closedir(dir);
  }
  return n;
}

// Connects `count` times to the rendezvous socket of `ep` and sends on each a hello for
// a QP nobody has, carrying two fds, as a flooding process would. Keeps the sockets.
std::vector<shm::UniqueFd> flood_rendezvous(const QpEndpoint& ep, int count) {
  uint64_t instance = 0;
  std::vector<shm::UniqueFd> socks;
  if (!shm::instance_from_gid(ep.gid, &instance)) return socks;
  sockaddr_un addr;
  const socklen_t len = shm::rendezvous_address(instance, &addr);
  shm::UniqueFd memfd(::memfd_create("flood", MFD_CLOEXEC));
  for (int i = 0; i < count; ++i) {
    shm::UniqueFd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!sock.valid() || ::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      break;
    }
    shm::EndpointMsg hello{};
    hello.header = {shm::kWireMagic, shm::kWireVersion, uint16_t(shm::MsgType::kHello)};
    hello.from_qp_num = 0x100 + i;
    hello.to_qp_num = 0x200 + i;
    const int fds[2] = {memfd.get(), memfd.get()};
    std::string error;
    if (!shm::send_message(sock.get(), &hello, sizeof hello, fds, shm::deadline_after_ms(1000),
                           &error)) {
      break;
    }
    socks.push_back(std::move(sock));
  }
  return socks;
}

// A genuine client of this process connects to `server` after the flood; true if the
// pair connects and a message crosses.
bool genuine_pair_connects(Side& server) {
  Side client;
  if (!client.open(small_config())) return false;
  const QpEndpoint ep = server.qp->local_endpoint();
  if (!client.qp->connect(ep, Role::kClient, 2000, &client.error)) return false;
  const bool ok =
      server.qp->connect(client.qp->local_endpoint(), Role::kServer, 2000, &server.error);
  INFO(server.error);
  if (!ok || !client.post_all_recvs()) return false;
  if (server.qp->post_send_inline("ping", 4, 1, true) != 0) return false;
  return receive(client, 1).size() == 1;
}

}  // namespace

TEST_CASE("shm: a same-uid rendezvous flood holds a bounded number of fds", "[shm]") {
  Side server;
  REQUIRE(server.open(small_config()));
  const size_t fds_before = open_fds();
  constexpr int kFlood = 200;
  std::vector<shm::UniqueFd> flood = flood_rendezvous(server.qp->local_endpoint(), kFlood);
  REQUIRE(flood.size() == kFlood);
  const size_t ours = open_fds() - fds_before;  // the flood's own sockets and memfd
  REQUIRE(genuine_pair_connects(server));
  // The genuine pair's QPs hold a few fds; the server may hold at most its per-uid cap
  // of the flood's connections, each with a socket and the two fds of its hello.
  const size_t held = open_fds() - fds_before - ours;
  CAPTURE(held);
  CHECK(held <= 3 * shm::kMaxPendingPerUid + 16);
}

TEST_CASE("shm: a rendezvous with the wrong nonce or QP is rejected", "[shm][fork]") {
  Child child([](Channel& ch) {
    Side s;
    CHILD_CHECK(s.open(small_config()));
    // Round 1: a hello with a PSN other than the one in "CLC Accept".
    PeerInfo peer;
    CHILD_CHECK(ch.get(&peer));
    peer.endpoint.psn ^= 1;
    CHILD_CHECK(s.qp->connect(peer.endpoint, Role::kClient, 300, &s.error));
    CHILD_CHECK(ch.put(info_of(s)));
    CHILD_CHECK(s.qp->post_send_inline("x", 1, 1, false) == EPIPE);  // no reply comes
    // Round 2: a correct hello, but the server expects another client QP.
    CHILD_CHECK(s.new_qp());
    CHILD_CHECK(rendezvous(s, ch, Role::kClient, &peer));
    CHILD_CHECK(s.qp->post_send_inline("x", 1, 1, false) == EPIPE);  // the server hung up
    return 0;
  });
  Channel& ch = child.channel();
  Side s;
  REQUIRE(s.open(small_config()));
  PeerInfo peer;
  REQUIRE(ch.put(info_of(s)));
  REQUIRE(ch.get(&peer));
  CHECK_FALSE(s.qp->connect(peer.endpoint, Role::kServer, 300, &s.error));
  CHECK(s.error.find("no rendezvous hello") != std::string::npos);

  REQUIRE(s.new_qp());
  REQUIRE(ch.put(info_of(s)));
  REQUIRE(ch.get(&peer));
  peer.endpoint.qp_num ^= 1;
  CHECK_FALSE(s.qp->connect(peer.endpoint, Role::kServer, 1000, &s.error));
  CHECK(s.error.find("does not match") != std::string::npos);
  CHECK(child.wait() == 0);
}

TEST_CASE("shm: peer credentials are checked against the allowed uids", "[shm][fork]") {
  if (::geteuid() != 0) {
    WARN("not root: cannot run a peer under another uid (uid list covered by the unit test)");
    return;
  }
  constexpr uint32_t kOtherUid = 65534;
  Child child([](Channel& ch) {
    CHILD_CHECK(::setgid(kOtherUid) == 0 && ::setuid(kOtherUid) == 0);
    // No list: the server's root uid is allowed without one.
    Side s;
    CHILD_CHECK(s.open(small_config()));
    PeerInfo peer;
    // Round 1: the server does not allow us; our hello still goes out.
    CHILD_CHECK(rendezvous(s, ch, Role::kClient, &peer));
    // Rounds 2 (our uid listed) and 3 (any uid): allowed.
    for (int round = 2; round <= 3; ++round) {
      CHILD_CHECK(s.new_qp());
      CHILD_CHECK(rendezvous(s, ch, Role::kClient, &peer));
      CHILD_CHECK(s.qp->post_send_inline("hi", 2, 1, false) == 0);
      // Keep this QP until the server has connected and received.
      CHILD_CHECK(ch.get(&peer));
    }
    return 0;
  });
  Channel& ch = child.channel();
  {
    Side s;
    REQUIRE(s.open(small_config()));
    PeerInfo peer;
    // Refused at accept, unread: the server's wait ends on its deadline, naming the uid.
    CHECK_FALSE(rendezvous(s, ch, Role::kServer, &peer, 500));
    CHECK(s.error.find("peer credentials rejected (uid 65534)") != std::string::npos);
  }
  for (bool any_uid : {false, true}) {
    CAPTURE(any_uid);
    Side s;
    if (any_uid) {
      REQUIRE(s.open(small_config(), {}, 64 * 1024, true));
    } else {
      REQUIRE(s.open(small_config(), {kOtherUid}));
    }
    REQUIRE(s.post_all_recvs());
    PeerInfo peer;
    const bool connected = rendezvous(s, ch, Role::kServer, &peer);
    INFO(s.error);
    REQUIRE(connected);
    auto got = receive(s, 1);
    REQUIRE(got.size() == 1);
    CHECK(std::string(got[0].begin(), got[0].end()) == "hi");
    REQUIRE(ch.put(info_of(s)));
  }
  CHECK(child.wait() == 0);
}

TEST_CASE("shm: a rendezvous flood from a uid not allowed holds nothing", "[shm][fork]") {
  if (::geteuid() != 0) {
    WARN("not root: cannot run a flood under another uid");
    return;
  }
  constexpr uint32_t kOtherUid = 65534;
  constexpr int kFlood = 200;
  Side server;
  REQUIRE(server.open(small_config()));
  const QpEndpoint ep = server.qp->local_endpoint();
  const size_t fds_before = open_fds();
  Child child([ep](Channel& ch) {
    CHILD_CHECK(::setgid(kOtherUid) == 0 && ::setuid(kOtherUid) == 0);
    std::vector<shm::UniqueFd> flood = flood_rendezvous(ep, kFlood);
    CHILD_CHECK(flood.size() == kFlood);
    CHILD_CHECK(ch.put('f'));
    CHILD_CHECK(ch.expect('d'));  // hold the flood until the server is done
    return 0;
  });
  REQUIRE(child.channel().expect('f'));
  REQUIRE(genuine_pair_connects(server));
  // Nothing of the flood is held: only the genuine pair's QPs' fds are new.
  const size_t held = open_fds() - fds_before;
  CAPTURE(held);
  CHECK(held <= 16);
  REQUIRE(child.channel().put('d'));
  CHECK(child.wait() == 0);
}
