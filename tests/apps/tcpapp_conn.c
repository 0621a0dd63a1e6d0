// tcpapp's connection: its state and JSON record, sends and receives through a randomly
// chosen call each time (write/send/sendto/writev/sendmsg, read/recv/recvfrom/readv/
// recvmsg), and the verified pattern streams.
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tcpapp.h"

static const char* const mode_names[] = {"sink", "echo", "source"};
const char kGreeting[sizeof "220 tcpapp ready\r\n"] = "220 tcpapp ready\r\n";
const char kRequest[sizeof "GET\n"] = "GET\n";

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
int failures;

bool fail(struct conn* c, const char* fmt, ...) {
  if (c->error[0] != '\0') return false;  // keep the first error: later ones are fallout
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->error, sizeof c->error, fmt, ap);
  va_end(ap);
  return false;
}

void report(struct conn* c, const struct tcpstats* st) {
  bool ok = c->error[0] == '\0';
  pthread_mutex_lock(&out_lock);
  if (!ok) failures++;
  printf(
      "{\"role\":\"%s\",\"conn\":%d,\"mode\":\"%s\",\"bytes_sent\":%llu,\"bytes_received\":%llu,"
      "\"ok\":%s,\"tcp_bytes_received\":%llu,\"tcp_bytes_acked\":%llu,\"tcp_segs_in\":%u,"
      "\"tcp_segs_out\":%u,\"error\":",
      opt.server ? "server" : "client", c->index, mode_names[opt.mode], (unsigned long long)c->sent,
      (unsigned long long)c->received, ok ? "true" : "false",
      (unsigned long long)st->bytes_received, (unsigned long long)st->bytes_acked, st->segs_in,
      st->segs_out);
  json_string(stdout, ok ? NULL : c->error);
  printf("}\n");
  fflush(stdout);
  pthread_mutex_unlock(&out_lock);
}

// ---- I/O with varied calls ---------------------------------------------------------------

// Splits [buf, buf+len) into three iovecs at random points (some may be empty).
static void split3(struct rng* r, void* buf, size_t len, struct iovec iov[3]) {
  size_t a = (size_t)rng_range(r, 0, len);
  size_t b = (size_t)rng_range(r, 0, len);
  if (a > b) {
    size_t t = a;
    a = b;
    b = t;
  }
  uint8_t* p = buf;
  iov[0] = (struct iovec){p, a};
  iov[1] = (struct iovec){p + a, b - a};
  iov[2] = (struct iovec){p + b, len - b};
}

// Sends all of buf with one randomly chosen call per attempt. Returns false on error.
bool send_all(struct conn* c, const void* buf, size_t len) {
  const uint8_t* p = buf;
  while (len > 0) {
    ssize_t n;
    struct iovec iov[3];
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 3};
    switch (rng_next(&c->rng) % 5) {
      case 0:
        n = write(c->fd, p, len);
        break;
      case 1:
        n = send(c->fd, p, len, 0);
        break;
      case 2:
        n = sendto(c->fd, p, len, 0, NULL, 0);
        break;
      case 3:
        split3(&c->rng, (void*)p, len, iov);
        n = writev(c->fd, iov, 3);
        break;
      default:
        split3(&c->rng, (void*)p, len, iov);
        n = sendmsg(c->fd, &msg, 0);
        break;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return fail(c, "send after %llu bytes: %s", (unsigned long long)c->sent, strerror(errno));
    if (n == 0 || (size_t)n > len) return fail(c, "send returned %zd for %zu bytes", n, len);
    p += n;
    len -= (size_t)n;
    c->sent += (uint64_t)n;
  }
  return true;
}

// One receive of at most len bytes with a randomly chosen call. Returns bytes (0 = EOF) or
// -1 on error (recorded).
ssize_t recv_some(struct conn* c, void* buf, size_t len) {
  for (;;) {
    ssize_t n;
    struct iovec iov[3];
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 3};
    switch (rng_next(&c->rng) % 5) {
      case 0:
        n = read(c->fd, buf, len);
        break;
      case 1:
        n = recv(c->fd, buf, len, 0);
        break;
      case 2:
        n = recvfrom(c->fd, buf, len, 0, NULL, NULL);
        break;
      case 3:
        split3(&c->rng, buf, len, iov);
        n = readv(c->fd, iov, 3);
        break;
      default:
        split3(&c->rng, buf, len, iov);
        n = recvmsg(c->fd, &msg, 0);
        break;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      fail(c, "receive after %llu bytes: %s", (unsigned long long)c->received, strerror(errno));
      return -1;
    }
    if ((size_t)n > len) {
      fail(c, "receive returned %zd for a %zu-byte buffer", n, len);
      return -1;
    }
    c->received += (uint64_t)n;
    return n;
  }
}

// Receives exactly len bytes; EOF before that is an error.
bool recv_exact(struct conn* c, void* buf, size_t len, const char* what) {
  uint8_t* p = buf;
  size_t got = 0;
  while (got < len) {
    ssize_t n = recv_some(c, p + got, len - got);
    if (n < 0) return false;
    if (n == 0) return fail(c, "EOF after %zu of %zu bytes of %s", got, len, what);
    got += (size_t)n;
  }
  return true;
}

bool expect_eof(struct conn* c, const char* when) {
  uint8_t b;
  ssize_t n = recv_some(c, &b, 1);
  if (n < 0) return false;
  if (n > 0) return fail(c, "unexpected byte 0x%02x %s (expected EOF)", b, when);
  return true;
}

// Sends `total` bytes of stream `seed` in random chunks.
bool send_stream(struct conn* c, uint64_t seed, uint64_t total, struct fletcher* sum) {
  uint64_t off = 0;
  while (off < total) {
    size_t n = pick_chunk(&c->rng, opt.chunk, MAX_CHUNK);
    if (n > total - off) n = (size_t)(total - off);
    pattern_fill(seed, off, c->sbuf, n);
    if (sum != NULL) fletcher_update(sum, c->sbuf, n);
    if (!send_all(c, c->sbuf, n)) return false;
    off += n;
  }
  return true;
}

// Receives stream `seed` until `total` bytes (total >= 0) or EOF (total < 0), verifying
// each chunk unless `raw`. Stores the count in *count. `echo_back` sends each chunk back.
bool recv_stream(struct conn* c, uint64_t seed, long long total, bool raw, bool echo_back,
                 struct fletcher* sum, uint64_t* count) {
  uint64_t off = 0;
  for (;;) {
    size_t want = pick_chunk(&c->rng, opt.chunk, MAX_CHUNK);
    if (total >= 0) {
      if (off == (uint64_t)total) break;
      if (want > (uint64_t)total - off) want = (size_t)((uint64_t)total - off);
    }
    ssize_t n = recv_some(c, c->rbuf, want);
    if (n < 0) return false;
    if (n == 0) {
      if (total >= 0)
        return fail(c, "EOF after %llu of %lld bytes", (unsigned long long)off, total);
      break;
    }
    if (!raw) {
      size_t bad = pattern_check(seed, off, c->rbuf, (size_t)n);
      if (bad != SIZE_MAX)
        return fail(c, "data mismatch at stream offset %llu (got 0x%02x)",
                    (unsigned long long)(off + bad), c->rbuf[bad]);
    }
    if (sum != NULL) fletcher_update(sum, c->rbuf, (size_t)n);
    if (echo_back && !send_all(c, c->rbuf, (size_t)n)) return false;
    off += (uint64_t)n;
  }
  *count = off;
  return true;
}

void conn_init(struct conn* c, int fd, int index, int client_port) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
  c->index = index;
  uint64_t conn_seed = mix64(opt.seed ^ ((uint64_t)client_port << 40));
  c->stream_c2s = mix64(conn_seed ^ 0xc25);
  c->stream_s2c = mix64(conn_seed ^ 0x52c);
  rng_seed(&c->rng, conn_seed ^ (opt.server ? 0x5e : 0xc1));
  c->sbuf = malloc(MAX_CHUNK);
  c->rbuf = malloc(MAX_CHUNK);
}

void conn_finish(struct conn* c) {
  struct tcpstats st = tcp_stats(c->fd);
  if (close(c->fd) != 0) fail(c, "close: %s", strerror(errno));
  report(c, &st);
  free(c->sbuf);
  free(c->rbuf);
}
