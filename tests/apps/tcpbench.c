// tcpbench: a minimal TCP latency and throughput benchmark (an ordinary TCP program).
//
//   tcpbench server --port P [--bind ADDR] [--conns K]      (K connections, default: forever)
//   tcpbench client --host H --port P --mode pingpong [--size 64] [--iters N] [--warmup W]
//   tcpbench client --host H --port P --mode stream [--size 65536] [--seconds S]
//   common: [--timeout S] (the process exits 3 when it expires; default 120 s for the client,
//           none for the server)
//
// The client opens with a 16-byte header ("TCPBENCH", mode u32, size u32, big-endian) so
// one server serves both modes. pingpong: the client sends `size` bytes, the server sends
// them back; round trips are timed with CLOCK_MONOTONIC after W warm-up round trips
// (default N/10, at least 100) and reported as median/p99/mean. stream: the client writes
// `size`-byte buffers for S seconds, half-closes, and the server replies with the u64 count
// it received; throughput counts from the end of a warm-up (the first tenth of S) until that
// reply arrives, so it measures data delivered, not data queued. Output: one JSON line.
#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "apputil.h"

enum mode { MODE_PINGPONG = 1, MODE_STREAM = 2 };
static const char kMagic[8] = {'T', 'C', 'P', 'B', 'E', 'N', 'C', 'H'};
#define MAX_SIZE (16u << 20)

static void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// ---- server --------------------------------------------------------------------------------

static void serve(int fd, uint8_t* buf) {
  uint8_t hdr[16];
  if (recv_all_fd(fd, hdr, sizeof hdr) != 1 || memcmp(hdr, kMagic, 8) != 0) {
    fprintf(stderr, "tcpbench: bad header from client\n");
    return;
  }
  uint32_t mode = get_be32(hdr + 8), size = get_be32(hdr + 12);
  if (size == 0 || size > MAX_SIZE) {
    fprintf(stderr, "tcpbench: bad size %u\n", size);
    return;
  }
  if (mode == MODE_PINGPONG) {
    set_nodelay(fd);
    int r;
    while ((r = recv_all_fd(fd, buf, size)) == 1)
      if (!send_all_fd(fd, buf, size)) break;
    if (r < 0) fprintf(stderr, "tcpbench: pingpong receive failed: %s\n", strerror(errno));
  } else if (mode == MODE_STREAM) {
    uint64_t total = 0;
    for (;;) {
      ssize_t n = recv(fd, buf, MAX_SIZE, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        fprintf(stderr, "tcpbench: stream receive failed: %s\n", strerror(errno));
        return;
      }
      if (n == 0) break;
      total += (uint64_t)n;
    }
    uint8_t reply[8];
    put_be64(reply, total);
    send_all_fd(fd, reply, sizeof reply);
  } else {
    fprintf(stderr, "tcpbench: bad mode %u\n", mode);
  }
}

static int run_server(const char* bind_addr, int port, long long conns) {
  int bound = 0;
  int lfd = listen_tcp(bind_addr, port, &bound);
  if (lfd < 0) return 1;
  fprintf(stderr, "listening %d\n", bound);
  fflush(stderr);
  uint8_t* buf = malloc(MAX_SIZE);
  if (buf == NULL) return 1;
  for (long long i = 0; conns <= 0 || i < conns; i++) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) continue;
      perror("accept");
      return 1;
    }
    serve(fd, buf);
    close(fd);
  }
  free(buf);
  close(lfd);
  return 0;
}

// ---- client --------------------------------------------------------------------------------

static int cmp_u64(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}

static void print_tcp(int fd) {
  struct tcpstats st = tcp_stats(fd);
  printf(
      ",\"tcp_bytes_received\":%llu,\"tcp_bytes_acked\":%llu,\"tcp_segs_in\":%u,"
      "\"tcp_segs_out\":%u}\n",
      (unsigned long long)st.bytes_received, (unsigned long long)st.bytes_acked, st.segs_in,
      st.segs_out);
}

static int pingpong(int fd, uint8_t* buf, uint32_t size, long long iters, long long warmup) {
  uint64_t* rtt = malloc((size_t)iters * sizeof *rtt);
  if (rtt == NULL) return 1;
  set_nodelay(fd);
  memset(buf, 0x5a, size);
  for (long long i = -warmup; i < iters; i++) {
    uint64_t t0 = now_ns();
    if (!send_all_fd(fd, buf, size) || recv_all_fd(fd, buf, size) != 1) {
      fprintf(stderr, "tcpbench: round trip %lld failed: %s\n", i, strerror(errno));
      return 1;
    }
    if (i >= 0) rtt[i] = now_ns() - t0;
  }
  double sum = 0;
  for (long long i = 0; i < iters; i++) sum += (double)rtt[i];
  qsort(rtt, (size_t)iters, sizeof *rtt, cmp_u64);
  double median = (double)rtt[iters / 2] / 1000.0;
  long long p99i = (iters * 99 + 99) / 100 - 1;
  printf(
      "{\"mode\":\"pingpong\",\"size\":%u,\"iters\":%lld,\"warmup\":%lld,"
      "\"rtt_median_us\":%.3f,\"rtt_p99_us\":%.3f,\"rtt_mean_us\":%.3f,"
      "\"oneway_median_us\":%.3f",
      size, iters, warmup, median, (double)rtt[p99i] / 1000.0, sum / (double)iters / 1000.0,
      median / 2);
  print_tcp(fd);
  free(rtt);
  return 0;
}

static int stream(int fd, uint8_t* buf, uint32_t size, double seconds) {
  memset(buf, 0xa5, size);
  uint64_t duration = (uint64_t)(seconds * 1e9), warm = duration / 10;
  uint64_t start = now_ns(), t_warm = 0, bytes_warm = 0, total = 0, t;
  while ((t = now_ns()) - start < duration) {
    if (t_warm == 0 && t - start >= warm) {
      t_warm = t;
      bytes_warm = total;
    }
    if (!send_all_fd(fd, buf, size)) {
      fprintf(stderr, "tcpbench: send failed: %s\n", strerror(errno));
      return 1;
    }
    total += size;
  }
  if (t_warm == 0) {
    t_warm = start;
    bytes_warm = 0;
  }
  uint8_t reply[8];
  if (shutdown(fd, SHUT_WR) != 0 || recv_all_fd(fd, reply, sizeof reply) != 1) {
    fprintf(stderr, "tcpbench: no count from server: %s\n", strerror(errno));
    return 1;
  }
  uint64_t t_end = now_ns();
  if (get_be64(reply) != total) {
    fprintf(stderr, "tcpbench: server received %llu bytes, client sent %llu\n",
            (unsigned long long)get_be64(reply), (unsigned long long)total);
    return 1;
  }
  double secs = (double)(t_end - t_warm) / 1e9;
  printf("{\"mode\":\"stream\",\"size\":%u,\"seconds\":%.3f,\"bytes\":%llu,\"gbit_s\":%.3f", size,
         secs, (unsigned long long)total, (double)(total - bytes_warm) * 8 / secs / 1e9);
  print_tcp(fd);
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: tcpbench server --port P [--bind ADDR] [--conns K] [--timeout S]\n"
          "       tcpbench client --host H --port P --mode pingpong [--size B] [--iters N]\n"
          "                       [--warmup W] [--timeout S]\n"
          "       tcpbench client --host H --port P --mode stream [--size B] [--seconds S]\n"
          "                       [--timeout S]\n");
  exit(2);
}

int main(int argc, char** argv) {
  if (argc < 2 || (argc % 2) != 0) usage();
  bool server = strcmp(argv[1], "server") == 0;
  if (!server && strcmp(argv[1], "client") != 0) usage();
  const char* host = NULL;
  const char* bind_addr = "127.0.0.1";
  long long port = -1, size = -1, iters = 10000, warmup = -1, conns = 0, timeout = -1;
  double seconds = 3;
  enum mode mode = MODE_PINGPONG;
  for (int i = 2; i < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (strcmp(a, "--port") == 0)
      port = parse_size(v);
    else if (strcmp(a, "--host") == 0)
      host = v;
    else if (strcmp(a, "--bind") == 0)
      bind_addr = v;
    else if (strcmp(a, "--conns") == 0)
      conns = parse_size(v);
    else if (strcmp(a, "--size") == 0)
      size = parse_size(v);
    else if (strcmp(a, "--iters") == 0)
      iters = parse_size(v);
    else if (strcmp(a, "--warmup") == 0)
      warmup = parse_size(v);
    else if (strcmp(a, "--timeout") == 0)
      timeout = parse_size(v);
    else if (strcmp(a, "--seconds") == 0)
      seconds = strtod(v, NULL);
    else if (strcmp(a, "--mode") == 0 && strcmp(v, "pingpong") == 0)
      mode = MODE_PINGPONG;
    else if (strcmp(a, "--mode") == 0 && strcmp(v, "stream") == 0)
      mode = MODE_STREAM;
    else
      usage();
  }
  if (size < 0) size = mode == MODE_PINGPONG ? 64 : 65536;
  if (warmup < 0) warmup = iters / 10 > 100 ? iters / 10 : 100;
  // The client is bounded by default; a server only when asked (it serves until killed).
  if (timeout < 0 && !server) timeout = 120;
  if (port < 0 || port > 65535 || timeout == 0 || size < 1 || size > MAX_SIZE || iters < 1 ||
      !(seconds > 0 && seconds < 3600) || (!server && (host == NULL || port == 0)))
    usage();
  signal(SIGPIPE, SIG_IGN);
  if (timeout > 0) arm_timeout("tcpbench", (unsigned)timeout, NULL);
  if (server) return run_server(bind_addr, (int)port, conns);

  int fd = connect_tcp(host, (int)port);
  if (fd < 0) {
    fprintf(stderr, "tcpbench: connect: %s\n", strerror(errno));
    return 1;
  }
  uint8_t* buf = malloc((size_t)size);
  uint8_t hdr[16];
  memcpy(hdr, kMagic, 8);
  put_be32(hdr + 8, mode);
  put_be32(hdr + 12, (uint32_t)size);
  if (buf == NULL || !send_all_fd(fd, hdr, sizeof hdr)) return 1;
  int rc = mode == MODE_PINGPONG ? pingpong(fd, buf, (uint32_t)size, iters, warmup)
                                 : stream(fd, buf, (uint32_t)size, seconds);
  close(fd);
  free(buf);
  return rc;
}
