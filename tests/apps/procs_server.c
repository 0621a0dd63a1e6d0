// procs server: a thread per connection, raw echo or duplex, optionally as a daemon (the
// listener made before or after daemon(), as nginx and redis do); SIGTERM closes the
// listener and lets the connections finish.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "procs.h"

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

void serve_echo(int fd, int index) {
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

int run_server(void) {
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
