// fanin client: opens the probe and the N bulk connections one at a time, runs the bulk
// transfer and the probe together, checks the server's counts and prints the JSON line.
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fanin.h"

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

int run_client(const char* host, int port, const struct params* p, uint64_t interval_us,
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
