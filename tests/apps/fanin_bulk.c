// fanin's bulk loops: the sender's and the receiver's epoll loop over all N connections
// (the receiver counting the measured window), and the forward client's per-connection
// counts from the server.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fanin.h"

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
void send_loop(struct conn* c, const struct params* p, uint64_t t0) {
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
void receive_loop(struct conn* c, const struct params* p, uint64_t t0, bool reply,
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
void collect_counts(struct conn* c, const struct params* p) {
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
