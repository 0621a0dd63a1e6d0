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
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "apputil.h"

enum mode { MODE_SINK, MODE_ECHO, MODE_SOURCE };
static const char* const mode_names[] = {"sink", "echo", "source"};

static const char kGreeting[] = "220 tcpapp ready\r\n";
#define GREETING_LEN (sizeof kGreeting - 1)
#define MAX_CHUNK (1u << 20)

struct options {
  bool server;
  const char* host;
  const char* bind;
  int port;
  enum mode mode;
  long long bytes;  // -1: not given
  int conns;
  int parallel;
  bool concurrent;
  size_t chunk;  // 0: random
  uint64_t seed;
  bool write_first;
  bool half_close;
  bool raw;
  const char* dump;
  unsigned timeout;
  bool hold;
};
static struct options opt = {.bytes = -1, .conns = 1, .parallel = 1, .seed = 1, .timeout = 120};

// ---- per-connection state and reporting --------------------------------------------------

struct conn {
  int fd;
  int index;
  uint64_t stream_c2s, stream_s2c;  // pattern seeds of both directions
  struct rng rng;                   // chunk sizes and call choices
  uint64_t sent, received;
  char error[256];
  uint8_t* sbuf;
  uint8_t* rbuf;
};

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static int failures;

static bool fail(struct conn* c, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(struct conn* c, const char* fmt, ...) {
  if (c->error[0] != '\0') return false;  // keep the first error: later ones are fallout
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->error, sizeof c->error, fmt, ap);
  va_end(ap);
  return false;
}

static void report(struct conn* c, const struct tcpstats* st) {
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
static bool send_all(struct conn* c, const void* buf, size_t len) {
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
static ssize_t recv_some(struct conn* c, void* buf, size_t len) {
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
static bool recv_exact(struct conn* c, void* buf, size_t len, const char* what) {
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

static bool expect_eof(struct conn* c, const char* when) {
  uint8_t b;
  ssize_t n = recv_some(c, &b, 1);
  if (n < 0) return false;
  if (n > 0) return fail(c, "unexpected byte 0x%02x %s (expected EOF)", b, when);
  return true;
}

// Sends `total` bytes of stream `seed` in random chunks.
static bool send_stream(struct conn* c, uint64_t seed, uint64_t total, struct fletcher* sum) {
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
static bool recv_stream(struct conn* c, uint64_t seed, long long total, bool raw, bool echo_back,
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

// ---- server ------------------------------------------------------------------------------

static const char kRequest[] = "GET\n";  // source mode: what the client asks first

static bool serve(struct conn* c) {
  if (opt.write_first && !send_all(c, kGreeting, GREETING_LEN)) return false;
  uint64_t count = 0;
  switch (opt.mode) {
    case MODE_SINK: {
      struct fletcher sum = {0, 0};
      if (!recv_stream(c, c->stream_c2s, opt.bytes, opt.raw, false, &sum, &count)) return false;
      uint8_t reply[16];
      put_be64(reply, count);
      put_be64(reply + 8, fletcher_value(&sum));
      if (!send_all(c, reply, sizeof reply)) return false;
      // With a known length the client's EOF (half-close or close) must follow the data.
      if (opt.bytes >= 0) return expect_eof(c, "after the sink data");
      return true;
    }
    case MODE_ECHO:
      if (!recv_stream(c, c->stream_c2s, -1, opt.raw, true, NULL, &count)) return false;
      if (opt.bytes >= 0 && count != (uint64_t)opt.bytes)
        return fail(c, "echoed %llu bytes, expected %lld", (unsigned long long)count, opt.bytes);
      return true;
    case MODE_SOURCE: {
      char request[sizeof kRequest - 1];
      if (!recv_exact(c, request, sizeof request, "the request")) return false;
      if (memcmp(request, kRequest, sizeof request) != 0) return fail(c, "wrong request");
      return send_stream(c, c->stream_s2c, (uint64_t)opt.bytes, NULL);
    }
  }
  return false;
}

// ---- client ------------------------------------------------------------------------------

struct echo_sender {
  struct conn* c;
  struct conn tx;  // the sending thread's own counters and rng
};

static void* echo_send_thread(void* arg) {
  struct echo_sender* es = arg;
  if (!send_stream(&es->tx, es->c->stream_c2s, (uint64_t)opt.bytes, NULL)) {
    shutdown(es->tx.fd, SHUT_RDWR);  // the reader would otherwise wait for the echo forever
    return NULL;
  }
  if (opt.half_close && shutdown(es->tx.fd, SHUT_WR) != 0)
    fail(&es->tx, "shutdown(SHUT_WR): %s", strerror(errno));
  return NULL;
}

static bool dump_stream(struct conn* c) {
  FILE* f = fopen(opt.dump, "wb");
  if (f == NULL) return fail(c, "cannot open %s: %s", opt.dump, strerror(errno));
  for (;;) {
    ssize_t n = recv_some(c, c->rbuf, MAX_CHUNK);
    if (n < 0) break;
    if (n == 0) break;
    if (fwrite(c->rbuf, 1, (size_t)n, f) != (size_t)n) fail(c, "write to %s failed", opt.dump);
  }
  if (fclose(f) != 0) fail(c, "closing %s failed", opt.dump);
  return c->error[0] == '\0';
}

static bool run_client(struct conn* c) {
  if (opt.write_first) {
    char greet[GREETING_LEN];
    if (!recv_exact(c, greet, GREETING_LEN, "the greeting")) return false;
    if (memcmp(greet, kGreeting, GREETING_LEN) != 0) return fail(c, "wrong greeting");
  }
  uint64_t count = 0;
  switch (opt.mode) {
    case MODE_SINK: {
      struct fletcher sum = {0, 0};
      if (!send_stream(c, c->stream_c2s, (uint64_t)opt.bytes, &sum)) return false;
      if (opt.half_close && shutdown(c->fd, SHUT_WR) != 0)
        return fail(c, "shutdown(SHUT_WR): %s", strerror(errno));
      uint8_t reply[16];
      if (!recv_exact(c, reply, sizeof reply, "the sink reply")) return false;
      if (get_be64(reply) != (uint64_t)opt.bytes)
        return fail(c, "server counted %llu bytes, sent %lld", (unsigned long long)get_be64(reply),
                    opt.bytes);
      if (get_be64(reply + 8) != fletcher_value(&sum))
        return fail(c, "server checksum %016llx differs from ours %016llx",
                    (unsigned long long)get_be64(reply + 8),
                    (unsigned long long)fletcher_value(&sum));
      // After a half-close the server closes once it has replied.
      if (opt.half_close) return expect_eof(c, "after the sink reply");
      return true;
    }
    case MODE_ECHO: {
      struct echo_sender es = {.c = c, .tx = *c};
      es.tx.error[0] = '\0';
      es.tx.sent = 0;
      es.tx.received = 0;
      rng_seed(&es.tx.rng, rng_next(&c->rng));
      pthread_t th;
      if (pthread_create(&th, NULL, echo_send_thread, &es) != 0)
        return fail(c, "pthread_create failed");
      bool ok = recv_stream(c, c->stream_c2s, opt.bytes, false, false, NULL, &count);
      if (ok && opt.half_close) ok = expect_eof(c, "after the echo");
      if (!ok) shutdown(c->fd, SHUT_RDWR);  // unblock the sender
      pthread_join(th, NULL);
      c->sent = es.tx.sent;
      if (es.tx.error[0] != '\0' && c->error[0] == '\0') memcpy(c->error, es.tx.error, 256);
      return ok && c->error[0] == '\0';
    }
    case MODE_SOURCE:
      if (!send_all(c, kRequest, sizeof kRequest - 1)) return false;
      if (opt.dump != NULL) return dump_stream(c);
      return recv_stream(c, c->stream_s2c, -1, false, false, NULL, &count) &&
             (count == (uint64_t)opt.bytes ||
              fail(c, "received %llu bytes before EOF, expected %lld", (unsigned long long)count,
                   opt.bytes));
  }
  return false;
}

// ---- connection setup ----------------------------------------------------------------------

static void conn_init(struct conn* c, int fd, int index, int client_port) {
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

static void conn_finish(struct conn* c) {
  struct tcpstats st = tcp_stats(c->fd);
  if (close(c->fd) != 0) fail(c, "close: %s", strerror(errno));
  report(c, &st);
  free(c->sbuf);
  free(c->rbuf);
}

static void server_conn(int fd, int index) {
  struct conn c;
  conn_init(&c, fd, index, peer_port(fd));
  if (c.sbuf == NULL || c.rbuf == NULL)
    fail(&c, "out of memory");
  else
    serve(&c);
  conn_finish(&c);
}

struct server_job {
  int fd, index;
};
static void* server_thread(void* arg) {
  struct server_job* job = arg;
  server_conn(job->fd, job->index);
  return NULL;
}

static int run_server(void) {
  int port = 0;
  int lfd = listen_tcp(opt.bind != NULL ? opt.bind : "127.0.0.1", opt.port, &port);
  if (lfd < 0) return 1;
  fprintf(stderr, "listening %d\n", port);
  fflush(stderr);
  pthread_t* threads = calloc((size_t)opt.conns, sizeof *threads);
  struct server_job* jobs = calloc((size_t)opt.conns, sizeof *jobs);
  int started = 0, accepted = 0;
  for (int i = 0; i < opt.conns; i++) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) {
        i--;
        continue;
      }
      perror("accept");
      break;
    }
    accepted++;
    if (!opt.concurrent) {
      server_conn(fd, i);
      continue;
    }
    jobs[i] = (struct server_job){fd, i};
    if (pthread_create(&threads[i], NULL, server_thread, &jobs[i]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      close(fd);
      accepted--;
      break;
    }
    started++;
  }
  for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
  close(lfd);
  free(threads);
  free(jobs);
  return failures == 0 && accepted == opt.conns ? 0 : 1;
}

struct client_job {
  int first_index;
};
static void* client_thread(void* arg) {
  struct client_job* job = arg;
  for (int i = 0; i < opt.conns; i++) {
    struct conn c;
    int fd = connect_tcp_from(opt.host, opt.port, opt.bind);
    if (fd < 0) {
      memset(&c, 0, sizeof c);
      c.index = job->first_index + i;
      fail(&c, "connect to %s:%d: %s", opt.host, opt.port, strerror(errno));
      struct tcpstats st = {0};
      report(&c, &st);
      continue;
    }
    conn_init(&c, fd, job->first_index + i, local_port(fd));
    if (c.sbuf == NULL || c.rbuf == NULL)
      fail(&c, "out of memory");
    else
      run_client(&c);
    conn_finish(&c);
  }
  return NULL;
}

static int run_clients(void) {
  pthread_t threads[256];
  struct client_job jobs[256];
  for (int t = 0; t < opt.parallel; t++) {
    jobs[t].first_index = t * opt.conns;
    if (opt.parallel == 1) {
      client_thread(&jobs[t]);
      return failures == 0 ? 0 : 1;
    }
    if (pthread_create(&threads[t], NULL, client_thread, &jobs[t]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 1;
    }
  }
  for (int t = 0; t < opt.parallel; t++) pthread_join(threads[t], NULL);
  return failures == 0 ? 0 : 1;
}

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
