// malpeer: a hostile SMC-R peer on the shm device, for tests/integration/test_malpeer.py.
//
// It connects to a preloaded server the way an smcpre client would and does every step
// itself, with the engine's codecs and ring classes but none of its logic: the CLC
// Proposal and Confirm, the shm rendezvous (hello with its own ring memfd and eventfd,
// its RMB announced as a region), the victim's ring, regions and RMB mapped as a peer
// maps them, CONFIRM LINK answered. The victim is an unmodified program under the
// preload (tcpapp server --mode echo --raw). Then it misbehaves as --attack says.
//
//   malpeer --port P [--host H] --attack NAME [--hold] [--verbs DEVICE --bind ADDR]
//
// --verbs: over that verbs device (rxe0 in scripts/rxe-vm) instead of shm, from the TCP
// source address ADDR; the attacks on the CLC fields, CDCs and LLC messages only.
//
// Output on stdout, one word per line, for the test to match: "established" once the
// link is up; "victim-abort" (the victim sent a CDC with peer_conn_abort), "link-down"
// (the victim's queue pair hung up the rendezvous), "echo-ok", "declined 0x...",
// "tcp-echo-ok", "closed"; "attacked" after the attack, then with --hold it waits for
// stdin to close before it goes on (the test measures the victim's CPU meanwhile).
// "error: ..." on stderr and exit status 1 when the attack could not be carried out.
//
// The link set-up, the connection on it, the verbs side and the attacks live in
// malpeer_*.cpp (malpeer.h lists what they share); this file holds the command line and
// the order of a run: handshake (or its decline), link, a working echo, the attack.
#include "malpeer.h"

#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace malpeer {

void usage() {
  std::fprintf(stderr,
               "usage: malpeer --port P [--host H] --attack NAME [--hold] [--verbs DEVICE "
               "--bind ADDR]\n");
  std::exit(2);
}

}  // namespace malpeer

int main(int argc, char** argv) {
  using namespace malpeer;
  const char* host = "127.0.0.1";
  int port = 0;
  std::string attack;
  bool hold_after = false;
  std::string verbs_device;
  const char* bind = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--host" && i + 1 < argc) {
      host = argv[++i];
    } else if (a == "--port" && i + 1 < argc) {
      port = std::atoi(argv[++i]);
    } else if (a == "--attack" && i + 1 < argc) {
      attack = argv[++i];
    } else if (a == "--hold") {
      hold_after = true;
    } else if (a == "--verbs" && i + 1 < argc) {
      verbs_device = argv[++i];
    } else if (a == "--bind" && i + 1 < argc) {
      bind = argv[++i];
    } else {
      usage();
    }
  }
  if (port <= 0 || attack.empty()) usage();

  MalPeer peer;
  if (!verbs_device.empty()) peer.use_verbs(verbs_device, bind);
  uint32_t declined = 0;
  // The attacks on the handshake change our Confirm; the others need it as it should be.
  const std::function<void(clc::AcceptConfirm&)> tamper = confirm_tamper(attack);
  if (!peer.handshake(host, port, tamper, &declined)) {
    say("declined %#010x", declined);
    // The connection goes on over TCP: a plain echo through the victim.
    static const char kLine[] = "hello over TCP after a decline\n";
    send_all(peer.tcp(), kLine, sizeof kLine - 1);
    char back[sizeof kLine - 1];
    if (read_exact(peer.tcp(), reinterpret_cast<uint8_t*>(back), sizeof back, 5000) &&
        std::memcmp(back, kLine, sizeof back) == 0) {
      say("tcp-echo-ok");
    }
    ::shutdown(peer.tcp(), SHUT_WR);
    return 0;
  }
  peer.bring_up();
  if (tamper) return run_tampered(peer, attack, hold_after);
  check_device(peer, attack);

  // Every attack starts from a working connection.
  if (!peer.echo(1000)) die("the echo before the attack failed");
  say("echo-ok");
  return run_attack(peer, attack, hold_after);
}
