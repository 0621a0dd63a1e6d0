// fanin's latency probe: the client's timed PINGs on the probe connection, the server's
// echo, and the percentiles of the round trips.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fanin.h"

// Server side: echoes PINGs until END. Returns NULL on END, else a non-NULL value.
void* echo_main(void* arg) {
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

void* probe_main(void* arg) {
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

int cmp_u64(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}
// Percentile q (0..100] of n sorted values (nearest rank), in µs; JSON null if none.
void print_pct(const char* name, const uint64_t* v, size_t n, unsigned q) {
  if (n == 0) {
    printf(",\"%s\":null", name);
    return;
  }
  size_t rank = (n * q + 99) / 100;
  printf(",\"%s\":%.3f", name, (double)v[rank > 0 ? rank - 1 : 0] / 1000.0);
}
