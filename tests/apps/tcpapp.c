// tcpapp: an ordinary TCP application that moves a deterministic pseudo-random byte stream
// and verifies it on the receiving side. It knows nothing of smcpre; the integration tests
// run it with and without the preload and compare.
//
//   tcpapp server --port P [--bind ADDR] [--mode sink|echo|source] [--bytes N] [--conns K]
//                 [--concurrent] [--chunk N|random] [--seed S] [--write-first] [--raw]
//   tcpapp client --host H --port P [--bind ADDR] [--mode sink|echo|source] --bytes N
//                 [--chunk N|random] [--seed S] [--half-close] [--conns K] [--parallel P]
//                 [--write-first] [--dump FILE]
//   common: [--timeout SECONDS] (default 120; the process exits 3 when it expires)
//           [--hold] (when done, print "done" on stderr and exit only when stdin closes:
//           a test can then look at the live process, e.g. its smcpre counters)
// --bind: the server's listening address (default 127.0.0.1); the client's source address
//   (default: the kernel's choice), which selects the route and so the netdev it uses.
//
// Modes (named from the server's point of view):
//   sink    client sends N bytes (then shutdown(SHUT_WR) with --half-close); the server
//           reads N bytes (with --bytes) or to EOF (without), verifies them and replies
//           with 16 bytes: big-endian u64 count and u64 Fletcher checksum.
//   echo    the server sends back everything it reads until EOF; the client sends N bytes
//           from a second thread while it reads and verifies the echo.
//   source  the client sends a 4-byte request ("GET\n"), then the server sends N bytes and
//           closes; the client reads to EOF and verifies. (A server that speaks before the
//           client, as with --write-first, stays on TCP by design: the server never waits
//           for a Proposal, so a plain client is never delayed.)
// --write-first: the server sends the greeting "220 tcpapp ready\r\n" before anything else
//   (a server-speaks-first protocol); the client must be given it too and verifies it.
// --raw (server): do not verify received bytes against the pattern (echo foreign bytes).
// --dump FILE (client, source mode): store the received bytes in FILE instead of verifying.
// Chunks: random sizes (mostly 1..64 KiB, some tiny, some up to 1 MiB) or fixed --chunk;
// each chunk uses a randomly chosen call: write/send/sendto/writev/sendmsg to send,
// read/recv/recvfrom/readv/recvmsg to receive.
// Streams are seeded from --seed and the client's port, so every connection (and each
// direction) carries different bytes and crossed connections are detected.
//
// Output: one JSON line per connection on stdout; the server prints "listening <port>" on
// stderr when it accepts connections. Exit status 0 only if every connection was ok.
//
// The connection's I/O and both ends live in tcpapp_*.c (tcpapp.h lists what they share);
// this file holds the command line.
#include "tcpapp.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct options opt = {.bytes = -1, .conns = 1, .parallel = 1, .seed = 1, .timeout = 120};

// ---- command line ------------------------------------------------------------------------

static void usage(void) {
  fprintf(stderr,
          "usage: tcpapp server --port P [--bind ADDR] [--mode sink|echo|source] [--bytes N]\n"
          "                     [--conns K] [--concurrent] [--chunk N|random] [--seed S]\n"
          "                     [--write-first] [--raw] [--timeout S] [--hold]\n"
          "       tcpapp client --host H --port P [--bind ADDR] [--mode sink|echo|source]\n"
          "                     --bytes N [--chunk N|random] [--seed S] [--half-close]\n"
          "                     [--conns K] [--parallel P] [--write-first] [--dump FILE]\n"
          "                     [--timeout S] [--hold]\n");
  exit(2);
}

static void parse_args(int argc, char** argv) {
  if (argc < 2) usage();
  if (strcmp(argv[1], "server") == 0)
    opt.server = true;
  else if (strcmp(argv[1], "client") != 0)
    usage();
  for (int i = 2; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    bool takes = true;
    if (strcmp(a, "--concurrent") == 0) {
      opt.concurrent = true;
      takes = false;
    } else if (strcmp(a, "--write-first") == 0) {
      opt.write_first = true;
      takes = false;
    } else if (strcmp(a, "--half-close") == 0) {
      opt.half_close = true;
      takes = false;
    } else if (strcmp(a, "--raw") == 0) {
      opt.raw = true;
      takes = false;
    } else if (strcmp(a, "--hold") == 0) {
      opt.hold = true;
      takes = false;
    } else if (v == NULL) {
      usage();
    } else if (strcmp(a, "--port") == 0) {
      opt.port = (int)num_arg("tcpapp", a, v, 0, 65535);
    } else if (strcmp(a, "--host") == 0) {
      opt.host = v;
    } else if (strcmp(a, "--bind") == 0) {
      opt.bind = v;
    } else if (strcmp(a, "--mode") == 0) {
      if (strcmp(v, "sink") == 0)
        opt.mode = MODE_SINK;
      else if (strcmp(v, "echo") == 0)
        opt.mode = MODE_ECHO;
      else if (strcmp(v, "source") == 0)
        opt.mode = MODE_SOURCE;
      else
        usage();
    } else if (strcmp(a, "--bytes") == 0) {
      opt.bytes = num_arg("tcpapp", a, v, 0, 1LL << 40);
    } else if (strcmp(a, "--conns") == 0) {
      opt.conns = (int)num_arg("tcpapp", a, v, 1, 100000);
    } else if (strcmp(a, "--parallel") == 0) {
      opt.parallel = (int)num_arg("tcpapp", a, v, 1, 256);
    } else if (strcmp(a, "--chunk") == 0) {
      opt.chunk = strcmp(v, "random") == 0 ? 0 : (size_t)num_arg("tcpapp", a, v, 1, MAX_CHUNK);
    } else if (strcmp(a, "--seed") == 0) {
      opt.seed = (uint64_t)num_arg("tcpapp", a, v, 0, 1LL << 50);
    } else if (strcmp(a, "--dump") == 0) {
      opt.dump = v;
    } else if (strcmp(a, "--timeout") == 0) {
      opt.timeout = (unsigned)num_arg("tcpapp", a, v, 1, 86400);
    } else {
      usage();
    }
    if (takes) i++;
  }
  if (!opt.server && (opt.host == NULL || opt.port == 0)) usage();
  if (!opt.server && opt.bytes < 0 && opt.dump == NULL) usage();
  if (opt.server && opt.mode == MODE_SOURCE && opt.bytes < 0) usage();
  if (opt.dump != NULL && (opt.server || opt.mode != MODE_SOURCE)) usage();
}

int main(int argc, char** argv) {
  parse_args(argc, argv);
  // A peer that vanishes must show up as an error in the report, not as a silent death.
  signal(SIGPIPE, SIG_IGN);
  arm_timeout("tcpapp", opt.timeout, NULL);
  const int rc = opt.server ? run_server() : run_clients();
  if (opt.hold) {
    fflush(stdout);
    fprintf(stderr, "done\n");
    char byte;
    while (read(0, &byte, 1) > 0) {
    }
  }
  return rc;
}
