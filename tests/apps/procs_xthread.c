// procs xthread: one thread blocked in send, recv, accept or connect while another shuts
// the socket down or closes it; whether and how the call wakes, compared with plain TCP.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "procs.h"

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

int run_xthread(void) {
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
