// fanin: many connections streaming into (or out of) one event-loop process while a latency
// probe runs alongside (an ordinary TCP program).
//
//   fanin server --port P [--bind ADDR] [--hold] [--timeout S]
//   fanin client --host H --port P [--conns N] [--seconds S] [--size B] [--reverse]
//                [--consumer fast|slow] [--work-ns-per-kib W] [--probe-interval-us U]
//                [--hold] [--timeout S]
//
// A server serves one run and exits. The client opens one probe connection, then N bulk
// connections, one at a time: each starts with a 32-byte header (big-endian): "FANIN001",
// kind (1 bulk, 2 probe), flags (1 reverse, 2 slow consumer), N, B, S in milliseconds, W,
// which the server acknowledges with one byte 'A' before the next connect (so that the
// listen backlog never overflows). The client decides everything; the server checks that
// all N+1 headers agree. Once it has them all, the server sends GO on the probe connection
// and both sides start their clocks (t0). Probe connection messages are 64 bytes: a u32
// type (GO, PING, END, RESULT), then u64 fields.
//
// Sender (the client; with --reverse the server): one epoll loop (level-triggered EPOLLOUT,
// non-blocking sockets) writes B-byte buffers (default 16 KiB) to whichever connections are
// writable, at most 256 KiB per connection and wake-up so that they take turns, until
// t0 + S; then it half-closes every bulk connection.
//
// Receiver (the server; with --reverse the client): one epoll loop (level-triggered EPOLLIN)
// over the N connections. Consumer "fast": one read of up to 256 KiB per readiness event.
// Consumer "slow": one read of at most 4 KiB per readiness event, then W ns (default 1000)
// of busy-waiting per KiB read: the application's work. The work is proportional to the
// bytes, so the total is the same however the data is chunked (deterministic), and it caps
// the consumer near 1 GB/s (8 Gbit/s): the buffers fill, writers block, and every read
// frees only a little space (many small window/cursor updates). The receiver counts the
// bytes delivered to it between t0 + S/10 (warm-up) and t0 + S; afterwards it drains to
// EOF as a fast consumer (not counted) so that the run ends soon. Delivered totals are
// checked against sent totals: forward, the server answers each EOF with that
// connection's u64 count; reverse, the server's result carries what it sent.
//
// Probe: from GO until the bulk data has all been delivered, a client thread sends a
// 64-byte PING every U us (default 1000; a late one goes at once and the schedule restarts
// from it, no bursts) on the blocking probe connection and waits for the echo, which a
// server thread sends back; round trips are timed with CLOCK_MONOTONIC. Then the client
// sends END and the server answers RESULT (its counts) on the same connection.
//
// Output: one JSON line from the client: conns, reverse, consumer, size, bytes (counted in
// the window), seconds (the window), gbit_per_s, total_bytes, conn_bytes_min/max (per
// connection totals: fairness), setup_seconds (connecting N+1), probe_p50/p99/max_us,
// probe_count. --hold: when finished, print "done" on stderr, then wait for stdin to close
// before exiting, connections still open (so that a tool can look at the live process).
// --timeout S: exit 3 when it expires (default 120 s + S for the client, none for the
// server; not while holding). RLIMIT_NOFILE's soft limit is raised to the hard one.
//
// The wire and its plumbing, the bulk loops, the probe and both ends live in fanin_*.c
// (fanin.h lists what they share); this file holds the command line.
#include "fanin.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char* phase_name(void) {
  static const char* const names[] = {
      "setup",   "connecting", "accepting",         "waiting for GO",
      "sending", "receiving",  "collecting counts", "waiting for the result",
      "holding"};
  return names[phase];
}

// ---- main ------------------------------------------------------------------------------------

static void usage(void) {
  fprintf(stderr,
          "usage: fanin server --port P [--bind ADDR] [--hold] [--timeout S]\n"
          "       fanin client --host H --port P [--conns N] [--seconds S] [--size B]\n"
          "                    [--reverse] [--consumer fast|slow] [--work-ns-per-kib W]\n"
          "                    [--probe-interval-us U] [--hold] [--timeout S]\n");
  exit(2);
}

int main(int argc, char** argv) {
  if (argc < 2) usage();
  bool server = strcmp(argv[1], "server") == 0;
  if (!server && strcmp(argv[1], "client") != 0) usage();
  const char* host = NULL;
  const char* bind_addr = "127.0.0.1";
  long long port = -1, timeout = -1, interval_us = 1000;
  double seconds = 3;
  bool hold_at_end = false, client_option = false;
  struct params p = {.conns = 1, .size = 16u << 10, .work_ns_per_kib = 1000};
  for (int i = 2; i < argc; i++) {
    const char* a = argv[i];
    if (strcmp(a, "--hold") == 0) {
      hold_at_end = true;
      continue;
    }
    if (strcmp(a, "--reverse") == 0) {
      p.flags |= FLAG_REVERSE;
      client_option = true;
      continue;
    }
    if (i + 1 >= argc) usage();
    const char* v = argv[++i];
    client_option |=
        strcmp(a, "--port") != 0 && strcmp(a, "--bind") != 0 && strcmp(a, "--timeout") != 0;
    if (strcmp(a, "--port") == 0)
      port = num_arg("fanin", a, v, 0, 65535);
    else if (strcmp(a, "--host") == 0)
      host = v;
    else if (strcmp(a, "--bind") == 0)
      bind_addr = v;
    else if (strcmp(a, "--conns") == 0)
      p.conns = (uint32_t)num_arg("fanin", a, v, 1, MAX_CONNS);
    else if (strcmp(a, "--size") == 0)
      p.size = (uint32_t)num_arg("fanin", a, v, 1, MAX_SIZE);
    else if (strcmp(a, "--work-ns-per-kib") == 0)
      p.work_ns_per_kib = (uint32_t)num_arg("fanin", a, v, 0, MAX_WORK);
    else if (strcmp(a, "--probe-interval-us") == 0)
      interval_us = num_arg("fanin", a, v, 0, 10000000);
    else if (strcmp(a, "--timeout") == 0)
      timeout = num_arg("fanin", a, v, 1, 86400);
    else if (strcmp(a, "--seconds") == 0)
      seconds = strtod(v, NULL);
    else if (strcmp(a, "--consumer") == 0 && strcmp(v, "fast") == 0)
      p.flags &= ~FLAG_SLOW;
    else if (strcmp(a, "--consumer") == 0 && strcmp(v, "slow") == 0)
      p.flags |= FLAG_SLOW;
    else
      usage();
  }
  if (!(seconds >= 0.01 && seconds <= MAX_MILLIS / 1000)) usage();
  p.millis = (uint32_t)(seconds * 1000 + 0.5);
  if (port < 0 || (server && client_option) || (!server && (host == NULL || port == 0))) usage();
  // The client is bounded by default; a server only when asked.
  if (timeout < 0 && !server) timeout = 120 + (long long)seconds;
  signal(SIGPIPE, SIG_IGN);
  if (timeout > 0) arm_timeout("fanin", (unsigned)timeout, phase_name);
  return server ? run_server(bind_addr, (int)port, hold_at_end)
                : run_client(host, (int)port, &p, (uint64_t)interval_us, hold_at_end);
}
