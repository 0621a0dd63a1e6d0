// procs' blocking I/O: whole reads and writes, the lock-step echo, the pattern streams and
// the duplex exchange that server and threads modes run on each connection; errors are
// kept as text (struct err) for the records.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "procs.h"

bool fail(struct err* e, const char* fmt, ...) {
  if (e->text[0] != '\0') return false;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->text, sizeof e->text, fmt, ap);
  va_end(ap);
  return false;
}

bool write_all(int fd, const void* buf, size_t len, struct err* e) {
  const uint8_t* p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(e, "write: %s", n < 0 ? strerror(errno) : "returned 0");
    p += n;
    len -= (size_t)n;
  }
  return true;
}

// Reads exactly len bytes; EOF first is an error.
bool read_exact(int fd, void* buf, size_t len, struct err* e) {
  uint8_t* p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(e, "read: %s", strerror(errno));
    if (n == 0) return fail(e, "EOF with %zu bytes still expected", len);
    p += n;
    len -= (size_t)n;
  }
  return true;
}

// Echo client step: sends bytes [offset, offset + len) of stream `seed` in chunks and reads
// each chunk back from an echo server, verifying it. Lock-step, so neither side's buffers
// can fill up whatever their size.
bool echo_exchange(int fd, uint64_t seed, uint64_t offset, uint64_t len, struct err* e) {
  static __thread uint8_t out[CHUNK], in[CHUNK];
  for (uint64_t done = 0; done < len;) {
    size_t n = len - done < CHUNK ? (size_t)(len - done) : CHUNK;
    pattern_fill(seed, offset + done, out, n);
    if (!write_all(fd, out, n, e) || !read_exact(fd, in, n, e)) return false;
    size_t bad = pattern_check(seed, offset + done, in, n);
    if (bad != SIZE_MAX)
      return fail(e, "echo mismatch at stream offset %llu",
                  (unsigned long long)(offset + done + bad));
    done += n;
  }
  return true;
}

// Sends `total` bytes of stream `seed` in randomly sized chunks, summing them.
static bool send_stream(int fd, uint64_t seed, uint64_t total, struct rng* rng,
                        struct fletcher* sum, uint64_t* sent, struct err* e) {
  uint8_t* buf = malloc(MAX_CHUNK);
  if (buf == NULL) return fail(e, "out of memory");
  bool ok = true;
  for (uint64_t off = 0; off < total && ok;) {
    size_t n = pick_chunk(rng, 0, MAX_CHUNK);
    if (n > total - off) n = (size_t)(total - off);
    pattern_fill(seed, off, buf, n);
    fletcher_update(sum, buf, n);
    ok = write_all(fd, buf, n, e);
    if (ok) {
      off += n;
      *sent = off;
    }
  }
  free(buf);
  return ok;
}

// Receives stream `seed` to EOF in randomly sized reads, verifying and summing it.
static bool recv_stream(int fd, uint64_t seed, struct rng* rng, struct fletcher* sum,
                        uint64_t* received, struct err* e) {
  uint8_t* buf = malloc(MAX_CHUNK);
  if (buf == NULL) return fail(e, "out of memory");
  bool ok = true;
  for (uint64_t off = 0;;) {
    size_t want = pick_chunk(rng, 0, MAX_CHUNK);
    ssize_t n = read(fd, buf, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ok = fail(e, "read after %llu bytes: %s", (unsigned long long)off, strerror(errno));
      break;
    }
    if (n == 0) break;
    size_t bad = pattern_check(seed, off, buf, (size_t)n);
    if (bad != SIZE_MAX) {
      ok = fail(e, "data mismatch at stream offset %llu", (unsigned long long)(off + bad));
      break;
    }
    fletcher_update(sum, buf, (size_t)n);
    off += (uint64_t)n;
    *received = off;
  }
  free(buf);
  return ok;
}

// A close-on-exec listening socket (the exec tests count every fd they did not open).
int listen_on(const char* bind_addr, int port, bool reuseport, int v6only, int* bound) {
  const struct listen_opts o = {.reuseport = reuseport, .v6only = v6only, .cloexec = true};
  return listen_tcp_opts(bind_addr, port, &o, bound);
}

uint64_t stream_seed(int client_port, bool to_server) {
  return mix64(opt.seed ^ ((uint64_t)client_port << 16) ^ (to_server ? 0xc25 : 0x52c));
}

static void* duplex_sender(void* arg) {
  struct duplex* d = arg;
  if (send_stream(d->fd, d->send_seed, d->bytes, &d->send_rng, &d->sent_sum, &d->sent,
                  &d->send_err) &&
      shutdown(d->fd, SHUT_WR) != 0)
    fail(&d->send_err, "shutdown(SHUT_WR): %s", strerror(errno));
  return NULL;
}

// Runs both halves at once, then reports. `role` and `index` name the record.
void duplex_run(struct duplex* d, const char* role, int index, int client_port) {
  rng_seed(&d->send_rng, d->send_seed ^ 1);
  rng_seed(&d->recv_rng, d->recv_seed ^ 2);
  pthread_t th;
  bool started = pthread_create(&th, NULL, duplex_sender, d) == 0;
  if (!started) fail(&d->send_err, "pthread_create failed");
  recv_stream(d->fd, d->recv_seed, &d->recv_rng, &d->received_sum, &d->received, &d->recv_err);
  if (started) pthread_join(th, NULL);
  struct rec r = {0};
  rec_str(&r, "role", role);
  rec_int(&r, "conn", index);
  rec_int(&r, "client_port", client_port);
  rec_int(&r, "bytes_sent", (long long)d->sent);
  rec_int(&r, "bytes_received", (long long)d->received);
  char hex[32];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)fletcher_value(&d->sent_sum));
  rec_str(&r, "sent_sum", hex);
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)fletcher_value(&d->received_sum));
  rec_str(&r, "received_sum", hex);
  rec_tcp(&r, d->fd);
  struct err e = {{0}};
  if (d->send_err.text[0] != '\0') fail(&e, "send: %s", d->send_err.text);
  if (d->recv_err.text[0] != '\0') fail(&e, "receive: %s", d->recv_err.text);
  if (d->sent != d->bytes)
    fail(&e, "sent %llu of %llu bytes", (unsigned long long)d->sent, (unsigned long long)d->bytes);
  if (close(d->fd) != 0) fail(&e, "close: %s", strerror(errno));
  rec_emit(&r, e.text);
}
