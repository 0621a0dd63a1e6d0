// tcpapp server: accepts --conns connections, one after the other or each on a thread of
// its own (--concurrent), and serves each in the chosen mode.
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcpapp.h"

static bool serve(struct conn* c) {
  if (opt.write_first && !send_all(c, kGreeting, GREETING_LEN)) return false;
  uint64_t count = 0;
  switch (opt.mode) {
    case MODE_SINK: {
      struct fletcher sum = {0, 0};
      if (!recv_stream(c, c->stream_c2s, opt.bytes, opt.raw, false, &sum, &count)) return false;
      uint8_t reply[16];
      put_be64(reply, count);
      put_be64(reply + 8, fletcher_value(&sum));
      if (!send_all(c, reply, sizeof reply)) return false;
      // With a known length the client's EOF (half-close or close) must follow the data.
      if (opt.bytes >= 0) return expect_eof(c, "after the sink data");
      return true;
    }
    case MODE_ECHO:
      if (!recv_stream(c, c->stream_c2s, -1, opt.raw, true, NULL, &count)) return false;
      if (opt.bytes >= 0 && count != (uint64_t)opt.bytes)
        return fail(c, "echoed %llu bytes, expected %lld", (unsigned long long)count, opt.bytes);
      return true;
    case MODE_SOURCE: {
      char request[sizeof kRequest - 1];
      if (!recv_exact(c, request, sizeof request, "the request")) return false;
      if (memcmp(request, kRequest, sizeof request) != 0) return fail(c, "wrong request");
      return send_stream(c, c->stream_s2c, (uint64_t)opt.bytes, NULL);
    }
  }
  return false;
}

static void server_conn(int fd, int index) {
  struct conn c;
  conn_init(&c, fd, index, peer_port(fd));
  if (c.sbuf == NULL || c.rbuf == NULL)
    fail(&c, "out of memory");
  else
    serve(&c);
  conn_finish(&c);
}

struct server_job {
  int fd, index;
};
static void* server_thread(void* arg) {
  struct server_job* job = arg;
  server_conn(job->fd, job->index);
  return NULL;
}

int run_server(void) {
  int port = 0;
  int lfd = listen_tcp(opt.bind != NULL ? opt.bind : "127.0.0.1", opt.port, &port);
  if (lfd < 0) return 1;
  fprintf(stderr, "listening %d\n", port);
  fflush(stderr);
  pthread_t* threads = calloc((size_t)opt.conns, sizeof *threads);
  struct server_job* jobs = calloc((size_t)opt.conns, sizeof *jobs);
  int started = 0, accepted = 0;
  for (int i = 0; i < opt.conns; i++) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) {
        i--;
        continue;
      }
      perror("accept");
      break;
    }
    accepted++;
    if (!opt.concurrent) {
      server_conn(fd, i);
      continue;
    }
    jobs[i] = (struct server_job){fd, i};
    if (pthread_create(&threads[i], NULL, server_thread, &jobs[i]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      close(fd);
      accepted--;
      break;
    }
    started++;
  }
  for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
  close(lfd);
  free(threads);
  free(jobs);
  return failures == 0 && accepted == opt.conns ? 0 : 1;
}
