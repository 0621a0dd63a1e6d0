// procs: process, thread and socket-edge behaviours of an ordinary TCP application, for
// tests/integration/test_processes.py. Like the other apps it knows nothing of smcpre; the
// tests run it with and without the preload and compare.
//
//   procs server --port P [--bind ADDR] [--mode echo|duplex] [--bytes N] [--conns K]
//                [--reuseport] [--daemon --out FILE --log FILE --port-file FILE
//                [--listen-first]]
//       Serves connections, one thread each: echo (raw: sends back what it reads, until
//       EOF) or duplex (once the client's first bytes are there, sends N bytes of its own
//       stream, then SHUT_WR, while it reads and verifies the client's stream to EOF). --conns K:
//       exit after K connections; 0 (the default): serve until SIGTERM, then close the listener and
//       finish the connections.
//       --daemon: daemon(1, 0), then stdout to --out and stderr to --log (so smcpre's log
//       lands there); "<port> <pid>" goes to --port-file. --listen-first listens before
//       daemon() (as nginx does, so the listener crosses a fork), else after (as redis).
//   procs exec-client --host H --port P --bytes N [--keep-open]
//       Echoes N bytes, checks that every fd it did not open itself (smcpre's internal fds)
//       is FD_CLOEXEC, then execs itself; the new image checks that it inherited none of
//       them and echoes N bytes on a new connection. --keep-open: the first connection is
//       left open across exec (its CLOEXEC socket vanishes, as with a crash).
//   procs vfork --host H --port P --bytes N [--child exec|exit]
//       Echoes N/2 bytes, vfork()s a child that writes a flag, closes the connection's fd
//       and dup2()s another file onto it, then execs /bin/true (or _exits); the parent
//       checks the flag (vfork shared its memory: not a fork) and echoes the other half.
//   procs threads --host H --port P --bytes N [--threads T] [--conns M]
//       Client of `server --mode duplex`: T threads connect M sockets each; every socket
//       has a sending and a receiving thread at once (full duplex on one fd).
//   procs shutdown --how rd|wr|rdwr --side client|server
//       Both ends in one process: shutdown() on one end (A) while the other (B) keeps
//       writing; one JSON record per step (return values, errno, EOF, poll revents,
//       SIGPIPE count), to be compared with a plain-TCP run.
//   procs xthread --op send|recv|accept|connect --act shut_rd|shut_wr|shut_rdwr|close
//       One thread blocks in the call (send: the peer does not read; recv: nothing comes;
//       accept: nobody connects; connect: the listener's queue is full) while another
//       thread shuts the socket down or closes it. One JSON record: whether the call was
//       blocked, whether the act woke it within 3 s and with what result, and what it
//       returned once the peer side let it go (or "stuck"); compared with a plain-TCP run.
//   procs addrs --listen ADDR --connect ADDR [--bytes N]
//       Both ends in one process: getsockname/getpeername/accept addresses of both ends
//       (ports named L for the listener's, C for the client's), then N bytes echoed.
//   common: [--seed S] [--timeout SECONDS] (default 60; exit 3 when it expires)
//
// Output: JSON lines on stdout; "listening <port>" on stderr from servers. Exit status 0
// only if every record is ok.
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apputil.h"

#define CHUNK (64 * 1024)
#define MAX_CHUNK (1u << 20)

struct options {
  const char* cmd;
  const char* host;
  const char* bind;
  int port;
  const char* mode;
  long long bytes;
  int conns;
  int threads;
  bool reuseport;
  bool daemonize;
  bool listen_first;
  const char* out;
  const char* log;
  const char* port_file;
  bool keep_open;
  int stage;
  const char* inherited;
  const char* child;
  const char* how;
  const char* side;
  const char* op;
  const char* act;
  const char* listen_addr;
  const char* connect_addr;
  uint64_t seed;
  unsigned timeout;
};
static struct options opt = {.mode = "echo",
                             .bytes = -1,
                             .threads = 1,
                             .conns = -1,
                             .child = "exec",
                             .seed = 1,
                             .timeout = 60};

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static int failures;

// ---- JSON records --------------------------------------------------------------------------

// One record under construction; members are appended in order, printed as one line.
struct rec {
  char s[8192];
  size_t n;
};

static void rec_raw(struct rec* r, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void rec_raw(struct rec* r, const char* fmt, ...) {
  if (r->n >= sizeof r->s) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(r->s + r->n, sizeof r->s - r->n, fmt, ap);
  va_end(ap);
  if (k > 0) r->n += (size_t)k;
  if (r->n > sizeof r->s) r->n = sizeof r->s;
}

static void rec_key(struct rec* r, const char* key) {
  rec_raw(r, "%s\"%s\":", r->n == 0 ? "{" : ",", key);
}

// Appends `v` as a JSON string literal, or null.
static void rec_quoted(struct rec* r, const char* v) {
  if (v == NULL) {
    rec_raw(r, "null");
    return;
  }
  rec_raw(r, "\"");
  for (const unsigned char* c = (const unsigned char*)v; *c; c++) {
    if (*c == '"' || *c == '\\')
      rec_raw(r, "\\%c", *c);
    else if (*c < 0x20)
      rec_raw(r, "\\u%04x", *c);
    else
      rec_raw(r, "%c", *c);
  }
  rec_raw(r, "\"");
}

static void rec_str(struct rec* r, const char* key, const char* v) {
  rec_key(r, key);
  rec_quoted(r, v);
}

static void rec_int(struct rec* r, const char* key, long long v) {
  rec_key(r, key);
  rec_raw(r, "%lld", v);
}

static void rec_bool(struct rec* r, const char* key, bool v) {
  rec_key(r, key);
  rec_raw(r, "%s", v ? "true" : "false");
}

static void rec_tcp(struct rec* r, int fd) {
  struct tcpstats st = tcp_stats(fd);
  rec_int(r, "tcp_bytes_received", (long long)st.bytes_received);
  rec_int(r, "tcp_bytes_acked", (long long)st.bytes_acked);
}

// Prints the record with "ok" and "error" (NULL or empty: ok) appended.
static void rec_emit(struct rec* r, const char* error) {
  bool ok = error == NULL || error[0] == '\0';
  rec_bool(r, "ok", ok);
  rec_str(r, "error", ok ? NULL : error);
  pthread_mutex_lock(&out_lock);
  if (!ok) failures++;
  printf("%.*s}\n", (int)r->n, r->s);
  fflush(stdout);
  pthread_mutex_unlock(&out_lock);
}

static const char* errname(int e) {
  const char* s = strerrorname_np(e);
  return s != NULL ? s : "E?";
}

// ---- I/O helpers -----------------------------------------------------------------------

// The first error of an activity, kept as text (later ones are usually fallout).
struct err {
  char text[256];
};

static bool fail(struct err* e, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(struct err* e, const char* fmt, ...) {
  if (e->text[0] != '\0') return false;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->text, sizeof e->text, fmt, ap);
  va_end(ap);
  return false;
}

static bool write_all(int fd, const void* buf, size_t len, struct err* e) {
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
static bool read_exact(int fd, void* buf, size_t len, struct err* e) {
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
static bool echo_exchange(int fd, uint64_t seed, uint64_t offset, uint64_t len, struct err* e) {
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

// ---- addresses and listeners -----------------------------------------------------------------

// A close-on-exec listening socket (the exec tests count every fd they did not open).
static int listen_on(const char* bind_addr, int port, bool reuseport, int v6only, int* bound) {
  const struct listen_opts o = {.reuseport = reuseport, .v6only = v6only, .cloexec = true};
  return listen_tcp_opts(bind_addr, port, &o, bound);
}

// ---- server ------------------------------------------------------------------------------

static volatile sig_atomic_t stop_requested;
static void on_stop(int sig) {
  (void)sig;
  stop_requested = 1;
}

struct served {
  int fd, index;
};

static pthread_mutex_t active_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t active_cond = PTHREAD_COND_INITIALIZER;
static int active;

static uint64_t stream_seed(int client_port, bool to_server) {
  return mix64(opt.seed ^ ((uint64_t)client_port << 16) ^ (to_server ? 0xc25 : 0x52c));
}

// One side of a duplex connection: its sending half runs on a thread of its own.
struct duplex {
  int fd;
  uint64_t send_seed, recv_seed, bytes;
  struct rng send_rng, recv_rng;
  struct fletcher sent_sum, received_sum;
  uint64_t sent, received;
  struct err send_err, recv_err;
};

static void* duplex_sender(void* arg) {
  struct duplex* d = arg;
  if (send_stream(d->fd, d->send_seed, d->bytes, &d->send_rng, &d->sent_sum, &d->sent,
                  &d->send_err) &&
      shutdown(d->fd, SHUT_WR) != 0)
    fail(&d->send_err, "shutdown(SHUT_WR): %s", strerror(errno));
  return NULL;
}

// Runs both halves at once, then reports. `role` and `index` name the record.
static void duplex_run(struct duplex* d, const char* role, int index, int client_port) {
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

static void serve_echo(int fd, int index) {
  static __thread uint8_t buf[CHUNK];
  struct err e = {{0}};
  uint64_t received = 0, sent = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      fail(&e, "read after %llu bytes: %s", (unsigned long long)received, strerror(errno));
      break;
    }
    if (n == 0) break;
    received += (uint64_t)n;
    if (!write_all(fd, buf, (size_t)n, &e)) break;
    sent += (uint64_t)n;
  }
  struct rec r = {0};
  rec_str(&r, "role", "server");
  rec_int(&r, "conn", index);
  rec_int(&r, "pid", getpid());
  rec_int(&r, "client_port", peer_port(fd));
  rec_int(&r, "bytes_sent", (long long)sent);
  rec_int(&r, "bytes_received", (long long)received);
  rec_tcp(&r, fd);
  if (close(fd) != 0) fail(&e, "close: %s", strerror(errno));
  rec_emit(&r, e.text);
}

static void* serve_thread(void* arg) {
  struct served* s = arg;
  if (strcmp(opt.mode, "duplex") == 0) {
    // The client speaks first: a server that wrote before the client's first bytes (an
    // SMC Proposal among them) would keep the connection on TCP, by design.
    char first;
    while (recv(s->fd, &first, 1, MSG_PEEK) < 0 && errno == EINTR) {
    }
    int port = peer_port(s->fd);
    struct duplex* d = calloc(1, sizeof *d);
    if (d != NULL) {
      *d = (struct duplex){.fd = s->fd,
                           .send_seed = stream_seed(port, false),
                           .recv_seed = stream_seed(port, true),
                           .bytes = (uint64_t)opt.bytes};
      duplex_run(d, "server", s->index, port);
      free(d);
    }
  } else {
    serve_echo(s->fd, s->index);
  }
  free(s);
  pthread_mutex_lock(&active_lock);
  active--;
  pthread_cond_broadcast(&active_cond);
  pthread_mutex_unlock(&active_lock);
  return NULL;
}

// daemon(1, 0), then stdout and stderr to the files the test reads.
static bool become_daemon(void) {
  if (daemon(1, 0) != 0) {
    perror("daemon");
    return false;
  }
  int out = open(opt.out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int log = open(opt.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0 || log < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(log, STDERR_FILENO) < 0)
    return false;  // nowhere left to say so: the test sees no port file
  close(out);
  close(log);
  return true;
}

static bool write_port_file(int port) {
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.tmp", opt.port_file);
  FILE* f = fopen(tmp, "w");
  if (f == NULL) return false;
  fprintf(f, "%d %d\n", port, (int)getpid());
  return fclose(f) == 0 && rename(tmp, opt.port_file) == 0;
}

static int run_server(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  if (opt.daemonize && !opt.listen_first && !become_daemon()) return 1;
  int port = 0;
  int lfd =
      listen_on(opt.bind != NULL ? opt.bind : "127.0.0.1", opt.port, opt.reuseport, -1, &port);
  if (lfd < 0) return 1;
  if (opt.daemonize && opt.listen_first && !become_daemon()) return 1;
  fprintf(stderr, "listening %d\n", port);
  fflush(stderr);
  if (opt.daemonize && !write_port_file(port)) {
    fprintf(stderr, "cannot write %s\n", opt.port_file);
    return 1;
  }
  int accepted = 0;
  while (!stop_requested && (opt.conns <= 0 || accepted < opt.conns)) {
    // A bounded wait, so that SIGTERM is noticed even if it lands outside poll().
    struct pollfd p = {lfd, POLLIN, 0};
    int n = poll(&p, 1, 100);
    if (n < 0 && errno != EINTR) {
      perror("poll");
      break;
    }
    if (n <= 0) continue;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      perror("accept4");
      break;
    }
    struct served* s = malloc(sizeof *s);
    pthread_t th;
    if (s == NULL) {
      close(fd);
      break;
    }
    *s = (struct served){fd, accepted++};
    pthread_mutex_lock(&active_lock);
    active++;
    pthread_mutex_unlock(&active_lock);
    if (pthread_create(&th, NULL, serve_thread, s) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      close(fd);
      free(s);
      pthread_mutex_lock(&active_lock);
      active--;
      pthread_mutex_unlock(&active_lock);
      break;
    }
    pthread_detach(th);
  }
  close(lfd);
  fprintf(stderr, "listener closed after %d connections\n", accepted);
  pthread_mutex_lock(&active_lock);
  while (active > 0) pthread_cond_wait(&active_cond, &active_lock);
  pthread_mutex_unlock(&active_lock);
  bool complete = opt.conns <= 0 || accepted == opt.conns;
  return failures == 0 && complete ? 0 : 1;
}

// ---- exec-client -----------------------------------------------------------------------------

#define MAX_FDS 1024

// The open fds of this process, ascending, without the one listing them.
static int list_fds(int* fds, int max) {
  DIR* d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int n = 0;
  struct dirent* de;
  while ((de = readdir(d)) != NULL && n < max) {
    if (de->d_name[0] == '.') continue;
    int fd = atoi(de->d_name);
    if (fd != dirfd(d)) fds[n++] = fd;
  }
  closedir(d);
  for (int i = 1; i < n; i++)  // few entries: insertion sort
    for (int j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
      int t = fds[j];
      fds[j] = fds[j - 1];
      fds[j - 1] = t;
    }
  return n;
}

static bool contains(const int* fds, int n, int fd) {
  for (int i = 0; i < n; i++)
    if (fds[i] == fd) return true;
  return false;
}

// "fd -> target" of an fd, for the records.
static void describe_fd(int fd, char* out, size_t size) {
  char path[64], target[200];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, target, sizeof target - 1);
  target[n > 0 ? n : 0] = '\0';
  snprintf(out, size, "%d->%s", fd, target);
}

// Appends the fds in `fds` (n of them) to the record as a JSON array of descriptions.
static void rec_fd_list(struct rec* r, const char* key, const int* fds, int n) {
  rec_key(r, key);
  rec_raw(r, "[");
  for (int i = 0; i < n; i++) {
    char d[256];
    describe_fd(fds[i], d, sizeof d);
    if (i > 0) rec_raw(r, ",");
    rec_quoted(r, d);
  }
  rec_raw(r, "]");
}

static int exec_client_stage1(char** argv) {
  static int before[MAX_FDS], now[MAX_FDS], internal[MAX_FDS], open_ones[MAX_FDS];
  int nbefore = list_fds(before, MAX_FDS);
  struct err e = {{0}};
  struct rec r = {0};
  rec_str(&r, "role", "client");
  rec_int(&r, "stage", 1);
  int fd = connect_tcp(opt.host, opt.port);
  if (fd < 0 || nbefore < 0) {
    fail(&e, "connect: %s", strerror(errno));
    rec_emit(&r, e.text);
    return 1;
  }
  // Our own socket must not reach the new image either.
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) fail(&e, "F_SETFD: %s", strerror(errno));
  uint64_t seed = stream_seed(local_port(fd), true);
  if (echo_exchange(fd, seed, 0, (uint64_t)opt.bytes, &e)) {
    rec_int(&r, "bytes_sent", opt.bytes);
    rec_int(&r, "bytes_received", opt.bytes);
  } else {
    rec_int(&r, "bytes_sent", 0);
    rec_int(&r, "bytes_received", 0);
  }
  rec_tcp(&r, fd);
  // Every fd that appeared and is not ours belongs to smcpre.
  int nnow = list_fds(now, MAX_FDS), ninternal = 0, nopen = 0;
  for (int i = 0; i < nnow; i++) {
    if (now[i] == fd || contains(before, nbefore, now[i])) continue;
    internal[ninternal++] = now[i];
    int flags = fcntl(now[i], F_GETFD);
    if (flags < 0 || !(flags & FD_CLOEXEC)) open_ones[nopen++] = now[i];
  }
  rec_int(&r, "internal_fds", ninternal);
  rec_fd_list(&r, "internal", internal, ninternal);
  rec_fd_list(&r, "not_cloexec", open_ones, nopen);
  if (nopen > 0) fail(&e, "%d internal fds are not close-on-exec", nopen);
  if (!opt.keep_open && close(fd) != 0) fail(&e, "close: %s", strerror(errno));
  rec_emit(&r, e.text);
  if (e.text[0] != '\0') return 1;

  // The new image learns which fds it may inherit: those this process started with.
  char inherited[4096];
  size_t off = 0;
  inherited[0] = '\0';
  for (int i = 0; i < nbefore && off < sizeof inherited - 16; i++)
    off +=
        (size_t)snprintf(inherited + off, sizeof inherited - off, "%s%d", i ? "," : "", before[i]);
  char port[16], bytes[32], seed_s[32], timeout[16];
  snprintf(port, sizeof port, "%d", opt.port);
  snprintf(bytes, sizeof bytes, "%lld", opt.bytes);
  snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)opt.seed);
  snprintf(timeout, sizeof timeout, "%u", opt.timeout);
  char* args[] = {argv[0],   "exec-client", "--host",      (char*)opt.host, "--port",    port,
                  "--bytes", bytes,         "--seed",      seed_s,          "--timeout", timeout,
                  "--stage", "2",           "--inherited", inherited,       NULL};
  execv("/proc/self/exe", args);
  fprintf(stderr, "execv: %s\n", strerror(errno));
  return 1;
}

static int exec_client_stage2(void) {
  static int now[MAX_FDS], inherited[MAX_FDS], leaked[MAX_FDS];
  // First thing: what this image holds before it opens anything.
  int nnow = list_fds(now, MAX_FDS);
  int ninherited = 0, nleaked = 0;
  for (const char* p = opt.inherited; *p != '\0' && ninherited < MAX_FDS;) {
    inherited[ninherited++] = atoi(p);
    p = strchr(p, ',');
    if (p == NULL) break;
    p++;
  }
  for (int i = 0; i < nnow; i++)
    if (!contains(inherited, ninherited, now[i])) leaked[nleaked++] = now[i];
  struct err e = {{0}};
  struct rec r = {0};
  rec_str(&r, "role", "client");
  rec_int(&r, "stage", 2);
  rec_fd_list(&r, "leaked", leaked, nleaked);
  if (nnow < 0) fail(&e, "cannot list /proc/self/fd");
  if (nleaked > 0) fail(&e, "%d fds of the previous image survived exec", nleaked);
  int fd = connect_tcp(opt.host, opt.port);
  if (fd < 0) {
    fail(&e, "connect: %s", strerror(errno));
    rec_emit(&r, e.text);
    return 1;
  }
  bool ok = echo_exchange(fd, stream_seed(local_port(fd), true), 0, (uint64_t)opt.bytes, &e);
  rec_int(&r, "bytes_sent", ok ? opt.bytes : 0);
  rec_int(&r, "bytes_received", ok ? opt.bytes : 0);
  rec_tcp(&r, fd);
  if (close(fd) != 0) fail(&e, "close: %s", strerror(errno));
  rec_emit(&r, e.text);
  return failures == 0 ? 0 : 1;
}

// ---- vfork -----------------------------------------------------------------------------

// Written by the vfork child, read by the parent: a fork child's write would stay its own.
static volatile int vfork_flag;

static int run_vfork(void) {
  struct err e = {{0}};
  struct rec r = {0};
  rec_str(&r, "role", "client");
  rec_str(&r, "child", opt.child);
  int fd = connect_tcp(opt.host, opt.port);
  int other = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || other < 0) {
    fail(&e, "connect or open: %s", strerror(errno));
    rec_emit(&r, e.text);
    return 1;
  }
  uint64_t seed = stream_seed(local_port(fd), true);
  uint64_t half = (uint64_t)opt.bytes / 2;
  bool ok = echo_exchange(fd, seed, 0, half, &e);
  static const char* const true_argv[] = {"/bin/true", NULL};
  const bool do_exec = strcmp(opt.child, "exec") == 0;
  vfork_flag = 0;
  pid_t pid = ok ? vfork() : -1;
  if (pid == 0) {
    // The child: only what vfork allows (no return, no stdio), on the parent's memory.
    vfork_flag = 1;
    close(fd);
    dup2(other, fd);
    if (do_exec) execv(true_argv[0], (char* const*)true_argv);
    _exit(do_exec ? 127 : 0);
  }
  int status = -1;
  if (pid < 0 && ok) fail(&e, "vfork: %s", strerror(errno));
  if (pid > 0 && waitpid(pid, &status, 0) != pid) fail(&e, "waitpid: %s", strerror(errno));
  rec_bool(&r, "shared_memory", vfork_flag == 1);
  rec_int(&r, "child_status", pid > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  if (pid > 0 && vfork_flag != 1) fail(&e, "the child did not share memory: vfork became fork");
  if (pid > 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    fail(&e, "child status %#x", status);
  // The parent's connection must be as it was.
  if (ok) ok = echo_exchange(fd, seed, half, (uint64_t)opt.bytes - half, &e);
  rec_int(&r, "bytes_sent", ok ? opt.bytes : 0);
  rec_int(&r, "bytes_received", ok ? opt.bytes : 0);
  rec_tcp(&r, fd);
  if (close(fd) != 0) fail(&e, "close: %s", strerror(errno));
  close(other);
  rec_emit(&r, e.text);
  return failures == 0 ? 0 : 1;
}

// ---- threads ---------------------------------------------------------------------------

struct connector {
  int first_index;
};

struct duplex_job {
  struct duplex d;
  int index;
  bool connected;
};

static void* duplex_job_thread(void* arg) {
  struct duplex_job* j = arg;
  duplex_run(&j->d, "client", j->index, local_port(j->d.fd));
  return NULL;
}

static void count_failure(void) {
  pthread_mutex_lock(&out_lock);
  failures++;
  pthread_mutex_unlock(&out_lock);
}

// Connects opt.conns sockets, then runs them all at once (two threads each).
static void* connector_thread(void* arg) {
  struct connector* c = arg;
  struct duplex_job* jobs = calloc((size_t)opt.conns, sizeof *jobs);
  pthread_t* threads = calloc((size_t)opt.conns, sizeof *threads);
  bool* started = calloc((size_t)opt.conns, sizeof *started);
  if (jobs == NULL || threads == NULL || started == NULL) {
    count_failure();
    free(jobs);
    free(threads);
    free(started);
    return NULL;
  }
  for (int i = 0; i < opt.conns; i++) {
    int fd = connect_tcp(opt.host, opt.port);
    if (fd < 0) {
      struct rec r = {0};
      rec_str(&r, "role", "client");
      rec_int(&r, "conn", c->first_index + i);
      char text[128];
      snprintf(text, sizeof text, "connect: %s", strerror(errno));
      rec_emit(&r, text);
      continue;
    }
    int port = local_port(fd);
    jobs[i] = (struct duplex_job){.d = {.fd = fd,
                                        .send_seed = stream_seed(port, true),
                                        .recv_seed = stream_seed(port, false),
                                        .bytes = (uint64_t)opt.bytes},
                                  .index = c->first_index + i,
                                  .connected = true};
  }
  for (int i = 0; i < opt.conns; i++) {
    if (!jobs[i].connected) continue;
    started[i] = pthread_create(&threads[i], NULL, duplex_job_thread, &jobs[i]) == 0;
    if (!started[i]) {
      close(jobs[i].d.fd);
      count_failure();
    }
  }
  for (int i = 0; i < opt.conns; i++)
    if (started[i]) pthread_join(threads[i], NULL);
  free(jobs);
  free(threads);
  free(started);
  return NULL;
}

static int run_threads(void) {
  pthread_t th[64];
  struct connector cs[64];
  int started = 0;
  for (int t = 0; t < opt.threads; t++) {
    cs[t] = (struct connector){.first_index = t * opt.conns};
    if (pthread_create(&th[t], NULL, connector_thread, &cs[t]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      failures++;
      break;
    }
    started++;
  }
  for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
  return failures == 0 ? 0 : 1;
}

// ---- both ends in one process ------------------------------------------------------------

// A connection whose two ends both belong to this process. The client's connect() waits
// for the SMC handshake, which the server side runs on its first read: so the accepting
// end lives on a thread of its own until the first bytes have crossed both ways.
struct pair {
  int listen_fd, listen_port;
  int client_fd, server_fd;
  struct sockaddr_storage accepted_from;
  socklen_t accepted_len;
  struct err err;
};

static const char kHello[] = "hello", kWorld[] = "world";

static void* pair_accept_thread(void* arg) {
  struct pair* p = arg;
  p->accepted_len = sizeof p->accepted_from;
  p->server_fd =
      accept4(p->listen_fd, (struct sockaddr*)&p->accepted_from, &p->accepted_len, SOCK_CLOEXEC);
  if (p->server_fd < 0) {
    fail(&p->err, "accept: %s", strerror(errno));
    return NULL;
  }
  char buf[sizeof kHello - 1];
  if (read_exact(p->server_fd, buf, sizeof buf, &p->err) && memcmp(buf, kHello, sizeof buf) != 0)
    fail(&p->err, "server: wrong greeting");
  write_all(p->server_fd, kWorld, sizeof kWorld - 1, &p->err);
  return NULL;
}

// Listens on listen_addr (a "::" listener accepts IPv4 too: IPV6_V6ONLY off), connects
// from connect_addr's family and exchanges a greeting each way.
static bool pair_open(struct pair* p, const char* listen_addr, const char* connect_addr) {
  memset(p, 0, sizeof *p);
  p->client_fd = p->server_fd = -1;
  p->listen_fd = listen_on(listen_addr, 0, false, 0, &p->listen_port);
  if (p->listen_fd < 0) return fail(&p->err, "cannot listen on %s", listen_addr);
  pthread_t th;
  if (pthread_create(&th, NULL, pair_accept_thread, p) != 0)
    return fail(&p->err, "pthread_create failed");
  struct err e = {{0}};
  p->client_fd = connect_tcp(connect_addr, p->listen_port);
  if (p->client_fd < 0) {
    fail(&e, "connect to %s: %s", connect_addr, strerror(errno));
  } else {
    char buf[sizeof kWorld - 1];
    if (write_all(p->client_fd, kHello, sizeof kHello - 1, &e) &&
        read_exact(p->client_fd, buf, sizeof buf, &e) && memcmp(buf, kWorld, sizeof buf) != 0)
      fail(&e, "client: wrong greeting");
  }
  if (e.text[0] != '\0' && p->client_fd >= 0) shutdown(p->client_fd, SHUT_RDWR);
  pthread_join(th, NULL);
  if (e.text[0] != '\0') fail(&p->err, "%s", e.text);
  return p->err.text[0] == '\0';
}

// ---- shutdown --------------------------------------------------------------------------

static volatile sig_atomic_t sigpipes;
static void on_sigpipe(int sig) {
  (void)sig;
  sigpipes++;
}

static int step_no;

// One step of the shutdown run: what was done and what came of it.
static void step(const char* what, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void step(const char* what, const char* fmt, ...) {
  char result[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(result, sizeof result, fmt, ap);
  va_end(ap);
  struct rec r = {0};
  rec_str(&r, "role", "step");
  rec_int(&r, "step", ++step_no);
  rec_str(&r, "what", what);
  rec_str(&r, "result", result);
  rec_emit(&r, NULL);
}

static const char* revents_text(int rc, short revents) {
  static char text[128];
  if (rc < 0) {
    snprintf(text, sizeof text, "poll failed: %s", errname(errno));
    return text;
  }
  static const struct {
    short bit;
    const char* name;
  } names[] = {{POLLIN, "IN"},   {POLLPRI, "PRI"},     {POLLOUT, "OUT"},  {POLLERR, "ERR"},
               {POLLHUP, "HUP"}, {POLLRDHUP, "RDHUP"}, {POLLNVAL, "NVAL"}};
  text[0] = '\0';
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (revents & names[i].bit)
      snprintf(text + strlen(text), sizeof text - strlen(text), "%s%s", text[0] ? "|" : "",
               names[i].name);
  if (text[0] == '\0') snprintf(text, sizeof text, "none");
  return text;
}

// The readiness of `fd` right now (IN, OUT, RDHUP asked; ERR and HUP always reported).
static void step_poll(const char* what, int fd) {
  struct pollfd p = {fd, POLLIN | POLLOUT | POLLRDHUP, 0};
  int rc = poll(&p, 1, 0);
  step(what, "%s", revents_text(rc, p.revents));
}

// Waits (bounded) for `events` on `fd`: the peer's shutdown or reset travels over the
// network; a wait that times out is a result, compared like any other.
static void step_wait(const char* what, int fd, short events) {
  struct pollfd p = {fd, events, 0};
  int rc = poll(&p, 1, 3000);
  step(what, "%s", rc == 0 ? "timeout" : revents_text(rc, p.revents));
}

static void step_rc(const char* what, ssize_t rc, int saved_errno, int pipes_before) {
  if (rc < 0)
    step(what, "-1 %s sigpipe=%d", errname(saved_errno), (int)sigpipes - pipes_before);
  else
    step(what, "%zd sigpipe=%d", rc, (int)sigpipes - pipes_before);
}

static void step_send(const char* what, int fd, size_t len, int flags) {
  static uint8_t buf[CHUNK];
  memset(buf, 'x', len);
  int before = sigpipes;
  ssize_t rc = send(fd, buf, len, flags);
  step_rc(what, rc, errno, before);
}

static void step_write(const char* what, int fd) {
  int before = sigpipes;
  ssize_t rc = write(fd, "x", 1);
  step_rc(what, rc, errno, before);
}

static void step_recv(const char* what, int fd, int flags) {
  static uint8_t buf[CHUNK];
  int before = sigpipes;
  ssize_t rc = recv(fd, buf, sizeof buf, flags);
  step_rc(what, rc, errno, before);
}

static void step_so_error(const char* what, int fd) {
  int v = -1;
  socklen_t len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &len) != 0)
    step(what, "getsockopt failed: %s", errname(errno));
  else
    step(what, "%s", v == 0 ? "0" : errname(v));
}

static void step_shutdown(const char* what, int fd, int how) {
  int rc = shutdown(fd, how);
  step(what, "%s", rc == 0 ? "0" : errname(errno));
}

// Waits until `fd` has `want` bytes queued (FIONREAD), at most 3 s; reports the count.
static void step_fionread(const char* what, int fd, int want) {
  int n = -1;
  uint64_t deadline = now_ns() + 3000000000ULL;
  while (ioctl(fd, FIONREAD, &n) == 0 && n < want && now_ns() < deadline) usleep(1000);
  step(what, "%d", n);
}

// B writes `len` pattern bytes while A is shut down for writing only; A reads and
// verifies them: the direction that is still open works.
static void step_stream(const char* what, int from, int to, size_t len) {
  static uint8_t buf[CHUNK];
  struct err e = {{0}};
  pattern_fill(opt.seed, 0, buf, len);
  if (write_all(from, buf, len, &e)) {
    memset(buf, 0, len);
    if (read_exact(to, buf, len, &e) && pattern_check(opt.seed, 0, buf, len) != SIZE_MAX)
      fail(&e, "data mismatch");
  }
  step(what, "%s", e.text[0] ? e.text : "ok");
}

static int run_shutdown(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigpipe;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, NULL);
  struct pair p;
  if (!pair_open(&p, "127.0.0.1", "127.0.0.1")) {
    struct rec r = {0};
    rec_str(&r, "role", "setup");
    rec_emit(&r, p.err.text);
    return 1;
  }
  // A shuts down, B is its peer and keeps writing.
  const bool a_is_client = strcmp(opt.side, "client") == 0;
  const int a = a_is_client ? p.client_fd : p.server_fd;
  const int b = a_is_client ? p.server_fd : p.client_fd;
  // TCP_INFO of both ends before the steps: the proof of the path.
  struct rec r = {0};
  rec_str(&r, "role", "client");
  rec_int(&r, "bytes_sent", sizeof kHello - 1);
  rec_int(&r, "bytes_received", sizeof kWorld - 1);
  rec_tcp(&r, p.client_fd);
  rec_emit(&r, NULL);
  r = (struct rec){0};
  rec_str(&r, "role", "server");
  rec_int(&r, "bytes_sent", sizeof kWorld - 1);
  rec_int(&r, "bytes_received", sizeof kHello - 1);
  rec_tcp(&r, p.server_fd);
  rec_emit(&r, NULL);

  if (strcmp(opt.how, "wr") == 0) {
    step_shutdown("A shutdown(SHUT_WR)", a, SHUT_WR);
    step_poll("A poll", a);
    step_wait("B waits for RDHUP", b, POLLRDHUP);
    step_poll("B poll", b);
    step_recv("B recv(MSG_DONTWAIT)", b, MSG_DONTWAIT);
    step_send("A send(MSG_NOSIGNAL)", a, 1, MSG_NOSIGNAL);
    step_send("A send", a, 1, 0);
    step_write("A write", a);
    step_so_error("A SO_ERROR", a);
    step_stream("B writes 60000, A reads them", b, a, 60000);
    step_poll("A poll after reading", a);
    step_shutdown("B shutdown(SHUT_WR)", b, SHUT_WR);
    step_wait("A waits for RDHUP", a, POLLRDHUP);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_poll("A poll", a);
    step_poll("B poll", b);
    step_send("B send(MSG_NOSIGNAL)", b, 1, MSG_NOSIGNAL);
  } else if (strcmp(opt.how, "rd") == 0) {
    step_shutdown("A shutdown(SHUT_RD)", a, SHUT_RD);
    step_poll("A poll", a);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_poll("B poll", b);
    step_send("B send 1000", b, 1000, 0);
    step_fionread("A FIONREAD once 1000 bytes arrived", a, 1000);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_recv("A recv(MSG_DONTWAIT) again", a, MSG_DONTWAIT);
    step_stream("A writes 60000, B reads them", a, b, 60000);
    step_shutdown("B shutdown(SHUT_WR)", b, SHUT_WR);
    step_wait("A waits for RDHUP", a, POLLRDHUP);
    step_poll("A poll", a);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_so_error("A SO_ERROR", a);
    step_so_error("B SO_ERROR", b);
  } else {
    step_shutdown("A shutdown(SHUT_RDWR)", a, SHUT_RDWR);
    step_poll("A poll", a);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_send("A send(MSG_NOSIGNAL)", a, 1, MSG_NOSIGNAL);
    step_send("A send", a, 1, 0);
    step_wait("B waits for RDHUP", b, POLLRDHUP);
    step_poll("B poll", b);
    step_recv("B recv(MSG_DONTWAIT)", b, MSG_DONTWAIT);
    // Data reaching an end that is shut down for reading (and writing) makes TCP reset
    // the connection: both ends learn of it.
    step_send("B send 1000", b, 1000, 0);
    step_wait("B waits for an error or hangup", b, 0);
    step_poll("B poll", b);
    step_send("B send", b, 1, 0);
    step_send("B send again", b, 1, 0);
    step_recv("B recv(MSG_DONTWAIT)", b, MSG_DONTWAIT);
    step_so_error("B SO_ERROR", b);
    step_poll("A poll", a);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_recv("A recv(MSG_DONTWAIT) again", a, MSG_DONTWAIT);
    step_so_error("A SO_ERROR", a);
  }
  step("close both", "%d %d", close(a), close(b));
  close(p.listen_fd);
  return failures == 0 ? 0 : 1;
}

// ---- cross-thread shutdown and close -----------------------------------------------------

// The call a thread blocks in, and what it returned.
struct blocked_call {
  int fd;  // the socket it blocks on
  const char* op;
  const char* host;
  int port;  // connect: where to
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
  ssize_t rc;
  int err;
  uint64_t done_ns;
};

static void* blocked_call_thread(void* arg) {
  struct blocked_call* b = arg;
  static uint8_t buf[CHUNK];
  ssize_t rc = -1;
  if (strcmp(b->op, "send") == 0) {
    rc = send(b->fd, buf, sizeof buf, MSG_NOSIGNAL);
  } else if (strcmp(b->op, "recv") == 0) {
    rc = recv(b->fd, buf, sizeof buf, 0);
  } else if (strcmp(b->op, "accept") == 0) {
    rc = accept(b->fd, NULL, NULL);
  } else {
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)b->port)};
    inet_pton(AF_INET, b->host, &sin.sin_addr);
    rc = connect(b->fd, (struct sockaddr*)&sin, sizeof sin);
  }
  int e = errno;
  pthread_mutex_lock(&b->lock);
  b->rc = rc;
  b->err = rc < 0 ? e : 0;
  b->done = true;
  b->done_ns = now_ns();
  pthread_cond_broadcast(&b->cond);
  pthread_mutex_unlock(&b->lock);
  return NULL;
}

// Waits up to `ms` for the blocked call to return.
static bool blocked_call_wait(struct blocked_call* b, int ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&b->lock);
  while (!b->done && pthread_cond_timedwait(&b->cond, &b->lock, &until) == 0) {
  }
  bool done = b->done;
  pthread_mutex_unlock(&b->lock);
  return done;
}

// "0", "bytes" (a positive count: its size depends on buffer sizes), "fd" (accept) or the
// errno name: comparable between TCP and SMC.
static const char* blocked_call_result(const struct blocked_call* b) {
  if (b->rc < 0) return errname(b->err);
  if (b->rc == 0) return "0";
  return strcmp(b->op, "accept") == 0 ? "fd" : "bytes";
}

static void set_nonblocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static int run_xthread(void) {
  signal(SIGPIPE, SIG_IGN);
  struct blocked_call b = {.fd = -1, .op = opt.op, .host = "127.0.0.1"};
  pthread_mutex_init(&b.lock, NULL);
  pthread_cond_init(&b.cond, NULL);
  struct rec r = {0};
  rec_str(&r, "role", "xthread");
  rec_str(&r, "op", opt.op);
  rec_str(&r, "act", opt.act);
  struct pair p = {.listen_fd = -1, .client_fd = -1, .server_fd = -1};
  int extra[8], nextra = 0;
  bool connection = strcmp(opt.op, "send") == 0 || strcmp(opt.op, "recv") == 0;
  if (connection) {
    // A connection between two ends of this process; the client end blocks.
    if (!pair_open(&p, "127.0.0.1", "127.0.0.1")) {
      rec_emit(&r, p.err.text);
      return 1;
    }
    rec_tcp(&r, p.client_fd);
    b.fd = p.client_fd;
    if (strcmp(opt.op, "send") == 0) {  // fill every buffer on the way: the next send blocks
      static uint8_t buf[CHUNK];
      set_nonblocking(b.fd, true);
      while (send(b.fd, buf, sizeof buf, MSG_NOSIGNAL) > 0) {
      }
      set_nonblocking(b.fd, false);
    }
  } else {
    p.listen_fd = listen_on("127.0.0.1", 0, false, 0, &p.listen_port);
    if (p.listen_fd < 0) {
      rec_emit(&r, "cannot listen");
      return 1;
    }
    if (strcmp(opt.op, "accept") == 0) {
      b.fd = p.listen_fd;
    } else {
      // A full accept queue (backlog 0 holds one connection): the next SYN is dropped and
      // a blocking connect() waits for its retransmissions.
      listen(p.listen_fd, 0);
      for (nextra = 0; nextra < 2; nextra++) {
        extra[nextra] = socket(AF_INET, SOCK_STREAM, 0);
        set_nonblocking(extra[nextra], true);
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)p.listen_port)};
        inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
        connect(extra[nextra], (struct sockaddr*)&sin, sizeof sin);
      }
      usleep(100000);
      b.fd = socket(AF_INET, SOCK_STREAM, 0);
      b.port = p.listen_port;
    }
  }
  pthread_t th;
  if (pthread_create(&th, NULL, blocked_call_thread, &b) != 0) {
    rec_emit(&r, "pthread_create failed");
    return 1;
  }
  bool blocked = !blocked_call_wait(&b, 500);
  rec_bool(&r, "blocked", blocked);
  const char* act = opt.act;
  int rc = 0;
  uint64_t act_ns = now_ns();
  if (strcmp(act, "close") == 0)
    rc = close(b.fd);
  else
    rc = shutdown(b.fd, strcmp(act, "shut_rd") == 0   ? SHUT_RD
                        : strcmp(act, "shut_wr") == 0 ? SHUT_WR
                                                      : SHUT_RDWR);
  rec_str(&r, "act_result", rc == 0 ? "0" : errname(errno));
  bool woke = blocked && blocked_call_wait(&b, 3000);
  rec_bool(&r, "woke", woke);
  if (woke) {
    rec_str(&r, "result", blocked_call_result(&b));
    rec_bool(&r, "within_3s", b.done_ns - act_ns < 3000000000ULL);
  }
  if (blocked && !woke) {
    // Let it go from the other side: the peer reads everything or ends the connection,
    // the listener gets a client, the full queue is accepted from.
    if (strcmp(opt.op, "send") == 0) {
      set_nonblocking(p.server_fd, true);
      static uint8_t buf[CHUNK];
      uint64_t until = now_ns() + 3000000000ULL;
      while (!blocked_call_wait(&b, 1) && now_ns() < until) {
        while (recv(p.server_fd, buf, sizeof buf, 0) > 0) {
        }
      }
    } else if (strcmp(opt.op, "recv") == 0) {
      shutdown(p.server_fd, SHUT_WR);
    } else if (strcmp(opt.op, "accept") == 0) {
      extra[nextra++] = connect_tcp("127.0.0.1", p.listen_port);
    } else {
      for (int i = 0; i < 2; i++) {
        int fd = accept(p.listen_fd, NULL, NULL);
        if (fd >= 0) extra[nextra++] = fd;
      }
    }
    bool late = blocked_call_wait(&b, 8000);
    rec_str(&r, "late", late ? blocked_call_result(&b) : "stuck");
    if (!late) {
      rec_emit(&r, NULL);
      fflush(stdout);
      _exit(0);  // the thread cannot be joined: leave it behind
    }
  }
  pthread_join(th, NULL);
  rec_emit(&r, NULL);
  for (int i = 0; i < nextra; i++) close(extra[i]);
  if (p.server_fd >= 0) close(p.server_fd);
  if (strcmp(act, "close") != 0 && b.fd >= 0) close(b.fd);
  if (p.listen_fd >= 0 && b.fd != p.listen_fd) close(p.listen_fd);
  return 0;
}

// ---- addresses ---------------------------------------------------------------------------

// "family address port" with the port named: L (the listener's), C (the client's).
static void rec_addr(struct rec* r, const char* key, const struct sockaddr_storage* ss,
                     int listen_port, int client_port) {
  char host[INET6_ADDRSTRLEN] = "?", text[INET6_ADDRSTRLEN + 32];
  int port = 0;
  const char* family = "other";
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in* a = (const struct sockaddr_in*)ss;
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
    family = "inet";
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6* a = (const struct sockaddr_in6*)ss;
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    family = "inet6";
  }
  char portname[16];
  if (port == listen_port)
    snprintf(portname, sizeof portname, "L");
  else if (port == client_port)
    snprintf(portname, sizeof portname, "C");
  else
    snprintf(portname, sizeof portname, "%d", port);
  snprintf(text, sizeof text, "%s %s %s", family, host, portname);
  rec_str(r, key, text);
}

static void rec_names(struct rec* r, const char* prefix, int fd, int listen_port, int client_port) {
  struct sockaddr_storage ss;
  char key[64];
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  snprintf(key, sizeof key, "%s_sockname", prefix);
  if (getsockname(fd, (struct sockaddr*)&ss, &len) == 0)
    rec_addr(r, key, &ss, listen_port, client_port);
  else
    rec_str(r, key, errname(errno));
  len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  snprintf(key, sizeof key, "%s_peername", prefix);
  if (getpeername(fd, (struct sockaddr*)&ss, &len) == 0)
    rec_addr(r, key, &ss, listen_port, client_port);
  else
    rec_str(r, key, errname(errno));
}

struct echo_job {
  int fd;
};
static void* echo_job_thread(void* arg) {
  struct echo_job* j = arg;
  serve_echo(j->fd, 0);
  return NULL;
}

static int run_addrs(void) {
  struct pair p;
  if (!pair_open(&p, opt.listen_addr, opt.connect_addr)) {
    struct rec r = {0};
    rec_str(&r, "role", "setup");
    rec_emit(&r, p.err.text);
    return 1;
  }
  const int cport = local_port(p.client_fd);
  struct rec r = {0};
  rec_str(&r, "role", "names");
  rec_names(&r, "client", p.client_fd, p.listen_port, cport);
  rec_names(&r, "server", p.server_fd, p.listen_port, cport);
  rec_addr(&r, "accepted_from", &p.accepted_from, p.listen_port, cport);
  rec_int(&r, "accepted_len", p.accepted_len);
  rec_names(&r, "listener", p.listen_fd, p.listen_port, cport);
  rec_emit(&r, NULL);
  // Data both ways, then the names once more (nothing may have changed them).
  struct echo_job job = {p.server_fd};
  pthread_t th;
  struct err e = {{0}};
  if (pthread_create(&th, NULL, echo_job_thread, &job) != 0) {
    rec_emit(&r, "pthread_create failed");
    return 1;
  }
  bool ok = echo_exchange(p.client_fd, stream_seed(cport, true), 0, (uint64_t)opt.bytes, &e);
  r = (struct rec){0};
  rec_str(&r, "role", "client");
  rec_int(&r, "bytes_sent", ok ? opt.bytes : 0);
  rec_int(&r, "bytes_received", ok ? opt.bytes : 0);
  rec_tcp(&r, p.client_fd);
  rec_names(&r, "client", p.client_fd, p.listen_port, cport);
  shutdown(p.client_fd, SHUT_WR);  // the echo thread's EOF
  pthread_join(th, NULL);          // it reports the server's end and closes it
  if (close(p.client_fd) != 0) fail(&e, "close: %s", strerror(errno));
  rec_emit(&r, e.text);
  close(p.listen_fd);
  return failures == 0 ? 0 : 1;
}

// ---- command line ------------------------------------------------------------------------

static void usage(void) {
  fprintf(stderr,
          "usage: procs server --port P [--bind ADDR] [--mode echo|duplex] [--bytes N]\n"
          "                    [--conns K] [--reuseport] [--daemon --out F --log F\n"
          "                    --port-file F [--listen-first]]\n"
          "       procs exec-client --host H --port P --bytes N [--keep-open]\n"
          "       procs vfork --host H --port P --bytes N [--child exec|exit]\n"
          "       procs threads --host H --port P --bytes N [--threads T] [--conns M]\n"
          "       procs shutdown --how rd|wr|rdwr --side client|server\n"
          "       procs xthread --op send|recv|accept|connect\n"
          "                     --act shut_rd|shut_wr|shut_rdwr|close\n"
          "       procs addrs --listen ADDR --connect ADDR [--bytes N]\n"
          "       common: [--seed S] [--timeout SECONDS]\n");
  exit(2);
}

static void parse_args(int argc, char** argv) {
  if (argc < 2) usage();
  opt.cmd = argv[1];
  for (int i = 2; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    bool takes = true;
    if (strcmp(a, "--reuseport") == 0) {
      opt.reuseport = true;
      takes = false;
    } else if (strcmp(a, "--daemon") == 0) {
      opt.daemonize = true;
      takes = false;
    } else if (strcmp(a, "--listen-first") == 0) {
      opt.listen_first = true;
      takes = false;
    } else if (strcmp(a, "--keep-open") == 0) {
      opt.keep_open = true;
      takes = false;
    } else if (v == NULL) {
      usage();
    } else if (strcmp(a, "--port") == 0) {
      opt.port = (int)num_arg("procs", a, v, 0, 65535);
    } else if (strcmp(a, "--host") == 0) {
      opt.host = v;
    } else if (strcmp(a, "--bind") == 0) {
      opt.bind = v;
    } else if (strcmp(a, "--mode") == 0) {
      if (strcmp(v, "echo") != 0 && strcmp(v, "duplex") != 0) usage();
      opt.mode = v;
    } else if (strcmp(a, "--bytes") == 0) {
      opt.bytes = num_arg("procs", a, v, 0, 1LL << 40);
    } else if (strcmp(a, "--conns") == 0) {
      opt.conns = (int)num_arg("procs", a, v, 0, 10000);
    } else if (strcmp(a, "--threads") == 0) {
      opt.threads = (int)num_arg("procs", a, v, 1, 64);
    } else if (strcmp(a, "--out") == 0) {
      opt.out = v;
    } else if (strcmp(a, "--log") == 0) {
      opt.log = v;
    } else if (strcmp(a, "--port-file") == 0) {
      opt.port_file = v;
    } else if (strcmp(a, "--stage") == 0) {
      opt.stage = (int)num_arg("procs", a, v, 1, 2);
    } else if (strcmp(a, "--inherited") == 0) {
      opt.inherited = v;
    } else if (strcmp(a, "--child") == 0) {
      if (strcmp(v, "exec") != 0 && strcmp(v, "exit") != 0) usage();
      opt.child = v;
    } else if (strcmp(a, "--how") == 0) {
      if (strcmp(v, "rd") != 0 && strcmp(v, "wr") != 0 && strcmp(v, "rdwr") != 0) usage();
      opt.how = v;
    } else if (strcmp(a, "--side") == 0) {
      if (strcmp(v, "client") != 0 && strcmp(v, "server") != 0) usage();
      opt.side = v;
    } else if (strcmp(a, "--op") == 0) {
      opt.op = v;
    } else if (strcmp(a, "--act") == 0) {
      opt.act = v;
    } else if (strcmp(a, "--listen") == 0) {
      opt.listen_addr = v;
    } else if (strcmp(a, "--connect") == 0) {
      opt.connect_addr = v;
    } else if (strcmp(a, "--seed") == 0) {
      opt.seed = (uint64_t)num_arg("procs", a, v, 0, 1LL << 50);
    } else if (strcmp(a, "--timeout") == 0) {
      opt.timeout = (unsigned)num_arg("procs", a, v, 1, 86400);
    } else {
      usage();
    }
    if (takes) i++;
  }
}

int main(int argc, char** argv) {
  parse_args(argc, argv);
  const char* c = opt.cmd;
  const bool client =
      strcmp(c, "exec-client") == 0 || strcmp(c, "vfork") == 0 || strcmp(c, "threads") == 0;
  if (client && (opt.host == NULL || opt.port == 0 || opt.bytes < 0)) usage();
  if (strcmp(c, "threads") == 0 && opt.conns < 0) opt.conns = 1;
  if (strcmp(c, "threads") == 0 && opt.conns < 1) usage();
  arm_timeout("procs", opt.timeout, NULL);
  if (strcmp(c, "server") == 0) {
    if (opt.daemonize && (opt.out == NULL || opt.log == NULL || opt.port_file == NULL)) usage();
    if (strcmp(opt.mode, "duplex") == 0 && opt.bytes < 0) usage();
    // SIGPIPE stays at its default everywhere but in the shutdown steps (which count it):
    // a peer that vanishes then shows up in the records, not as a silent death.
    signal(SIGPIPE, SIG_IGN);
    return run_server();
  }
  if (strcmp(c, "exec-client") == 0) {
    signal(SIGPIPE, SIG_IGN);
    if (opt.stage == 2) return opt.inherited != NULL ? exec_client_stage2() : 2;
    return exec_client_stage1(argv);
  }
  if (strcmp(c, "vfork") == 0) {
    signal(SIGPIPE, SIG_IGN);
    return run_vfork();
  }
  if (strcmp(c, "threads") == 0) {
    signal(SIGPIPE, SIG_IGN);
    return run_threads();
  }
  if (strcmp(c, "shutdown") == 0) {
    if (opt.how == NULL || opt.side == NULL) usage();
    return run_shutdown();
  }
  if (strcmp(c, "xthread") == 0) {
    if (opt.op == NULL || opt.act == NULL) usage();
    return run_xthread();
  }
  if (strcmp(c, "addrs") == 0) {
    if (opt.listen_addr == NULL || opt.connect_addr == NULL) usage();
    if (opt.bytes < 0) opt.bytes = 256 * 1024;
    signal(SIGPIPE, SIG_IGN);
    return run_addrs();
  }
  usage();
}
