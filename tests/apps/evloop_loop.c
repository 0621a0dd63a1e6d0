// evloop's readiness loops (epoll on one or more threads, poll, select) and the run:
// listener or connects, the loop, the records of what never finished, --idle.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evloop.h"

struct loop L = {.epfd = -1, .stopfd = -1, .lfd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

static unsigned from_epoll(uint32_t e) {
  return ((e & EPOLLIN) ? EV_IN : 0) | ((e & EPOLLOUT) ? EV_OUT : 0) |
         ((e & EPOLLRDHUP) ? EV_RDHUP : 0) | ((e & EPOLLHUP) ? EV_HUP : 0) |
         ((e & EPOLLERR) ? EV_ERR : 0);
}

static void* epoll_loop(void* arg) {
  (void)arg;
  struct epoll_event evs[64];
  for (;;) {
    waiting_in = "epoll_wait";
    int n = epoll_wait(L.epfd, evs, 64, -1);
    waiting_in = "event handling";
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      fatal("epoll_wait");
      return NULL;
    }
    for (int i = 0; i < n; i++) {
      if (evs[i].data.u64 == TAG_STOP) return NULL;
      dispatch(evs[i].data.u64, from_epoll(evs[i].events));
    }
  }
}

// The epoll set with the stop eventfd (and the listener, once there is one), made before
// any connection registers.
static bool epoll_setup(void) {
  L.epfd = epoll_create1(EPOLL_CLOEXEC);
  if (L.epfd < 0) {
    perror("epoll_create1");
    return false;
  }
  struct epoll_event e = {.events = EPOLLIN, .data.u64 = TAG_STOP};
  if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, L.stopfd, &e) != 0) {
    perror("epoll_ctl(stop eventfd)");
    return false;
  }
  return true;
}

static bool epoll_add_listener(void) {
  struct epoll_event e = {.events = EPOLLIN | (opt.api == API_EPOLL_ET ? EPOLLET : 0) |
                                    (opt.threads > 1 ? EPOLLEXCLUSIVE : 0),
                          .data.u64 = TAG_LISTEN};
  if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, L.lfd, &e) != 0) {
    perror("epoll_ctl(listener)");
    return false;
  }
  return true;
}

static unsigned from_poll(short r) {
  return ((r & POLLIN) ? EV_IN : 0) | ((r & POLLOUT) ? EV_OUT : 0) |
         ((r & POLLRDHUP) ? EV_RDHUP : 0) | ((r & POLLHUP) ? EV_HUP : 0) |
         ((r & POLLERR) ? EV_ERR : 0);
}

static void poll_loop(void) {
  struct pollfd* pfd = calloc((size_t)opt.conns + 2, sizeof *pfd);
  uint64_t* tags = calloc((size_t)opt.conns + 2, sizeof *tags);
  if (pfd == NULL || tags == NULL) {
    fatal("calloc");
    return;
  }
  while (!loop_done()) {
    nfds_t n = 0;
    pfd[n] = (struct pollfd){.fd = L.stopfd, .events = POLLIN};
    tags[n++] = TAG_STOP;
    if (L.lfd >= 0 && L.accepted < opt.conns) {
      pfd[n] = (struct pollfd){.fd = L.lfd, .events = POLLIN};
      tags[n++] = TAG_LISTEN;
    }
    for (int i = 0; i < opt.conns; i++) {
      struct conn* c = &L.conns[i];
      if (!c->active) continue;
      short ev = (short)((wants_read(c) ? POLLIN | POLLRDHUP : 0) | (wants_write(c) ? POLLOUT : 0));
      pfd[n] = (struct pollfd){.fd = c->fd, .events = ev};
      tags[n++] = (uint64_t)i;
    }
    waiting_in = "poll";
    int r = poll(pfd, n, -1);
    waiting_in = "event handling";
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      fatal("poll");
      break;
    }
    for (nfds_t i = 0; i < n; i++) {
      if (pfd[i].revents == 0 || tags[i] == TAG_STOP) continue;
      if (pfd[i].revents & POLLNVAL) {
        struct conn* c = &L.conns[tags[i]];
        fail(c, "poll reported POLLNVAL");
        conn_finish(c);
        continue;
      }
      dispatch(tags[i], from_poll(pfd[i].revents));
    }
  }
  free(pfd);
  free(tags);
}

static void select_loop(void) {
  while (!loop_done()) {
    fd_set rd, wr;
    FD_ZERO(&rd);
    FD_ZERO(&wr);
    int maxfd = L.stopfd;
    FD_SET(L.stopfd, &rd);
    bool listening = L.lfd >= 0 && L.accepted < opt.conns;
    if (listening) {
      FD_SET(L.lfd, &rd);
      if (L.lfd > maxfd) maxfd = L.lfd;
    }
    for (int i = 0; i < opt.conns; i++) {
      struct conn* c = &L.conns[i];
      if (!c->active) continue;
      if (c->fd >= FD_SETSIZE) {
        fail(c, "fd %d does not fit in an fd_set", c->fd);
        conn_finish(c);
        continue;
      }
      if (wants_read(c)) FD_SET(c->fd, &rd);
      if (wants_write(c)) FD_SET(c->fd, &wr);
      if (c->fd > maxfd) maxfd = c->fd;
    }
    waiting_in = "select";
    int r = select(maxfd + 1, &rd, &wr, NULL, NULL);
    waiting_in = "event handling";
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      fatal("select");
      break;
    }
    if (listening && FD_ISSET(L.lfd, &rd)) accept_ready();
    for (int i = 0; i < opt.conns; i++) {
      struct conn* c = &L.conns[i];
      // A connection accepted in this round was not in the sets: FD_ISSET is false for it.
      if (!c->active || c->fd >= FD_SETSIZE) continue;
      unsigned ev = (FD_ISSET(c->fd, &rd) ? EV_IN : 0) | (FD_ISSET(c->fd, &wr) ? EV_OUT : 0);
      if (ev != 0) dispatch((uint64_t)i, ev);
    }
  }
}

// Runs the chosen loop until every connection is done (or a fatal error).
static void run_loop(void) {
  if (opt.api == API_POLL) {
    poll_loop();
    return;
  }
  if (opt.api == API_SELECT) {
    select_loop();
    return;
  }
  pthread_t threads[MAX_THREADS];
  int started = 0;
  for (int t = 1; t < opt.threads; t++) {
    if (pthread_create(&threads[started], NULL, epoll_loop, NULL) != 0) {
      fprintf(stderr, "evloop: pthread_create failed\n");
      break;
    }
    started++;
  }
  epoll_loop(NULL);
  for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
}

// Connections that never finished (fatal error or early stop) still get a record.
static void report_unfinished(void) {
  for (int i = 0; i < opt.conns; i++) {
    struct conn* c = &L.conns[i];
    if (!c->active) continue;
    fail(c, "not finished when the loop ended");
    struct tcpstats st = tcp_stats(c->fd);
    report(c, &st);
    L.failures++;
  }
}

int run(void) {
  L.conns = calloc((size_t)opt.conns, sizeof *L.conns);
  L.stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (L.conns == NULL || L.stopfd < 0) {
    perror("setup");
    return 1;
  }
  if (epoll_api() && !epoll_setup()) return 1;
  if (opt.server) {
    int port = 0;
    L.lfd = listen_tcp(opt.bind != NULL ? opt.bind : "127.0.0.1", opt.port, &port);
    if (L.lfd < 0) return 1;
    int fl = fcntl(L.lfd, F_GETFL);
    if (fl < 0 || fcntl(L.lfd, F_SETFL, fl | O_NONBLOCK) != 0) {
      perror("fcntl(listener)");
      return 1;
    }
    if (epoll_api() && !epoll_add_listener()) return 1;
    fprintf(stderr, "listening %d\n", port);
    fflush(stderr);
  } else {
    // Blocking connects, one after the other; then all of them run in the loop.
    waiting_in = "connect";
    for (int i = 0; i < opt.conns; i++) {
      struct conn* c = &L.conns[i];
      int fd = connect_tcp(opt.host, opt.port);
      if (fd < 0) {
        c->index = i;
        fail(c, "connect to %s:%d: %s", opt.host, opt.port, strerror(errno));
        struct tcpstats st = {0};
        report(c, &st);
        L.failures++;
        L.finished++;
        continue;
      }
      int fl = fcntl(fd, F_GETFL);
      if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        perror("fcntl(O_NONBLOCK)");
        return 1;
      }
      conn_open(c, fd, i, local_port(fd));
    }
  }
  if (!loop_done()) run_loop();
  report_unfinished();
  if (L.lfd >= 0) close(L.lfd);
  if (L.stray > 0) fprintf(stderr, "evloop: %d events for closed connections\n", L.stray);
  if (L.overlaps > 0)
    fprintf(stderr, "evloop: %d events for connections another thread was handling\n", L.overlaps);
  bool all_in = !opt.server || L.accepted == opt.conns;
  if (opt.idle > 0) {
    fprintf(stderr, "idle\n");
    fflush(stderr);
    waiting_in = "idle";
    sleep(opt.idle);
  }
  return L.failures == 0 && L.stray == 0 && L.overlaps == 0 && !L.fatal && all_in ? 0 : 1;
}
