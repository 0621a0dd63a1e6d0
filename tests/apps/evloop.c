// evloop: an event-driven TCP application (non-blocking sockets, one readiness loop serving
// every connection), the way real servers are written. Like tcpapp it knows nothing of
// smcpre and moves a verified pseudo-random byte stream; the integration tests run it with
// and without the preload and compare.
//
//   evloop server --port P [--bind ADDR] --mode sink|echo|source --bytes N [--conns K]
//                 [--api epoll|epoll-et|poll|select] [--oneshot] [--threads T]
//   evloop client --host H --port P --mode sink|echo|source --bytes N [--conns K]
//                 [--api ...] [--oneshot] [--threads T]
//   common: [--chunk N|random] [--seed S] [--timeout SECONDS] (default 120; exit 3 on expiry)
//   client, echo mode: [--requests R] [--end shutdown|close|open]
//   common: [--idle SECONDS]
//
// Modes and wire format are tcpapp's, so either program can talk to the other:
//   sink    the client sends N bytes, then shutdown(SHUT_WR); the server verifies them,
//           replies with 16 bytes (big-endian u64 count, u64 Fletcher checksum), waits for
//           the client's EOF and closes; the client checks the reply, then expects EOF.
//   echo    the server sends back everything it reads until EOF and closes; the client
//           sends N bytes, then shutdown(SHUT_WR), while it reads and verifies the echo.
//   source  the client sends "GET\n"; the server sends N bytes and closes; the client reads
//           and verifies to EOF.
// Streams are seeded from --seed and the client's port, exactly as in tcpapp.
//
// The server's listening socket is non-blocking; accept4(SOCK_NONBLOCK) hands out
// non-blocking sockets that are registered with the readiness API before anything is read
// from them. The client connects K sockets with blocking connect(), makes them non-blocking
// (fcntl O_NONBLOCK) and runs the same loop. All K connections progress concurrently.
//
// --api:
//   epoll     level-triggered; the interest set follows what each connection waits for
//             (EPOLL_CTL_MOD), one read and one write call per event (the loop must report
//             again what is still ready), EPOLL_CTL_DEL before close (redis' way).
//   epoll-et  edge-triggered, registered once for EPOLLIN|EPOLLOUT|EPOLLRDHUP; every event
//             is drained until EAGAIN (or until the connection needs nothing more in that
//             direction); close() without EPOLL_CTL_DEL (nginx's way).
//   poll      poll() over a set rebuilt every round, POLLRDHUP requested with POLLIN.
//   select    select() with fd_sets (FD_SETSIZE bounds the fds).
// --oneshot: EPOLLONESHOT on connections, re-armed after every event (epoll APIs only).
// --requests R (client, echo mode): a keep-alive client: the N bytes go as R requests of
//   N/R bytes (rounded up), each sent only once the echo of the previous one is complete.
// --end (client, echo mode): how the client ends a connection once its echo is complete:
//   shutdown (default) SHUT_WR, then the server's EOF, then close(); close: close() at
//   once; open: never, the process exits with the connection open (exit(), not a crash).
// --idle S: once every connection is done, print "idle" on stderr and sleep S seconds
//   before exiting (a test measures what the idle server costs meanwhile; a client with
//   --end open keeps its connections open that long, so its peer is asleep when it exits).
// --threads T (epoll APIs only): T threads wait on one epoll set; the listener carries
//   EPOLLEXCLUSIVE and connections EPOLLONESHOT (implied), so a connection is handled by
//   one thread at a time.
// An eventfd in every set ends the loop once all connections are done (a mixed set: the
// sockets next to an ordinary fd).
//
// Checks beyond the data: accepted sockets must be non-blocking; with level-triggered epoll
// and poll a read that returns EOF must follow an event that reported EPOLLRDHUP/POLLRDHUP
// (kernel TCP sets it together with EPOLLIN at the peer's FIN), or, when the FIN came after
// the event, the socket must report it at the read; an event for a connection
// that is already closed, or (with EPOLLONESHOT) one that another thread is still handling,
// fails the run. Readiness that turns out not to be there (the first read or write after an
// event returns EAGAIN) is counted as "spurious" in the record. A timeout names the call
// that hung.
//
// Output: one JSON line per connection on stdout (tcpapp's fields plus api, events and
// spurious; TCP_INFO taken before close); the server prints "listening <port>" on stderr.
// Exit status 0 only if every connection was ok.
//
// The connection's protocol, its I/O, its life and the loops live in evloop_*.c (evloop.h
// lists what they share); this file holds the command line.
#include "evloop.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char* const mode_names[3] = {"sink", "echo", "source"};
const char* const api_names[4] = {"epoll", "epoll-et", "poll", "select"};
static const char* const end_names[] = {"shutdown", "close", "open"};
struct options opt = {
    .bytes = -1, .conns = 1, .api = API_EPOLL, .threads = 1, .seed = 1, .timeout = 120};

// Where the process waits or which call it is in, for the timeout message (read from the
// signal handler; with several threads, the latest one to get there).
const char* volatile waiting_in = "setup";
static const char* where(void) {
  return waiting_in;
}

// ---- command line ------------------------------------------------------------------------

static void usage(void) {
  fprintf(stderr,
          "usage: evloop server --port P [--bind ADDR] --mode sink|echo|source --bytes N\n"
          "                     [--conns K] [--api epoll|epoll-et|poll|select] [--oneshot]\n"
          "                     [--threads T] [--chunk N|random] [--seed S] [--timeout S]\n"
          "       evloop client --host H --port P --mode sink|echo|source --bytes N\n"
          "                     [--conns K] [--api ...] [--oneshot] [--threads T]\n"
          "                     [--chunk N|random] [--seed S] [--timeout S]\n"
          "                     [--requests R] [--end shutdown|close|open] (echo client)\n"
          "       common: [--idle S]\n");
  exit(2);
}

static int name_index(const char* v, const char* const* names, int n) {
  for (int i = 0; i < n; i++)
    if (strcmp(v, names[i]) == 0) return i;
  usage();
  return -1;
}

static void parse_args(int argc, char** argv) {
  if (argc < 2) usage();
  if (strcmp(argv[1], "server") == 0)
    opt.server = true;
  else if (strcmp(argv[1], "client") != 0)
    usage();
  bool mode_given = false;
  for (int i = 2; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--oneshot") == 0) {
      opt.oneshot = true;
      continue;
    }
    if (v == NULL) usage();
    if (strcmp(a, "--port") == 0) {
      opt.port = (int)num_arg("evloop", a, v, 0, 65535);
    } else if (strcmp(a, "--host") == 0) {
      opt.host = v;
    } else if (strcmp(a, "--bind") == 0) {
      opt.bind = v;
    } else if (strcmp(a, "--mode") == 0) {
      opt.mode = (enum mode)name_index(v, mode_names, 3);
      mode_given = true;
    } else if (strcmp(a, "--api") == 0) {
      opt.api = (enum api)name_index(v, api_names, 4);
    } else if (strcmp(a, "--bytes") == 0) {
      opt.bytes = num_arg("evloop", a, v, 0, 1LL << 40);
    } else if (strcmp(a, "--conns") == 0) {
      opt.conns = (int)num_arg("evloop", a, v, 1, MAX_CONNS);
    } else if (strcmp(a, "--threads") == 0) {
      opt.threads = (int)num_arg("evloop", a, v, 1, MAX_THREADS);
    } else if (strcmp(a, "--chunk") == 0) {
      opt.chunk = strcmp(v, "random") == 0 ? 0 : (size_t)num_arg("evloop", a, v, 1, MAX_CHUNK);
    } else if (strcmp(a, "--seed") == 0) {
      opt.seed = (uint64_t)num_arg("evloop", a, v, 0, 1LL << 50);
    } else if (strcmp(a, "--timeout") == 0) {
      opt.timeout = (unsigned)num_arg("evloop", a, v, 1, 86400);
    } else if (strcmp(a, "--requests") == 0) {
      opt.requests = num_arg("evloop", a, v, 1, 1LL << 40);
    } else if (strcmp(a, "--end") == 0) {
      opt.end = (enum end)name_index(v, end_names, 3);
    } else if (strcmp(a, "--idle") == 0) {
      opt.idle = (unsigned)num_arg("evloop", a, v, 0, 3600);
    } else {
      usage();
    }
    i++;
  }
  if (!mode_given || opt.bytes < 0) usage();
  if (!opt.server && (opt.host == NULL || opt.port == 0)) usage();
  if ((opt.oneshot || opt.threads > 1) && !epoll_api()) {
    fprintf(stderr, "evloop: --oneshot and --threads need --api epoll or epoll-et\n");
    exit(2);
  }
  if ((opt.requests > 0 || opt.end != END_SHUTDOWN) && (opt.server || opt.mode != MODE_ECHO)) {
    fprintf(stderr, "evloop: --requests and --end are for an echo client\n");
    exit(2);
  }
  // Several threads on one set: a connection must be handled by one thread at a time.
  if (opt.threads > 1) opt.oneshot = true;
}

int main(int argc, char** argv) {
  parse_args(argc, argv);
  // A peer that vanishes must show up as an error in the report, not as a silent death.
  signal(SIGPIPE, SIG_IGN);
  arm_timeout("evloop", opt.timeout, where);
  return run();
}
