// The shm device in one process: the uid rule and GID layout, RNR timing, the device's
// parameters, the ring and the peer region table, and the memory arena and the budget for
// what peers map. Between two processes: test_shm_device_qp.cpp (RC semantics) and
// test_shm_device_rendezvous.cpp (who may connect, and at what cost).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config/sanitizers.h"
#include "rdma/device.h"
#include "rdma/shm/arena.h"
#include "rdma/shm/qp.h"
#include "rdma/shm/ring.h"
#include "rdma/shm/state.h"

using namespace smcpre::rdma;

TEST_CASE("shm: uid check and GID layout", "[shm]") {
  const uint32_t allowed[] = {1000, 1001};
  CHECK(shm::peer_uid_allowed(5, 5, {}));
  CHECK_FALSE(shm::peer_uid_allowed(6, 5, {}));
  CHECK(shm::peer_uid_allowed(0, 5, {}));
  CHECK(shm::peer_uid_allowed(1001, 5, allowed));
  CHECK_FALSE(shm::peer_uid_allowed(1002, 5, allowed));

  const Gid gid = shm::gid_for_instance(0x0123456789abcdefULL);
  CHECK(gid[0] == 0xfe);
  CHECK(gid[1] == 0x80);
  CHECK(gid[8] == 0x01);
  CHECK(gid[15] == 0xef);
  uint64_t id = 0;
  REQUIRE(shm::instance_from_gid(gid, &id));
  CHECK(id == 0x0123456789abcdefULL);
  Gid other = gid;
  other[0] = 0x20;
  CHECK_FALSE(shm::instance_from_gid(other, &id));
}

TEST_CASE("shm: RNR timer table", "[shm]") {
  CHECK(shm::rnr_timer_ns(1) == 10'000);
  CHECK(shm::rnr_timer_ns(5) == 60'000);
  CHECK(shm::rnr_timer_ns(7) == 120'000);
  CHECK(shm::rnr_timer_ns(14) == 1'280'000);
  CHECK(shm::rnr_timer_ns(31) == 491'520'000);
  CHECK(shm::rnr_timer_ns(0) == 655'360'000);
}

TEST_CASE("shm: RNR retries back off for a receiver that never posts again", "[shm]") {
  const int64_t timer = shm::rnr_timer_ns(5);
  for (uint32_t retries = 0; retries < 16; ++retries) {
    CHECK(shm::rnr_backoff_ns(timer, retries) == timer);  // a slow receiver: full speed
  }
  CHECK(shm::rnr_backoff_ns(timer, 16) == 2 * timer);
  CHECK(shm::rnr_backoff_ns(timer, 47) == 4 * timer);
  CHECK(shm::rnr_backoff_ns(timer, 1000) == 100'000'000);
  CHECK(shm::rnr_backoff_ns(timer, UINT32_MAX) == 100'000'000);
  CHECK(shm::rnr_backoff_ns(shm::rnr_timer_ns(0), 1000) == shm::rnr_timer_ns(0));
  // A peer that posts nothing for 2 s cost 33,000 retries (each a wakeup); now about 100.
  int64_t waited = 0;
  uint32_t retries = 0;
  while (waited < 2'000'000'000) waited += shm::rnr_backoff_ns(timer, retries++);
  CHECK(retries < 200);
}

TEST_CASE("shm: device, regions and QP parameters", "[shm]") {
  std::string error;
  auto a = open_shm_device({}, &error);
  auto b = open_shm_device({}, &error);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->name() == "shm");
  CHECK(a->caps().write_from_any_memory);
  CHECK(a->caps().max_inline == 64);
  CHECK(a->caps().kind == DeviceKind::kShm);
  CHECK(a->caps().reports_rnr);
  CHECK(a->gid() != b->gid());
  CHECK(a->gid()[0] == 0xfe);
  CHECK(a->mac() != Mac{});
  CHECK(to_string(WcStatus::kRnrRetryExceeded) == std::string("RNR retry counter exceeded"));

  auto pd = a->alloc_pd(&error);
  REQUIRE(pd);
  auto r1 = pd->register_memory(100000, &error);
  auto r2 = pd->register_memory(10, &error);
  REQUIRE(r1);
  REQUIRE(r2);
  CHECK(r1->length() == 100000);
  CHECK(reinterpret_cast<uintptr_t>(r1->addr()) % 4096 == 0);
  const auto* bytes = static_cast<const uint8_t*>(r1->addr());
  CHECK(std::all_of(bytes, bytes + r1->length(), [](uint8_t v) { return v == 0; }));
  CHECK(r1->rkey() != 0);
  CHECK(r1->lkey() != 0);
  CHECK(r1->rkey() != r2->rkey());
  CHECK(r1->rkey() != r1->lkey());
  CHECK(pd->register_memory(0, &error) == nullptr);

  QpConfig bad;
  bad.recv_depth = 0;
  CHECK(pd->create_qp(bad, &error) == nullptr);
  bad = QpConfig{};
  bad.max_inline = 5000;
  CHECK(pd->create_qp(bad, &error) == nullptr);

  QpConfig config;
  config.recv_depth = 4;
  auto qp = pd->create_qp(config, &error);
  REQUIRE(qp);
  const QpEndpoint ep = qp->local_endpoint();
  CHECK(ep.qp_num != 0);
  CHECK(ep.qp_num <= 0xffffff);
  CHECK(ep.psn <= 0xffffff);
  CHECK(ep.gid == a->gid());
  uint8_t buf[4][64];
  for (int i = 0; i < 4; ++i) CHECK(qp->post_recv(buf[i], 64, 0, i) == 0);
  CHECK(qp->post_recv(buf[0], 64, 0, 9) == ENOMEM);
  CHECK(qp->posted_recvs() == 4);
  CHECK(qp->post_send_inline("x", 1, 0, false) == ENOTCONN);
  CHECK(qp->post_send_inline(buf, 65, 0, false) == EINVAL);
  CHECK(qp->next_deadline_ns() == -1);
  CHECK_FALSE(qp->in_error());
}

TEST_CASE("shm ring: sender and receiver over one ring", "[shm]") {
  const shm::RingGeometry geometry{4, 64};
  std::vector<uint8_t> memory_storage(geometry.bytes() + shm::kCacheLine);
  void* memory = memory_storage.data() +
                 (shm::kCacheLine - reinterpret_cast<uintptr_t>(memory_storage.data()) % 64) % 64;
  shm::RingReceiver rx;
  shm::RingSender tx;
  rx.init(memory, geometry);
  tx.init(memory, geometry);
  bool notify = true;
  const char text[] = "hello";
  CHECK(tx.send(text, 5, &notify) == shm::RingSender::Result::kNoReceive);

  uint8_t buffers[5][64];
  for (int i = 0; i < 4; ++i) REQUIRE(rx.post(buffers[i], 64, 100 + i) == 0);
  CHECK(rx.post(buffers[4], 64, 104) == ENOMEM);
  CHECK(tx.send(text, 5, &notify) == shm::RingSender::Result::kDelivered);
  CHECK_FALSE(notify);
  CHECK(tx.send("abc", 3, &notify) == shm::RingSender::Result::kDelivered);

  WorkCompletion wc[8];
  const char* violation = nullptr;
  REQUIRE(rx.poll(wc, &violation) == 2);
  CHECK(violation == nullptr);
  CHECK(wc[0].wr_id == 100);
  CHECK(wc[0].byte_len == 5);
  CHECK(std::memcmp(buffers[0], "hello", 5) == 0);
  CHECK(wc[1].wr_id == 101);
  CHECK(std::memcmp(buffers[1], "abc", 3) == 0);
  CHECK(rx.outstanding() == 2);

  // Armed: the next send asks for a notification, once.
  CHECK_FALSE(rx.arm());
  CHECK(tx.send("x", 1, &notify) == shm::RingSender::Result::kDelivered);
  CHECK(notify);
  CHECK(tx.send("y", 1, &notify) == shm::RingSender::Result::kDelivered);
  CHECK_FALSE(notify);
  CHECK(rx.arm());  // messages are waiting
  CHECK(tx.send("z", 1, &notify) == shm::RingSender::Result::kNoReceive);
  REQUIRE(rx.poll(wc, &violation) == 2);
  CHECK(rx.flush(wc) == 0);

  // Wrap around the ring several times.
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 4; ++i) REQUIRE(rx.post(buffers[i], 64, i) == 0);
    for (int i = 0; i < 4; ++i) {
      const uint8_t v = static_cast<uint8_t>(round * 4 + i);
      REQUIRE(tx.send(&v, 1, &notify) == shm::RingSender::Result::kDelivered);
    }
    REQUIRE(rx.poll(wc, &violation) == 4);
    for (int i = 0; i < 4; ++i) CHECK(buffers[wc[i].wr_id][0] == round * 4 + i);
  }
  REQUIRE(rx.post(buffers[0], 64, 7) == 0);
  REQUIRE(rx.flush(wc) == 1);
  CHECK(wc[0].status == WcStatus::kFlushError);
  CHECK(wc[0].wr_id == 7);
}

TEST_CASE("shm ring: values from a hostile peer are validated", "[shm]") {
  const shm::RingGeometry geometry{4, 64};
  shm::SharedMemory memory;
  std::string error;
  REQUIRE(memory.create("test-ring", geometry.bytes(), &error));
  auto* header = static_cast<shm::RingHeader*>(memory.addr());
  auto* slot0 = static_cast<uint8_t*>(memory.addr()) + sizeof(shm::RingHeader);
  uint8_t buffers[4][64];
  WorkCompletion wc[8];
  const char* violation = nullptr;

  SECTION("only posted slots with the expected sequence number count") {
    shm::RingReceiver rx;
    rx.init(memory.addr(), geometry);
    auto* slot1 = slot0 + geometry.slot_stride();
    reinterpret_cast<shm::SlotHeader*>(slot0)->seq = 1;
    reinterpret_cast<shm::SlotHeader*>(slot1)->seq = 2;
    header->filled = 1000;
    CHECK(rx.poll(wc, &violation) == 0);  // nothing posted: nothing read
    REQUIRE(rx.post(buffers[0], 64, 1) == 0);
    CHECK(rx.poll(wc, &violation) == 1);  // one posted: one consumed, not two
    REQUIRE(rx.post(buffers[1], 64, 2) == 0);
    reinterpret_cast<shm::SlotHeader*>(slot1)->seq = 7;
    CHECK(rx.poll(wc, &violation) == 0);  // a wrong sequence number is not a message
    // A hostile `filled` with no message behind it: no wakeup. (It was one on every arm,
    // and the progress thread arms each time before it sleeps: a spin.)
    CHECK_FALSE(rx.arm());
    CHECK_FALSE(rx.arm());
    reinterpret_cast<shm::SlotHeader*>(slot1)->seq = 2;  // the message arrives after all
    CHECK(rx.arm());
    CHECK(rx.poll(wc, &violation) == 1);
    CHECK_FALSE(rx.arm());  // nothing posted any more: nothing can be waiting
    CHECK(violation == nullptr);
  }
  SECTION("message longer than the slot") {
    shm::RingReceiver rx;
    rx.init(memory.addr(), geometry);
    REQUIRE(rx.post(buffers[0], 64, 1) == 0);
    reinterpret_cast<shm::SlotHeader*>(slot0)->length = 1u << 30;
    reinterpret_cast<shm::SlotHeader*>(slot0)->seq = 1;
    REQUIRE(rx.poll(wc, &violation) == 1);
    CHECK(wc[0].status == WcStatus::kLocalLengthError);
    CHECK(violation != nullptr);
  }
  SECTION("message longer than the posted buffer") {
    shm::RingReceiver rx;
    rx.init(memory.addr(), geometry);
    REQUIRE(rx.post(buffers[0], 8, 1) == 0);
    reinterpret_cast<shm::SlotHeader*>(slot0)->length = 9;
    reinterpret_cast<shm::SlotHeader*>(slot0)->seq = 1;
    REQUIRE(rx.poll(wc, &violation) == 1);
    CHECK(wc[0].status == WcStatus::kLocalLengthError);
  }
  SECTION("receiver claims more buffers than its ring holds") {
    shm::RingSender tx;
    tx.init(memory.addr(), geometry);
    header->posted = 5;
    bool notify = false;
    CHECK(tx.send("a", 1, &notify) == shm::RingSender::Result::kViolation);
  }
}

TEST_CASE("shm: peer region table grows and finds every key", "[shm]") {
  shm::PeerRegionTable table;
  uint8_t base[1];
  for (uint32_t key = 1; key <= 1000; ++key) table.insert(key * 7919, base, key, key);
  CHECK(table.size() == 1000);
  for (uint32_t key = 1; key <= 1000; ++key) {
    const auto* e = table.find(key * 7919);
    REQUIRE(e != nullptr);
    CHECK(e->addr == key);
  }
  CHECK(table.find(3) == nullptr);
  CHECK(table.find(0) == nullptr);
}

TEST_CASE("verbs: probing rdma-core reports why there is no device", "[verbs]") {
  std::string error;
  CHECK(open_verbs_device("", 0, -1, &error) == nullptr);
  CHECK((error == "no RDMA device found" || error == "verbs device not implemented yet"));
  CHECK(open_verbs_device("no-such-ibdev", 0, -1, &error) == nullptr);
  CHECK((error == "no RDMA device found" || error == "RDMA device no-such-ibdev not found"));
}

namespace {

// The memfds of shm memory regions this process holds (/proc/self/fd).
int region_memfds() {
  int count = 0;
  for (int fd = 0; fd < 65536; ++fd) {
    char link[64], target[256];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    const ssize_t n = ::readlink(link, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = 0;
    if (std::strstr(target, "memfd:smcpre-mr") != nullptr) ++count;
  }
  return count;
}

}  // namespace

TEST_CASE("shm arena: a PD's regions are slices of a few memfds", "[shm]") {
  std::string error;
  auto device = open_shm_device({}, &error);
  REQUIRE(device);
  auto pd = device->alloc_pd(&error);
  REQUIRE(pd);
  const int before = region_memfds();
  constexpr size_t kRmb = 512 * 1024;
  std::vector<std::unique_ptr<MemoryRegion>> regions;
  for (int i = 0; i < 100; ++i) {
    regions.push_back(pd->register_memory(kRmb, &error));
    REQUIRE(regions.back());
  }
  // 50 MiB in chunks of 4, 8, 16, 32 MiB: 4 descriptors, not 100.
  const int memfds = region_memfds() - before;
  CHECK(memfds == 4);
  // Disjoint, page-aligned, zeroed, each its own key.
  std::vector<std::pair<uintptr_t, size_t>> spans;
  for (auto& r : regions) {
    CHECK(reinterpret_cast<uintptr_t>(r->addr()) % 4096 == 0);
    CHECK(r->length() == kRmb);
    const auto* b = static_cast<const uint8_t*>(r->addr());
    CHECK((b[0] == 0 && b[kRmb - 1] == 0));
    spans.emplace_back(reinterpret_cast<uintptr_t>(r->addr()), r->length());
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    CHECK(spans[i - 1].first + spans[i - 1].second <= spans[i].first);
  }
  // A region given back is reused for the next of its size, zeroed again, and the
  // others keep their bytes.
  std::memset(regions[5]->addr(), 0x77, kRmb);
  std::memset(regions[6]->addr(), 0x66, kRmb);
  void* const reused = regions[5]->addr();
  regions[5].reset();
  auto again = pd->register_memory(kRmb, &error);
  REQUIRE(again);
  CHECK(again->addr() == reused);
  const auto* b = static_cast<const uint8_t*>(again->addr());
  CHECK(std::all_of(b, b + kRmb, [](uint8_t v) { return v == 0; }));
  const auto* other = static_cast<const uint8_t*>(regions[6]->addr());
  CHECK(std::all_of(other, other + kRmb, [](uint8_t v) { return v == 0x66; }));
  CHECK(region_memfds() - before == memfds);
  // Everything goes with the PD and its regions.
  regions.clear();
  again.reset();
  pd.reset();
  CHECK(region_memfds() == before);
}

TEST_CASE("shm arena: a peer maps a slice at its offset, and only inside the memfd", "[shm]") {
  auto arena = shm::MemoryArena::create();
  std::string error;
  auto first = arena->allocate(3 * 4096, &error);
  auto second = arena->allocate(5000, &error);
  REQUIRE(first);
  REQUIRE(second);
  CHECK(second->length() == 2 * 4096);
  CHECK(first->fd() == second->fd());
  CHECK(second->offset() == 3 * 4096);
  CHECK(arena->chunk_count() == 1);
  static_cast<uint8_t*>(second->addr())[4100] = 0x42;

  // What a peer does with an announcement: map `length` at `offset` of the passed fd.
  shm::SharedMemory peer;
  REQUIRE(peer.map_peer(shm::UniqueFd(::fcntl(second->fd(), F_DUPFD_CLOEXEC, 0)), second->length(),
                        &error, second->offset()));
  CHECK(static_cast<uint8_t*>(peer.addr())[4100] == 0x42);
  static_cast<uint8_t*>(peer.addr())[0] = 0x24;
  CHECK(static_cast<uint8_t*>(second->addr())[0] == 0x24);
  CHECK(static_cast<uint8_t*>(first->addr())[3 * 4096 - 1] == 0);

  // Unaligned, or past the end of the memfd: refused.
  shm::SharedMemory bad;
  CHECK_FALSE(
      bad.map_peer(shm::UniqueFd(::fcntl(second->fd(), F_DUPFD_CLOEXEC, 0)), 4096, &error, 100));
  CHECK_FALSE(bad.map_peer(shm::UniqueFd(::fcntl(second->fd(), F_DUPFD_CLOEXEC, 0)), 4096, &error,
                           shm::MemoryArena::kFirstChunkBytes));
  CHECK(error.find("smaller than announced") != std::string::npos);

  // A region bigger than a chunk gets a chunk of its own.
  auto big = arena->allocate(shm::MemoryArena::kFirstChunkBytes * 3, &error);
  REQUIRE(big);
  CHECK(big->fd() != first->fd());
  CHECK(big->offset() == 0);
  CHECK(arena->chunk_count() == 2);
}

TEST_CASE("shm: peers map no more than this process's budget", "[shm]") {
  // The largest region a peer may announce, as often as it likes: before the budget,
  // about 2000 of them filled the address space and the application's malloc failed.
  if (SMCPRE_TSAN) {
    // ThreadSanitizer's shadow takes most of the address space: the budget is sized for
    // a normal process and cannot be mapped here at all.
    WARN("skipped under ThreadSanitizer");
    return;
  }
  shm::SharedMemory huge;
  std::string error;
  const int fd = ::memfd_create("test-huge", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(shm::kMaxRegionBytes)) == 0);
  REQUIRE(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0);
  const uint64_t held_before = shm::PeerMappingBudget::bytes();
  std::vector<shm::SharedMemory> maps;
  bool refused = false;
  for (int i = 0; i < 4096 && !refused; ++i) {
    shm::SharedMemory m;
    if (m.map_peer(shm::UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)), shm::kMaxRegionBytes, &error)) {
      maps.push_back(std::move(m));
    } else {
      refused = true;
    }
  }
  CHECK(refused);
  CHECK(error.find("budget for peer mappings") != std::string::npos);
  CHECK(maps.size() * shm::kMaxRegionBytes <= shm::kMaxPeerMappedBytes);
  CHECK(maps.size() * shm::kMaxRegionBytes > shm::kMaxPeerMappedBytes - 2 * shm::kMaxRegionBytes);
  // The application's own memory is still there.
  void* mine = ::mmap(nullptr, uint64_t{1} << 40, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  CHECK(mine != MAP_FAILED);
  if (mine != MAP_FAILED) ::munmap(mine, uint64_t{1} << 40);
  // Unmapped, the budget is back.
  maps.clear();
  CHECK(shm::PeerMappingBudget::bytes() == held_before);
  shm::SharedMemory again;
  CHECK(again.map_peer(shm::UniqueFd(fd), shm::kMaxRegionBytes, &error));
}
