// malpeer's attacks: the Confirm tampered with in the handshake, then, on a working
// connection, bad cursors, garbage messages, shm ring and region abuse, a peer that stops
// receiving; each followed by what the victim did (victim-abort, link-down, echo-ok).
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

#include "malpeer.h"

namespace malpeer {
namespace {

// Waits for the test to close our stdin (it measures the victim meanwhile); the link is
// kept up, the victim's messages answered.
void hold(MalPeer& peer, bool enabled) {
  say("attacked");
  if (!enabled) return;
  for (;;) {
    pollfd p{0, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      char c;
      if (::read(0, &c, 1) <= 0) return;
    }
    peer.pump(50);
  }
}

// Fills `n` bytes of a victim ring slot with noise.
void noise(uint8_t* p, size_t n) {
  random_bytes(p, n);
}

}  // namespace

std::function<void(clc::AcceptConfirm&)> confirm_tamper(const std::string& attack) {
  // The Confirm names memory we never registered.
  std::function<void(clc::AcceptConfirm&)> tamper;
  if (attack == "confirm-unknown-rkey") {
    tamper = [](clc::AcceptConfirm& c) { c.rmb_rkey ^= 0x5a5a5a5a; };
  } else if (attack == "confirm-outside-region") {
    tamper = [](clc::AcceptConfirm& c) { c.rmb_vaddr += 4096; };
  } else if (attack == "confirm-huge-rmb") {
    tamper = [](clc::AcceptConfirm& c) { c.rmbe_size_code = clc::kMaxRmbeSizeCode; };
  }
  return tamper;
}

int run_tampered(MalPeer& peer, const std::string& attack, bool hold_after) {
  // The shm device checks the Confirm's RMB against the regions the peer announced; a
  // verbs device cannot, and the victim learns at its first WRITE (remote access error).
  if (!peer.verbs()) die("the victim accepted a Confirm with attack %s", attack.c_str());
  g_attack_ns = now_ns();
  if (peer.echo(1000)) die("the victim wrote into an RMB it was never given");
  peer.pump(3000, [&] { return peer.victim_aborted || peer.link_down; });
  hold(peer, hold_after);
  return 0;
}

void check_device(const MalPeer& peer, const std::string& attack) {
  static const char* const kShmOnly[] = {"slot-too-long",    "slot-bad-seq",    "posted-overflow",
                                         "region-not-memfd", "region-unsealed", "region-short",
                                         "region-flood"};
  for (const char* name : kShmOnly) {
    if (peer.verbs() && attack == name) die("attack %s is for the shm device only", name);
  }
}

int run_attack(MalPeer& peer, const std::string& attack, bool hold_after) {
  const uint32_t victim_ring = peer.victim_rmb_size();
  g_attack_ns = now_ns();
  if (attack == "none") {
    hold(peer, hold_after);
    if (peer.echo(100 * 1024)) say("echo-ok");
    peer.close_orderly();
    return 0;
  } else if (attack == "prod-outside-ring") {
    cdc::Message m = peer.cdc_now();
    m.prod = core::WireCursor{0, victim_ring};
    peer.send_cdc(m);
  } else if (attack == "prod-count-huge") {
    cdc::Message m = peer.cdc_now();
    m.prod = core::WireCursor{0, 0xffffffffu};
    peer.send_cdc(m);
  } else if (attack == "prod-ahead") {
    cdc::Message m = peer.cdc_now();
    m.prod = core::to_wire(peer.tx_prod() + victim_ring + 1, victim_ring);
    peer.send_cdc(m);
  } else if (attack == "prod-backwards") {
    cdc::Message m = peer.cdc_now();
    m.prod = core::to_wire(peer.tx_prod() - 500, victim_ring);
    peer.send_cdc(m);
  } else if (attack == "prod-wrap-backwards") {
    // Past one whole ring first, then the same offset one wrap earlier.
    if (!peer.echo(victim_ring + victim_ring / 2)) die("the long echo failed");
    g_attack_ns = now_ns();
    cdc::Message m = peer.cdc_now();
    m.prod = core::to_wire(peer.tx_prod() - victim_ring, victim_ring);
    peer.send_cdc(m);
  } else if (attack == "cons-outside-ring") {
    cdc::Message m = peer.cdc_now();
    m.cons = core::WireCursor{0, peer.own_rmb_size()};
    peer.send_cdc(m);
  } else if (attack == "cons-ahead") {
    cdc::Message m = peer.cdc_now();
    m.cons = core::to_wire(peer.rx_cons() + 5000, peer.own_rmb_size());
    peer.send_cdc(m);
  } else if (attack == "cons-backwards") {
    cdc::Message m = peer.cdc_now();
    m.cons = core::to_wire(peer.rx_cons() - 500, peer.own_rmb_size());
    peer.send_cdc(m);
  } else if (attack == "unknown-token") {
    // Aborts and absurd cursors for connections that do not exist (or no longer do):
    // dropped, the real connection goes on.
    for (int i = 0; i < 2000; ++i) {
      cdc::Message m = peer.cdc_now();
      m.token = i % 2 ? random32() : peer.victim_token() + 0x10000;  // an older generation
      m.prod = core::WireCursor{static_cast<uint16_t>(random32()), random32()};
      m.cons = core::WireCursor{static_cast<uint16_t>(random32()), random32()};
      m.peer_conn_abort = true;
      peer.send_cdc(m);
      if (i % 32 == 0) peer.pump(1);
    }
    hold(peer, hold_after);
    if (peer.echo(10000)) say("echo-ok");
    peer.close_orderly();
    return 0;
  } else if (attack == "garbage-cdc") {
    // CDC type byte, wrong length byte or nonsense: malformed, dropped like the kernel
    // does; the connection goes on.
    for (int i = 0; i < 2000; ++i) {
      uint8_t m[cdc::kSize];
      noise(m, sizeof m);
      m[0] = cdc::kType;
      if (m[1] == cdc::kSize) m[1] = 0;
      peer.send_raw(m, i % 3 == 0 ? 20 : sizeof m);
      if (i % 32 == 0) peer.pump(1);
    }
    hold(peer, hold_after);
    if (peer.echo(10000)) say("echo-ok");
    peer.close_orderly();
    return 0;
  } else if (attack == "garbage-llc") {
    // A message of no LLC type the protocol knows: a protocol violation.
    uint8_t m[llc::kSize];
    noise(m, sizeof m);
    m[0] = 0x77;
    m[1] = llc::kSize;
    peer.send_raw(m, sizeof m);
  } else if (attack == "malformed-llc") {
    // A known type with a wrong length byte.
    uint8_t m[llc::kSize];
    noise(m, sizeof m);
    m[0] = static_cast<uint8_t>(llc::Type::kConfirmLink);
    m[1] = 3;
    peer.send_raw(m, sizeof m);
  } else if (attack == "slot-too-long") {
    // The next slot of the victim's ring claims more bytes than a receive buffer holds.
    const uint64_t next = peer.delivered_to_victim();
    auto* slot = reinterpret_cast<SlotHeader*>(peer.victim_slot(next % peer.victim_ring_depth()));
    slot->length = 0xfffffff0u;
    std::atomic_ref<uint64_t>(slot->seq).store(next + 1, std::memory_order_release);
    std::atomic_ref<uint64_t>(peer.victim_ring_header()->filled).store(next + 1);
    peer.notify_victim();
  } else if (attack == "slot-bad-seq") {
    // Every slot gets a wrong message number and noise, and the shared `filled` word
    // claims a message waiting: nothing may be read, and nothing may spin. Only once
    // the victim has taken every message we sent (else we would garble our own).
    const uint64_t taken = peer.victim_ring_depth() + peer.delivered_to_victim();
    peer.pump(2000, [&] {
      return std::atomic_ref<uint64_t>(peer.victim_ring_header()->posted).load() == taken;
    });
    for (uint32_t i = 0; i < peer.victim_ring_depth(); ++i) {
      uint8_t* slot = peer.victim_slot(i);
      auto* header = reinterpret_cast<SlotHeader*>(slot);
      noise(slot + sizeof(SlotHeader), 32);
      header->length = 44;
      std::atomic_ref<uint64_t>(header->seq).store(uint64_t{random32()} << 20 | 7);
    }
    std::atomic_ref<uint64_t>(peer.victim_ring_header()->filled)
        .store(peer.delivered_to_victim() + 12345);
    peer.notify_victim();
    hold(peer, hold_after);
    std::atomic_ref<uint64_t>(peer.victim_ring_header()->filled).store(peer.delivered_to_victim());
    if (peer.echo(10000)) {
      say("echo-ok");
    } else {
      std::fprintf(
          stderr, "echo failed: victim ring posted %llu filled %llu armed %u, delivered %llu\n",
          (unsigned long long)peer.victim_ring_header()->posted,
          (unsigned long long)peer.victim_ring_header()->filled, peer.victim_ring_header()->armed,
          (unsigned long long)peer.delivered_to_victim());
    }
    peer.close_orderly();
    return 0;
  } else if (attack == "posted-overflow") {
    // Our own ring claims more receive buffers than it has: the victim, as sender, must
    // not believe it (it would overwrite slots we have not read).
    auto posted = std::atomic_ref<uint64_t>(peer.own_ring_header()->posted);
    posted.store(posted.load() + 10 * kRingDepth);
    peer.stop_receiving();
    // Enough one-byte echoes that the victim uses up the slots it knew of and reads
    // `posted` again.
    for (uint32_t i = 0; i < 4 * kRingDepth; ++i) {
      const uint8_t byte = static_cast<uint8_t>(i);
      peer.write_data(&byte, 1);
      pause_us(300);
    }
  } else if (attack == "rmb-garbage") {
    // Noise over the victim's whole RMB, outside any cursor: never read by the victim.
    // Then what the cursors do cover is echoed as written last.
    peer.scribble_victim_rmb();
    peer.pump(10);
    hold(peer, hold_after);
    if (peer.echo(30000)) say("echo-ok");
    peer.close_orderly();
    return 0;
  } else if (attack == "region-not-memfd") {
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) die("pipe");
    peer.announce_region(random_nonzero(32), 0x10000, 4096, 0, pipe_fds[0]);
  } else if (attack == "region-unsealed") {
    UniqueFd fd(::memfd_create("malpeer-unsealed", MFD_CLOEXEC));
    if (::ftruncate(fd.get(), 1 << 20) != 0) die("ftruncate");
    peer.announce_region(random_nonzero(32), 0x10000, 1 << 20, 0, fd.get());
  } else if (attack == "region-short") {
    UniqueFd fd(::memfd_create("malpeer-short", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (::ftruncate(fd.get(), 4096) != 0) die("ftruncate");
    ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    peer.announce_region(random_nonzero(32), 0x10000, 1 << 20, 0, fd.get());
  } else if (attack == "region-flood") {
    // Regions of the largest size a victim maps, as many as it takes: the victim's
    // address space (128 TiB) holds about 2000 of them, its map count 65530 mappings.
    UniqueFd fd(::memfd_create("malpeer-huge", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (::ftruncate(fd.get(), static_cast<off_t>(kHugeRegion)) != 0) die("ftruncate");
    ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    int sent = 0;
    for (int i = 0; i < 4096 && !peer.link_down; ++i) {
      if (!peer.announce_region(random_nonzero(32), uint64_t{1} << 48, kHugeRegion, 0, fd.get())) {
        break;
      }
      ++sent;
      if (i % 16 == 0) peer.pump(1);
    }
    say("regions %d", sent);
    peer.pump(2000, [&] { return peer.link_down; });
    if (!peer.link_down && peer.echo(10000)) say("echo-ok");
  } else if (attack == "stop-receiving") {
    // We post no more receive buffers and keep sending: every CDC of the victim's echo
    // meets RNR, for good.
    peer.stop_receiving();
    std::vector<uint8_t> data(1);
    for (int i = 0; i < 2000; ++i) {
      data[0] = static_cast<uint8_t>(i);
      peer.write_data(data.data(), data.size());
      pause_us(200);
    }
  } else if (attack == "stop-cons-updates") {
    // We read the victim's CDCs but never announce what we consumed: its writes stop when
    // our ring is full, as a TCP writer's would on a zero window.
    std::vector<uint8_t> data(8000);
    size_t written = 0;
    for (int i = 0; i < 100; ++i) {
      written += peer.write_data(data.data(), data.size());
      peer.pump(20);
    }
    say("written %zu", written);
  } else {
    usage();
  }
  peer.pump(3000, [&] { return peer.victim_aborted || peer.link_down; });
  hold(peer, hold_after);
  peer.pump(200);
  return 0;
}

}  // namespace malpeer
