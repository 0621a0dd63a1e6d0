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
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "apputil.h"

static const char kMagic[8] = {'F', 'A', 'N', 'I', 'N', '0', '0', '1'};
enum { HDR_LEN = 32, MSG_LEN = 64 };
enum kind { KIND_BULK = 1, KIND_PROBE = 2 };
enum { FLAG_REVERSE = 1u, FLAG_SLOW = 2u, FLAGS_KNOWN = 3u };
enum msg { MSG_GO = 1, MSG_PING = 2, MSG_END = 3, MSG_RESULT = 4 };

#define IO_BUF (256u << 10)   // fast reads; the sender's per-connection turn
#define SLOW_READ (4u << 10)  // the slow consumer's read size
#define MAX_EVENTS 256
#define MAX_CONNS 65536u
#define MAX_SIZE (16u << 20)
#define MAX_MILLIS 3600000u
#define MAX_WORK 1000000u  // ns per KiB
#define SPARE_FDS 64       // listener, probe, epoll, stdio, ... besides the bulk fds

// What a run is; the client sends it in every header.
struct params {
  uint32_t flags, conns, size, millis, work_ns_per_kib;
};

struct conn {
  int fd;
  uint64_t bytes;    // sent or received on this connection
  uint32_t off;      // sender: position in the current B-byte buffer
  uint8_t reply[8];  // forward client: the server's count for this connection
  uint8_t reply_got;
};

// Receiver's counts.
struct recv_result {
  uint64_t total, window_bytes, window_ns, conn_min, conn_max;
};

// ---- plumbing --------------------------------------------------------------------------------

// What the process is doing, for the timeout message.
enum phase {
  PH_SETUP,
  PH_CONNECT,
  PH_ACCEPT,
  PH_GO,
  PH_SEND,
  PH_RECEIVE,
  PH_COUNTS,
  PH_RESULT,
  PH_HOLD
};
static volatile sig_atomic_t phase = PH_SETUP;
static const char* phase_name(void) {
  static const char* const names[] = {
      "setup",   "connecting", "accepting",         "waiting for GO",
      "sending", "receiving",  "collecting counts", "waiting for the result",
      "holding"};
  return names[phase];
}

static void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fanin: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

static void set_nodelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    fail("TCP_NODELAY: %s", strerror(errno));
}
static void set_nonblocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) != 0)
    fail("fcntl O_NONBLOCK: %s", strerror(errno));
}

// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
static rlim_t raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) fail("getrlimit: %s", strerror(errno));
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0)
      fail("raising RLIMIT_NOFILE: %s", strerror(errno));
  }
  return rl.rlim_cur;
}
static void check_nofile(uint32_t conns) {
  rlim_t limit = raise_nofile();
  if (limit != RLIM_INFINITY && (rlim_t)conns + SPARE_FDS > limit)
    fail("%u connections need more file descriptors than RLIMIT_NOFILE allows (%llu)", conns,
         (unsigned long long)limit);
}

// epoll_wait's timeout (ms, rounded up, at least 1) until monotonic time `t` > now.
static int ms_until(uint64_t t, uint64_t now) {
  uint64_t ms = (t - now + 999999) / 1000000;
  return ms > 1000000 ? 1000000 : (int)ms;
}

static void spin_ns(uint64_t ns) {
  uint64_t until = now_ns() + ns;
  while (now_ns() < until) {
  }
}

static void sleep_until(uint64_t t) {
  struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static void send_msg(int fd, uint32_t type, const uint64_t* fields, int nfields) {
  uint8_t m[MSG_LEN] = {0};
  put_be32(m, type);
  for (int i = 0; i < nfields; i++) put_be64(m + 8 + 8 * i, fields[i]);
  if (!send_all_fd(fd, m, sizeof m)) fail("probe connection: send: %s", strerror(errno));
}
static void recv_msg(int fd, uint32_t type, uint8_t m[MSG_LEN]) {
  int r = recv_all_fd(fd, m, MSG_LEN);
  if (r != 1) fail("probe connection: %s", r == 0 ? "closed by the peer" : strerror(errno));
  if (get_be32(m) != type) fail("probe connection: message %u, expected %u", get_be32(m), type);
}

static void encode_header(uint8_t h[HDR_LEN], enum kind kind, const struct params* p) {
  memcpy(h, kMagic, sizeof kMagic);
  put_be32(h + 8, kind);
  put_be32(h + 12, p->flags);
  put_be32(h + 16, p->conns);
  put_be32(h + 20, p->size);
  put_be32(h + 24, p->millis);
  put_be32(h + 28, p->work_ns_per_kib);
}
// Returns the kind, or 0 if the header is not a valid one.
static int decode_header(const uint8_t h[HDR_LEN], struct params* p) {
  if (memcmp(h, kMagic, sizeof kMagic) != 0) return 0;
  uint32_t kind = get_be32(h + 8);
  *p = (struct params){.flags = get_be32(h + 12),
                       .conns = get_be32(h + 16),
                       .size = get_be32(h + 20),
                       .millis = get_be32(h + 24),
                       .work_ns_per_kib = get_be32(h + 28)};
  bool ok = (kind == KIND_BULK || kind == KIND_PROBE) && (p->flags & ~FLAGS_KNOWN) == 0 &&
            p->conns >= 1 && p->conns <= MAX_CONNS && p->size >= 1 && p->size <= MAX_SIZE &&
            p->millis >= 1 && p->millis <= MAX_MILLIS && p->work_ns_per_kib <= MAX_WORK;
  return ok ? (int)kind : 0;
}

// --hold: announce the end, keep everything open until stdin closes.
static void hold(void) {
  alarm(0);
  phase = PH_HOLD;
  fputs("done\n", stderr);
  fflush(stderr);
  char b[256];
  for (;;) {
    ssize_t r = read(STDIN_FILENO, b, sizeof b);
    if (r == 0 || (r < 0 && errno != EINTR)) return;
  }
}

// ---- the bulk loops --------------------------------------------------------------------------

static int epoll_over(struct conn* c, uint32_t n, uint32_t events) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) fail("epoll_create1: %s", strerror(errno));
  for (uint32_t i = 0; i < n; i++) {
    struct epoll_event ev = {.events = events, .data.u32 = i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) != 0) fail("epoll_ctl: %s", strerror(errno));
  }
  return ep;
}

// Writes to all connections until t0 + the run's duration, then half-closes them.
static void send_loop(struct conn* c, const struct params* p, uint64_t t0) {
  phase = PH_SEND;
  uint8_t* buf = malloc(p->size);
  if (buf == NULL) fail("out of memory");
  memset(buf, 0xa5, p->size);
  int ep = epoll_over(c, p->conns, EPOLLOUT);
  uint64_t t_stop = t0 + (uint64_t)p->millis * 1000000u;
  struct epoll_event evs[MAX_EVENTS];
  for (uint64_t now; (now = now_ns()) < t_stop;) {
    int k = epoll_wait(ep, evs, MAX_EVENTS, ms_until(t_stop, now));
    if (k < 0 && errno != EINTR) fail("epoll_wait: %s", strerror(errno));
    for (int j = 0; j < k; j++) {
      struct conn* cn = &c[evs[j].data.u32];
      for (size_t budget = IO_BUF; budget > 0;) {
        size_t len = p->size - cn->off;
        ssize_t w = send(cn->fd, buf + cn->off, len, 0);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
        if (w < 0) fail("send on connection %u: %s", evs[j].data.u32, strerror(errno));
        cn->bytes += (uint64_t)w;
        cn->off = (uint32_t)((cn->off + (size_t)w) % p->size);
        budget = budget > (size_t)w ? budget - (size_t)w : 0;
        if ((size_t)w < len) break;  // the send buffer is full
      }
    }
  }
  close(ep);
  for (uint32_t i = 0; i < p->conns; i++)
    if (shutdown(c[i].fd, SHUT_WR) != 0) fail("shutdown connection %u: %s", i, strerror(errno));
  free(buf);
}

// Reads all connections until each has ended; counts the window (see the file comment). With
// `reply`, answers each EOF with the connection's u64 count.
static void receive_loop(struct conn* c, const struct params* p, uint64_t t0, bool reply,
                         struct recv_result* out) {
  phase = PH_RECEIVE;
  uint8_t* buf = malloc(IO_BUF);
  if (buf == NULL) fail("out of memory");
  int ep = epoll_over(c, p->conns, EPOLLIN);
  uint64_t duration = (uint64_t)p->millis * 1000000u;
  uint64_t t_warm = t0 + duration / 10, t_end = t0 + duration;
  uint64_t total = 0, b_warm = 0, tw = t0, b_end = 0, te = 0;
  bool warm = false, ended = false, slow = (p->flags & FLAG_SLOW) != 0;
  struct epoll_event evs[MAX_EVENTS];
  for (uint32_t open = p->conns; open > 0;) {
    uint64_t now = now_ns();
    if (!warm && now >= t_warm) {
      warm = true;
      b_warm = total;
      tw = now;
    }
    if (!ended && now >= t_end) {
      ended = true;
      b_end = total;
      te = now;
    }
    int timeout = ended ? -1 : ms_until(warm ? t_end : t_warm, now);
    int k = epoll_wait(ep, evs, MAX_EVENTS, timeout);
    if (k < 0 && errno != EINTR) fail("epoll_wait: %s", strerror(errno));
    for (int j = 0; j < k; j++) {
      uint32_t i = evs[j].data.u32;
      struct conn* cn = &c[i];
      bool working = slow && !ended;
      ssize_t r = recv(cn->fd, buf, working ? SLOW_READ : IO_BUF, 0);
      if (r > 0) {
        cn->bytes += (uint64_t)r;
        total += (uint64_t)r;
        if (working) spin_ns((uint64_t)r * p->work_ns_per_kib / 1024);
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      if (r < 0) fail("receive on connection %u: %s", i, strerror(errno));
      if (epoll_ctl(ep, EPOLL_CTL_DEL, cn->fd, NULL) != 0) fail("epoll_ctl: %s", strerror(errno));
      open--;
      if (reply) {
        uint8_t count[8];
        put_be64(count, cn->bytes);
        set_nonblocking(cn->fd, false);
        if (!send_all_fd(cn->fd, count, sizeof count))
          fail("sending the count on connection %u: %s", i, strerror(errno));
      }
    }
  }
  if (!ended) {  // every sender stopped before t0 + S (their clocks started earlier)
    b_end = total;
    te = now_ns();
  }
  close(ep);
  free(buf);
  out->total = total;
  out->window_bytes = b_end - b_warm;
  out->window_ns = te > tw ? te - tw : 0;
  out->conn_min = UINT64_MAX;
  out->conn_max = 0;
  for (uint32_t i = 0; i < p->conns; i++) {
    if (c[i].bytes < out->conn_min) out->conn_min = c[i].bytes;
    if (c[i].bytes > out->conn_max) out->conn_max = c[i].bytes;
  }
}

// Forward client, after half-closing: each connection's u64 count from the server, checked
// against what was sent on it.
static void collect_counts(struct conn* c, const struct params* p) {
  phase = PH_COUNTS;
  int ep = epoll_over(c, p->conns, EPOLLIN);
  struct epoll_event evs[MAX_EVENTS];
  for (uint32_t missing = p->conns; missing > 0;) {
    int k = epoll_wait(ep, evs, MAX_EVENTS, -1);
    if (k < 0 && errno != EINTR) fail("epoll_wait: %s", strerror(errno));
    for (int j = 0; j < k; j++) {
      uint32_t i = evs[j].data.u32;
      struct conn* cn = &c[i];
      ssize_t r = recv(cn->fd, cn->reply + cn->reply_got, sizeof cn->reply - cn->reply_got, 0);
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      if (r <= 0)
        fail("connection %u: no count from the server: %s", i, r == 0 ? "closed" : strerror(errno));
      cn->reply_got += (uint8_t)r;
      if (cn->reply_got < sizeof cn->reply) continue;
      if (epoll_ctl(ep, EPOLL_CTL_DEL, cn->fd, NULL) != 0) fail("epoll_ctl: %s", strerror(errno));
      missing--;
      if (get_be64(cn->reply) != cn->bytes)
        fail("connection %u: the server received %llu bytes, the client sent %llu", i,
             (unsigned long long)get_be64(cn->reply), (unsigned long long)cn->bytes);
    }
  }
  close(ep);
}

// ---- the probe -------------------------------------------------------------------------------

// Server side: echoes PINGs until END. Returns NULL on END, else a non-NULL value.
static void* echo_main(void* arg) {
  int fd = *(const int*)arg;
  uint8_t m[MSG_LEN];
  for (;;) {
    int r = recv_all_fd(fd, m, sizeof m);
    if (r != 1) {
      fprintf(stderr, "fanin: probe connection ended without END: %s\n",
              r == 0 ? "closed" : strerror(errno));
      return arg;
    }
    uint32_t type = get_be32(m);
    if (type == MSG_END) return NULL;
    if (type != MSG_PING) {
      fprintf(stderr, "fanin: probe connection: unexpected message %u\n", type);
      return arg;
    }
    if (!send_all_fd(fd, m, sizeof m)) {
      fprintf(stderr, "fanin: probe echo: %s\n", strerror(errno));
      return arg;
    }
  }
}

struct probe {
  int fd;
  uint64_t interval_ns;
  atomic_bool stop;
  uint64_t* rtt;  // ns
  size_t count, cap;
  bool failed;
};

static void* probe_main(void* arg) {
  struct probe* pr = arg;
  uint8_t m[MSG_LEN] = {0}, back[MSG_LEN];
  uint64_t next = now_ns();
  for (uint64_t seq = 0; !atomic_load(&pr->stop); seq++) {
    sleep_until(next);
    if (atomic_load(&pr->stop)) break;
    put_be32(m, MSG_PING);
    put_be64(m + 8, seq);
    uint64_t t = now_ns();
    if (!send_all_fd(pr->fd, m, sizeof m) || recv_all_fd(pr->fd, back, sizeof back) != 1) {
      fprintf(stderr, "fanin: probe round trip %llu failed: %s\n", (unsigned long long)seq,
              strerror(errno));
      pr->failed = true;
      return NULL;
    }
    uint64_t rtt = now_ns() - t;
    if (memcmp(m, back, sizeof m) != 0) {
      fprintf(stderr, "fanin: probe round trip %llu: wrong echo\n", (unsigned long long)seq);
      pr->failed = true;
      return NULL;
    }
    if (pr->count == pr->cap) {
      size_t cap = pr->cap ? 2 * pr->cap : 4096;
      uint64_t* grown = realloc(pr->rtt, cap * sizeof *grown);
      if (grown == NULL) {
        fprintf(stderr, "fanin: out of memory\n");
        pr->failed = true;
        return NULL;
      }
      pr->rtt = grown;
      pr->cap = cap;
    }
    pr->rtt[pr->count++] = rtt;
    next += pr->interval_ns;
    uint64_t now = now_ns();
    if (next < now) next = now;
  }
  return NULL;
}

static int cmp_u64(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}
// Percentile q (0..100] of n sorted values (nearest rank), in µs; JSON null if none.
static void print_pct(const char* name, const uint64_t* v, size_t n, unsigned q) {
  if (n == 0) {
    printf(",\"%s\":null", name);
    return;
  }
  size_t rank = (n * q + 99) / 100;
  printf(",\"%s\":%.3f", name, (double)v[rank > 0 ? rank - 1 : 0] / 1000.0);
}

// ---- server ----------------------------------------------------------------------------------

static int run_server(const char* bind_addr, int port, bool hold_at_end) {
  raise_nofile();
  int bound = 0;
  int lfd = listen_tcp(bind_addr, port, &bound);
  if (lfd < 0) return 1;
  fprintf(stderr, "listening %d\n", bound);
  fflush(stderr);

  // Accept until the probe and all N bulk connections are in; N comes with the headers.
  phase = PH_ACCEPT;
  struct params p = {0};
  uint8_t first[HDR_LEN];
  struct conn* c = NULL;
  uint32_t nbulk = 0;
  int probe_fd = -1;
  while (probe_fd < 0 || c == NULL || nbulk < p.conns) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0 && errno == EINTR) continue;
    if (fd < 0) fail("accept: %s", strerror(errno));
    uint8_t h[HDR_LEN];
    struct params hp;
    int kind = 0;
    if (recv_all_fd(fd, h, sizeof h) == 1) kind = decode_header(h, &hp);
    if (kind == 0) fail("connection %u: no valid header", nbulk + (probe_fd >= 0));
    if (c == NULL) {
      check_nofile(hp.conns);
      c = calloc(hp.conns, sizeof *c);
      if (c == NULL) fail("out of memory");
      p = hp;
      memcpy(first, h, sizeof h);
    } else if (memcmp(h + 12, first + 12, HDR_LEN - 12) != 0) {
      fail("a connection's header disagrees with the first one's");
    }
    static const uint8_t ack = 'A';
    if (!send_all_fd(fd, &ack, 1)) fail("accept: acknowledging a header: %s", strerror(errno));
    if (kind == KIND_PROBE) {
      if (probe_fd >= 0) fail("two probe connections");
      probe_fd = fd;
      set_nodelay(fd);
    } else {
      if (nbulk == p.conns) fail("more than %u bulk connections", p.conns);
      c[nbulk++].fd = fd;
      set_nonblocking(fd, true);
    }
  }
  close(lfd);

  phase = PH_GO;
  send_msg(probe_fd, MSG_GO, NULL, 0);
  uint64_t t0 = now_ns();
  pthread_t echo;
  if (pthread_create(&echo, NULL, echo_main, &probe_fd) != 0) fail("pthread_create");
  struct recv_result res = {0};
  uint64_t sent = 0;
  if (p.flags & FLAG_REVERSE) {
    send_loop(c, &p, t0);
    for (uint32_t i = 0; i < p.conns; i++) sent += c[i].bytes;
  } else {
    receive_loop(c, &p, t0, true, &res);
  }
  phase = PH_RESULT;
  void* echo_failed;
  pthread_join(echo, &echo_failed);
  if (echo_failed != NULL) return 1;
  if (p.flags & FLAG_REVERSE) {
    send_msg(probe_fd, MSG_RESULT, &sent, 1);
  } else {
    uint64_t fields[] = {res.total, res.window_bytes, res.window_ns, res.conn_min, res.conn_max};
    send_msg(probe_fd, MSG_RESULT, fields, 5);
  }
  if (hold_at_end) hold();
  for (uint32_t i = 0; i < p.conns; i++) close(c[i].fd);
  close(probe_fd);
  free(c);
  return 0;
}

// ---- client ----------------------------------------------------------------------------------

// Connects, sends the header and waits for the server's one-byte acknowledgement: one
// connection at a time, so that 1024 of them never overflow the listen backlog (a dropped
// SYN costs a second). `index` 0 is the probe, 1..N the bulk connections.
static int open_connection(const char* host, int port, const uint8_t h[HDR_LEN], uint32_t index) {
  int fd = connect_tcp(host, port);
  if (fd < 0) fail("connect (connection %u): %s", index, strerror(errno));
  uint8_t ack;
  if (!send_all_fd(fd, h, HDR_LEN) || recv_all_fd(fd, &ack, 1) != 1 || ack != 'A')
    fail("connection %u: the server did not acknowledge the header: %s", index,
         errno ? strerror(errno) : "bad answer");
  return fd;
}

static int run_client(const char* host, int port, const struct params* p, uint64_t interval_us,
                      bool hold_at_end) {
  check_nofile(p->conns);
  phase = PH_CONNECT;
  uint64_t t_setup = now_ns();
  uint8_t h[HDR_LEN];
  encode_header(h, KIND_PROBE, p);
  int probe_fd = open_connection(host, port, h, 0);
  set_nodelay(probe_fd);
  struct conn* c = calloc(p->conns, sizeof *c);
  if (c == NULL) fail("out of memory");
  encode_header(h, KIND_BULK, p);
  for (uint32_t i = 0; i < p->conns; i++) {
    c[i].fd = open_connection(host, port, h, i + 1);
    set_nonblocking(c[i].fd, true);
  }

  phase = PH_GO;
  uint8_t m[MSG_LEN];
  recv_msg(probe_fd, MSG_GO, m);
  uint64_t t0 = now_ns();
  double setup_s = (double)(t0 - t_setup) / 1e9;
  struct probe pr = {.fd = probe_fd, .interval_ns = interval_us * 1000u};
  atomic_init(&pr.stop, false);
  pthread_t prober;
  if (pthread_create(&prober, NULL, probe_main, &pr) != 0) fail("pthread_create");

  bool reverse = (p->flags & FLAG_REVERSE) != 0;
  struct recv_result res = {0};
  uint64_t sent = 0;
  if (reverse) {
    receive_loop(c, p, t0, false, &res);
  } else {
    send_loop(c, p, t0);
    collect_counts(c, p);
    for (uint32_t i = 0; i < p->conns; i++) sent += c[i].bytes;
  }
  atomic_store(&pr.stop, true);
  pthread_join(prober, NULL);
  if (pr.failed) return 1;

  phase = PH_RESULT;
  send_msg(probe_fd, MSG_END, NULL, 0);
  recv_msg(probe_fd, MSG_RESULT, m);
  if (reverse) {
    if (get_be64(m + 8) != res.total)
      fail("the server sent %llu bytes, the client received %llu",
           (unsigned long long)get_be64(m + 8), (unsigned long long)res.total);
  } else {
    res = (struct recv_result){.total = get_be64(m + 8),
                               .window_bytes = get_be64(m + 16),
                               .window_ns = get_be64(m + 24),
                               .conn_min = get_be64(m + 32),
                               .conn_max = get_be64(m + 40)};
    if (res.total != sent)
      fail("the server received %llu bytes in all, the client sent %llu",
           (unsigned long long)res.total, (unsigned long long)sent);
  }

  qsort(pr.rtt, pr.count, sizeof *pr.rtt, cmp_u64);
  double secs = (double)res.window_ns / 1e9;
  printf(
      "{\"conns\":%u,\"reverse\":%s,\"consumer\":\"%s\",\"size\":%u,\"bytes\":%llu,"
      "\"seconds\":%.3f,\"gbit_per_s\":%.3f,\"total_bytes\":%llu,\"conn_bytes_min\":%llu,"
      "\"conn_bytes_max\":%llu,\"setup_seconds\":%.3f",
      p->conns, reverse ? "true" : "false", (p->flags & FLAG_SLOW) ? "slow" : "fast", p->size,
      (unsigned long long)res.window_bytes, secs,
      secs > 0 ? (double)res.window_bytes * 8 / secs / 1e9 : 0.0, (unsigned long long)res.total,
      (unsigned long long)res.conn_min, (unsigned long long)res.conn_max, setup_s);
  print_pct("probe_p50_us", pr.rtt, pr.count, 50);
  print_pct("probe_p99_us", pr.rtt, pr.count, 99);
  print_pct("probe_max_us", pr.rtt, pr.count, 100);
  printf(",\"probe_count\":%zu}\n", pr.count);
  fflush(stdout);
  if (hold_at_end) hold();
  for (uint32_t i = 0; i < p->conns; i++) close(c[i].fd);
  close(probe_fd);
  free(c);
  free(pr.rtt);
  return 0;
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
