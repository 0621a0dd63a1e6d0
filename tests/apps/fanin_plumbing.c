// fanin's plumbing: fatal errors, socket and fd-limit settings, clocks, the probe
// connection's messages and the 32-byte header every connection starts with.
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fanin.h"

static const char kMagic[8] = {'F', 'A', 'N', 'I', 'N', '0', '0', '1'};

// What the process is doing, for the timeout message.
volatile sig_atomic_t phase = PH_SETUP;

void fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fanin: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

void set_nodelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    fail("TCP_NODELAY: %s", strerror(errno));
}
void set_nonblocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) != 0)
    fail("fcntl O_NONBLOCK: %s", strerror(errno));
}

// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
rlim_t raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) fail("getrlimit: %s", strerror(errno));
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0)
      fail("raising RLIMIT_NOFILE: %s", strerror(errno));
  }
  return rl.rlim_cur;
}
void check_nofile(uint32_t conns) {
  rlim_t limit = raise_nofile();
  if (limit != RLIM_INFINITY && (rlim_t)conns + SPARE_FDS > limit)
    fail("%u connections need more file descriptors than RLIMIT_NOFILE allows (%llu)", conns,
         (unsigned long long)limit);
}

// epoll_wait's timeout (ms, rounded up, at least 1) until monotonic time `t` > now.
int ms_until(uint64_t t, uint64_t now) {
  uint64_t ms = (t - now + 999999) / 1000000;
  return ms > 1000000 ? 1000000 : (int)ms;
}

void spin_ns(uint64_t ns) {
  uint64_t until = now_ns() + ns;
  while (now_ns() < until) {
  }
}

void sleep_until(uint64_t t) {
  struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

void send_msg(int fd, uint32_t type, const uint64_t* fields, int nfields) {
  uint8_t m[MSG_LEN] = {0};
  put_be32(m, type);
  for (int i = 0; i < nfields; i++) put_be64(m + 8 + 8 * i, fields[i]);
  if (!send_all_fd(fd, m, sizeof m)) fail("probe connection: send: %s", strerror(errno));
}
void recv_msg(int fd, uint32_t type, uint8_t m[MSG_LEN]) {
  int r = recv_all_fd(fd, m, MSG_LEN);
  if (r != 1) fail("probe connection: %s", r == 0 ? "closed by the peer" : strerror(errno));
  if (get_be32(m) != type) fail("probe connection: message %u, expected %u", get_be32(m), type);
}

void encode_header(uint8_t h[HDR_LEN], enum kind kind, const struct params* p) {
  memcpy(h, kMagic, sizeof kMagic);
  put_be32(h + 8, kind);
  put_be32(h + 12, p->flags);
  put_be32(h + 16, p->conns);
  put_be32(h + 20, p->size);
  put_be32(h + 24, p->millis);
  put_be32(h + 28, p->work_ns_per_kib);
}
// Returns the kind, or 0 if the header is not a valid one.
int decode_header(const uint8_t h[HDR_LEN], struct params* p) {
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
void hold(void) {
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
