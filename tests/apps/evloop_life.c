// evloop's connection life: registration with epoll (level- or edge-triggered, one-shot
// re-arm), opening, accepting, dispatching one event, and the close with its report.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evloop.h"

// ---- registration ------------------------------------------------------------------------

bool epoll_api(void) {
  return opt.api == API_EPOLL || opt.api == API_EPOLL_ET;
}

static uint32_t epoll_interest(const struct conn* c) {
  uint32_t ev;
  if (opt.api == API_EPOLL_ET)
    ev = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  else
    ev = (wants_read(c) ? EPOLLIN | EPOLLRDHUP : 0) | (wants_write(c) ? EPOLLOUT : 0);
  return ev | (opt.oneshot ? EPOLLONESHOT : 0);
}

static bool conn_register(struct conn* c) {
  if (!epoll_api()) return true;  // poll and select build their sets every round
  struct epoll_event e = {.events = epoll_interest(c), .data.u64 = (uint64_t)c->index};
  if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, c->fd, &e) != 0)
    return fail(c, "epoll_ctl(ADD): %s", strerror(errno));
  c->registered = e.events;
  return true;
}

// After an event that left the connection incomplete: level-triggered epoll follows what
// the connection waits for now; a one-shot registration is re-armed. Returns false (and
// has armed nothing) on failure. After a successful re-arm another thread may own the
// connection: the caller must not touch it any more.
static bool conn_rearm(struct conn* c) {
  if (!wants_read(c) && !wants_write(c))  // it would never hear of the peer again
    return fail(c, "internal: connection waits for nothing");
  if (!epoll_api()) return true;
  uint32_t ev = epoll_interest(c);
  if (ev == c->registered && !opt.oneshot) return true;
  struct epoll_event e = {.events = ev, .data.u64 = (uint64_t)c->index};
  if (epoll_ctl(L.epfd, EPOLL_CTL_MOD, c->fd, &e) != 0)
    return fail(c, "epoll_ctl(MOD): %s", strerror(errno));
  c->registered = ev;
  return true;
}

// ---- connection life ---------------------------------------------------------------------

void conn_finish(struct conn* c) {
  pthread_mutex_lock(&L.lock);
  c->active = false;  // from here on an event for it is stray, and no thread touches it
  pthread_mutex_unlock(&L.lock);
  struct tcpstats st = tcp_stats(c->fd);
  // Level-triggered epoll removes the fd first; edge-triggered relies on close() to drop
  // the registration (both are common, and both must leave no trace in the set). A
  // connection left open (--end open) leaves the set: an edge may still come for it (the
  // peer's window opening), which is no stray event.
  if ((opt.api == API_EPOLL || (opt.end == END_OPEN && epoll_api())) && c->registered != 0 &&
      epoll_ctl(L.epfd, EPOLL_CTL_DEL, c->fd, NULL) != 0)
    fail(c, "epoll_ctl(DEL): %s", strerror(errno));
  waiting_in = "close()";
  // --end open: the connection stays open until the process exits.
  if (opt.end != END_OPEN && close(c->fd) != 0) fail(c, "close: %s", strerror(errno));
  waiting_in = "event handling";
  free(c->sbuf);
  free(c->rbuf);
  c->sbuf = c->rbuf = NULL;
  pthread_mutex_lock(&L.lock);
  report(c, &st);
  if (failed(c)) L.failures++;
  bool all = ++L.finished == opt.conns;
  pthread_mutex_unlock(&L.lock);
  if (all) stop_loop();
}

// A new connection (fd non-blocking): state, buffers, registration before any I/O.
void conn_open(struct conn* c, int fd, int index, int client_port) {
  memset(c, 0, sizeof *c);
  atomic_init(&c->busy, false);
  c->fd = fd;
  c->index = index;
  uint64_t conn_seed = mix64(opt.seed ^ ((uint64_t)client_port << 40));
  uint64_t c2s = mix64(conn_seed ^ 0xc25), s2c = mix64(conn_seed ^ 0x52c);
  c->seed_tx = opt.server ? s2c : c2s;
  c->seed_rx = opt.server || opt.mode == MODE_ECHO ? c2s : s2c;  // an echo is our own stream
  rng_seed(&c->rng, conn_seed ^ (opt.server ? 0x5e : 0xc1));
  c->sbuf = malloc(MAX_CHUNK);
  c->rbuf = malloc(MAX_CHUNK);
  c->active = true;
  int fl = fcntl(fd, F_GETFL);
  if (c->sbuf == NULL || c->rbuf == NULL)
    fail(c, "out of memory");
  else if (fl < 0 || (fl & O_NONBLOCK) == 0)
    fail(c, "socket is not non-blocking (F_GETFL 0x%x)", fl);
  if (!failed(c)) {
    conn_start(c);
    settle(c);
  }
  // Once registered, with several threads another one may own the connection at once.
  if (conn_complete(c) || !conn_register(c)) conn_finish(c);
}

void accept_ready(void) {
  for (;;) {
    pthread_mutex_lock(&L.lock);
    bool full = L.accepted >= opt.conns;
    pthread_mutex_unlock(&L.lock);
    if (full) return;
    int fd = accept4(L.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) fatal("accept4");
      return;
    }
    pthread_mutex_lock(&L.lock);
    int index = L.accepted < opt.conns ? L.accepted++ : -1;
    bool last = L.accepted == opt.conns;
    pthread_mutex_unlock(&L.lock);
    if (index < 0) {  // more clients than --conns: not ours
      close(fd);
      continue;
    }
    // Once all are in, the listener leaves the set (poll/select stop adding it).
    if (last && epoll_api() && epoll_ctl(L.epfd, EPOLL_CTL_DEL, L.lfd, NULL) != 0)
      fatal("epoll_ctl(DEL listener)");
    conn_open(&L.conns[index], fd, index, peer_port(fd));
  }
}

void dispatch(uint64_t tag, unsigned ev) {
  if (tag == TAG_LISTEN) {
    accept_ready();
    return;
  }
  struct conn* c = &L.conns[tag];
  pthread_mutex_lock(&L.lock);
  bool active = c->active;
  if (!active) L.stray++;
  pthread_mutex_unlock(&L.lock);
  if (!active) {
    fprintf(stderr, "evloop: event 0x%x for connection %d, which is closed\n", ev, (int)tag);
    return;
  }
  // With EPOLLONESHOT a connection's registration stays disabled from the event until the
  // re-arm, so no second thread can get here meanwhile. If one does, it must keep out of
  // the connection (its state is not shared safely), and the run fails.
  if (atomic_exchange(&c->busy, true)) {
    pthread_mutex_lock(&L.lock);
    L.overlaps++;
    pthread_mutex_unlock(&L.lock);
    fprintf(stderr, "evloop: event 0x%x for connection %d while another thread handles it\n", ev,
            (int)tag);
    return;
  }
  // A complete connection keeps `busy` through its close; an incomplete one clears it
  // before the re-arm, after which another thread may own the connection.
  if (conn_event(c, ev)) {
    conn_finish(c);
    return;
  }
  atomic_store(&c->busy, false);
  if (!conn_rearm(c)) conn_finish(c);
}
