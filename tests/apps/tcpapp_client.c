// tcpapp client: --parallel threads, each running --conns connections one after the other
// in the chosen mode (echo with a second, sending thread; source optionally dumped).
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcpapp.h"

struct echo_sender {
  struct conn* c;
  struct conn tx;  // the sending thread's own counters and rng
};

static void* echo_send_thread(void* arg) {
  struct echo_sender* es = arg;
  if (!send_stream(&es->tx, es->c->stream_c2s, (uint64_t)opt.bytes, NULL)) {
    shutdown(es->tx.fd, SHUT_RDWR);  // the reader would otherwise wait for the echo forever
    return NULL;
  }
  if (opt.half_close && shutdown(es->tx.fd, SHUT_WR) != 0)
    fail(&es->tx, "shutdown(SHUT_WR): %s", strerror(errno));
  return NULL;
}

static bool dump_stream(struct conn* c) {
  FILE* f = fopen(opt.dump, "wb");
  if (f == NULL) return fail(c, "cannot open %s: %s", opt.dump, strerror(errno));
  for (;;) {
    ssize_t n = recv_some(c, c->rbuf, MAX_CHUNK);
    if (n < 0) break;
    if (n == 0) break;
    if (fwrite(c->rbuf, 1, (size_t)n, f) != (size_t)n) fail(c, "write to %s failed", opt.dump);
  }
  if (fclose(f) != 0) fail(c, "closing %s failed", opt.dump);
  return c->error[0] == '\0';
}

static bool run_client(struct conn* c) {
  if (opt.write_first) {
    char greet[GREETING_LEN];
    if (!recv_exact(c, greet, GREETING_LEN, "the greeting")) return false;
    if (memcmp(greet, kGreeting, GREETING_LEN) != 0) return fail(c, "wrong greeting");
  }
  uint64_t count = 0;
  switch (opt.mode) {
    case MODE_SINK: {
      struct fletcher sum = {0, 0};
      if (!send_stream(c, c->stream_c2s, (uint64_t)opt.bytes, &sum)) return false;
      if (opt.half_close && shutdown(c->fd, SHUT_WR) != 0)
        return fail(c, "shutdown(SHUT_WR): %s", strerror(errno));
      uint8_t reply[16];
      if (!recv_exact(c, reply, sizeof reply, "the sink reply")) return false;
      if (get_be64(reply) != (uint64_t)opt.bytes)
        return fail(c, "server counted %llu bytes, sent %lld", (unsigned long long)get_be64(reply),
                    opt.bytes);
      if (get_be64(reply + 8) != fletcher_value(&sum))
        return fail(c, "server checksum %016llx differs from ours %016llx",
                    (unsigned long long)get_be64(reply + 8),
                    (unsigned long long)fletcher_value(&sum));
      // After a half-close the server closes once it has replied.
      if (opt.half_close) return expect_eof(c, "after the sink reply");
      return true;
    }
    case MODE_ECHO: {
      struct echo_sender es = {.c = c, .tx = *c};
      es.tx.error[0] = '\0';
      es.tx.sent = 0;
      es.tx.received = 0;
      rng_seed(&es.tx.rng, rng_next(&c->rng));
      pthread_t th;
      if (pthread_create(&th, NULL, echo_send_thread, &es) != 0)
        return fail(c, "pthread_create failed");
      bool ok = recv_stream(c, c->stream_c2s, opt.bytes, false, false, NULL, &count);
      if (ok && opt.half_close) ok = expect_eof(c, "after the echo");
      if (!ok) shutdown(c->fd, SHUT_RDWR);  // unblock the sender
      pthread_join(th, NULL);
      c->sent = es.tx.sent;
      if (es.tx.error[0] != '\0' && c->error[0] == '\0') memcpy(c->error, es.tx.error, 256);
      return ok && c->error[0] == '\0';
    }
    case MODE_SOURCE:
      if (!send_all(c, kRequest, sizeof kRequest - 1)) return false;
      if (opt.dump != NULL) return dump_stream(c);
      return recv_stream(c, c->stream_s2c, -1, false, false, NULL, &count) &&
             (count == (uint64_t)opt.bytes ||
              fail(c, "received %llu bytes before EOF, expected %lld", (unsigned long long)count,
                   opt.bytes));
  }
  return false;
}

struct client_job {
  int first_index;
};
static void* client_thread(void* arg) {
  struct client_job* job = arg;
  for (int i = 0; i < opt.conns; i++) {
    struct conn c;
    int fd = connect_tcp_from(opt.host, opt.port, opt.bind);
    if (fd < 0) {
      memset(&c, 0, sizeof c);
      c.index = job->first_index + i;
      fail(&c, "connect to %s:%d: %s", opt.host, opt.port, strerror(errno));
      struct tcpstats st = {0};
      report(&c, &st);
      continue;
    }
    conn_init(&c, fd, job->first_index + i, local_port(fd));
    if (c.sbuf == NULL || c.rbuf == NULL)
      fail(&c, "out of memory");
    else
      run_client(&c);
    conn_finish(&c);
  }
  return NULL;
}

int run_clients(void) {
  pthread_t threads[256];
  struct client_job jobs[256];
  for (int t = 0; t < opt.parallel; t++) {
    jobs[t].first_index = t * opt.conns;
    if (opt.parallel == 1) {
      client_thread(&jobs[t]);
      return failures == 0 ? 0 : 1;
    }
    if (pthread_create(&threads[t], NULL, client_thread, &jobs[t]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 1;
    }
  }
  for (int t = 0; t < opt.parallel; t++) pthread_join(threads[t], NULL);
  return failures == 0 ? 0 : 1;
}
