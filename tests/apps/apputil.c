#include "apputil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/tcp.h>  // struct tcp_info with tcpi_bytes_received (glibc's header lacks it)
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void rng_seed(struct rng* r, uint64_t seed) {
  r->state = mix64(seed);
}

uint64_t rng_next(struct rng* r) {
  r->state += 0x9e3779b97f4a7c15ULL;
  return mix64(r->state);
}

uint64_t rng_range(struct rng* r, uint64_t lo, uint64_t hi) {
  return lo + rng_next(r) % (hi - lo + 1);
}

// Word k of stream `seed`; bytes are taken little-endian from it.
static inline uint64_t pattern_word(uint64_t seed, uint64_t k) {
  return mix64(seed ^ mix64(k));
}

void pattern_fill(uint64_t seed, uint64_t offset, void* buf, size_t len) {
  uint8_t* p = buf;
  while (len > 0) {
    uint64_t k = offset >> 3;
    unsigned b = (unsigned)(offset & 7);
    uint64_t w = pattern_word(seed, k) >> (8 * b);
    size_t n = 8 - b;
    if (n > len) n = len;
    for (size_t i = 0; i < n; i++, w >>= 8) p[i] = (uint8_t)w;
    p += n;
    offset += n;
    len -= n;
  }
}

size_t pattern_check(uint64_t seed, uint64_t offset, const void* buf, size_t len) {
  uint8_t expect[4096];
  const uint8_t* p = buf;
  size_t done = 0;
  while (done < len) {
    size_t n = len - done < sizeof expect ? len - done : sizeof expect;
    pattern_fill(seed, offset + done, expect, n);
    if (memcmp(expect, p + done, n) != 0) {
      for (size_t i = 0; i < n; i++)
        if (expect[i] != p[done + i]) return done + i;
    }
    done += n;
  }
  return SIZE_MAX;
}

void fletcher_update(struct fletcher* f, const void* buf, size_t len) {
  const uint8_t* p = buf;
  uint32_t a = f->a, b = f->b;
  for (size_t i = 0; i < len; i++) {
    a += p[i];
    b += a;
  }
  f->a = a;
  f->b = b;
}

uint64_t fletcher_value(const struct fletcher* f) {
  return ((uint64_t)f->b << 32) | f->a;
}

int listen_tcp(const char* bind_addr, int port, int* bound_port) {
  const struct listen_opts defaults = {.reuseport = false, .v6only = -1, .cloexec = false};
  return listen_tcp_opts(bind_addr, port, &defaults, bound_port);
}

int listen_tcp_opts(const char* bind_addr, int port, const struct listen_opts* o, int* bound_port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
  struct addrinfo* res = NULL;
  char portstr[16];
  snprintf(portstr, sizeof portstr, "%d", port);
  int rc = getaddrinfo(bind_addr, portstr, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "bad bind address %s: %s\n", bind_addr, gai_strerror(rc));
    return -1;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | (o->cloexec ? SOCK_CLOEXEC : 0), IPPROTO_TCP);
  int one = 1;
  bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            (!o->reuseport || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0) &&
            (o->v6only < 0 || res->ai_family != AF_INET6 ||
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &o->v6only, sizeof o->v6only) == 0) &&
            bind(fd, res->ai_addr, res->ai_addrlen) == 0 && listen(fd, 128) == 0;
  if (!ok) {
    perror("socket/bind/listen");
    if (fd >= 0) close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) *bound_port = local_port(fd);
  return fd;
}

int connect_tcp(const char* host, int port) {
  return connect_tcp_from(host, port, NULL);
}

int connect_tcp_from(const char* host, int port, const char* source) {
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
  struct addrinfo* res = NULL;
  char portstr[16];
  snprintf(portstr, sizeof portstr, "%d", port);
  int rc = getaddrinfo(host, portstr, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "cannot resolve %s: %s\n", host, gai_strerror(rc));
    errno = EINVAL;
    return -1;
  }
  struct addrinfo* src = NULL;
  if (source != NULL) {
    struct addrinfo shints = {.ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICHOST};
    rc = getaddrinfo(source, NULL, &shints, &src);
    if (rc != 0) {
      fprintf(stderr, "bad source address %s: %s\n", source, gai_strerror(rc));
      freeaddrinfo(res);
      errno = EINVAL;
      return -1;
    }
  }
  int fd = -1, saved = ECONNREFUSED;
  for (struct addrinfo* ai = res; ai != NULL; ai = ai->ai_next) {
    // With a source address only destinations of its family can be reached.
    if (src != NULL && ai->ai_family != src->ai_family) {
      saved = EAFNOSUPPORT;
      continue;
    }
    fd = socket(ai->ai_family, SOCK_STREAM, IPPROTO_TCP);
    if (fd < 0) {
      saved = errno;
      continue;
    }
    if ((src == NULL || bind(fd, src->ai_addr, src->ai_addrlen) == 0) &&
        connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
      break;
    saved = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (src != NULL) freeaddrinfo(src);
  if (fd < 0) errno = saved;
  return fd;
}

static int sockaddr_port(const struct sockaddr_storage* ss) {
  if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in*)ss)->sin_port);
  if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6*)ss)->sin6_port);
  return 0;
}

int local_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr*)&ss, &len) != 0) return 0;
  return sockaddr_port(&ss);
}

int peer_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(fd, (struct sockaddr*)&ss, &len) != 0) return 0;
  return sockaddr_port(&ss);
}

struct tcpstats tcp_stats(int fd) {
  struct tcpstats st = {0};
  struct tcp_info ti;
  memset(&ti, 0, sizeof ti);
  socklen_t len = sizeof ti;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return st;
  // Kernels older than 4.1/4.2 return a shorter struct without these counters.
  if (len < offsetof(struct tcp_info, tcpi_segs_in) + sizeof ti.tcpi_segs_in) return st;
  st.bytes_received = ti.tcpi_bytes_received;
  st.bytes_acked = ti.tcpi_bytes_acked;
  st.segs_in = ti.tcpi_segs_in;
  st.segs_out = ti.tcpi_segs_out;
  st.valid = true;
  return st;
}

long long parse_size(const char* s) {
  char* end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno != 0 || end == s || v < 0) return -1;
  long long mul = 1;
  switch (*end) {
    case '\0':
      break;
    case 'k':
    case 'K':
      mul = 1LL << 10;
      end++;
      break;
    case 'm':
    case 'M':
      mul = 1LL << 20;
      end++;
      break;
    case 'g':
    case 'G':
      mul = 1LL << 30;
      end++;
      break;
    default:
      return -1;
  }
  if (*end != '\0' || v > (1LL << 50) / mul) return -1;
  return v * mul;
}

uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void json_string(FILE* out, const char* s) {
  if (s == NULL) {
    fputs("null", out);
    return;
  }
  fputc('"', out);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(out, "\\%c", c);
    else if (c < 0x20)
      fprintf(out, "\\u%04x", c);
    else
      fputc(c, out);
  }
  fputc('"', out);
}

static const char* timeout_prog = "app";
static unsigned timeout_seconds;
static const char* (*timeout_detail)(void);

static void put_str(const char* s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

static void on_alarm(int sig) {
  (void)sig;
  char num[24];
  int i = (int)sizeof num - 1;
  num[i] = '\0';
  unsigned v = timeout_seconds;
  do {
    num[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0 && i > 0);
  put_str(timeout_prog);
  put_str(": timeout after ");
  put_str(&num[i]);
  put_str(" s");
  if (timeout_detail != NULL) {
    put_str(" in ");
    put_str(timeout_detail());
  }
  put_str(" (a call hung)\n");
  _exit(3);
}

void arm_timeout(const char* prog, unsigned seconds, const char* (*detail)(void)) {
  timeout_prog = prog;
  timeout_seconds = seconds;
  timeout_detail = detail;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, NULL);
  alarm(seconds);
}

void put_be64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

uint64_t get_be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

long long num_arg(const char* prog, const char* name, const char* v, long long lo, long long hi) {
  long long x = parse_size(v);
  if (x < lo || x > hi) {
    fprintf(stderr, "%s: bad value for %s: %s\n", prog, name, v);
    exit(2);
  }
  return x;
}

size_t pick_chunk(struct rng* r, size_t fixed, size_t max) {
  if (fixed != 0) return fixed;
  uint64_t x = rng_next(r) % 16;
  if (x == 0) return (size_t)rng_range(r, 64 * 1024, max);  // occasionally big
  if (x <= 2) return (size_t)rng_range(r, 1, 64);           // some tiny ones
  return (size_t)rng_range(r, 1, 64 * 1024);
}

void put_be32(uint8_t* p, uint32_t v) {
  for (int i = 3; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

uint32_t get_be32(const uint8_t* p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

bool send_all_fd(int fd, const void* buf, size_t len) {
  const uint8_t* p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= (size_t)n;
  }
  return true;
}

int recv_all_fd(int fd, void* buf, size_t len) {
  uint8_t* p = buf;
  size_t got = 0;
  while (got < len) {
    ssize_t n = recv(fd, p + got, len - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) return got == 0 ? 0 : -1;
    got += (size_t)n;
  }
  return 1;
}
