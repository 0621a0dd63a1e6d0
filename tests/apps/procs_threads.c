// procs threads: a client of `server --mode duplex` whose threads each connect several
// sockets and run every one full duplex (a sending and a receiving thread on one fd).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "procs.h"

struct connector {
  int first_index;
};

struct duplex_job {
  struct duplex d;
  int index;
  bool connected;
};

static void* duplex_job_thread(void* arg) {
  struct duplex_job* j = arg;
  duplex_run(&j->d, "client", j->index, local_port(j->d.fd));
  return NULL;
}

static void count_failure(void) {
  pthread_mutex_lock(&out_lock);
  failures++;
  pthread_mutex_unlock(&out_lock);
}

// Connects opt.conns sockets, then runs them all at once (two threads each).
static void* connector_thread(void* arg) {
  struct connector* c = arg;
  struct duplex_job* jobs = calloc((size_t)opt.conns, sizeof *jobs);
  pthread_t* threads = calloc((size_t)opt.conns, sizeof *threads);
  bool* started = calloc((size_t)opt.conns, sizeof *started);
  if (jobs == NULL || threads == NULL || started == NULL) {
    count_failure();
    free(jobs);
    free(threads);
    free(started);
    return NULL;
  }
  for (int i = 0; i < opt.conns; i++) {
    int fd = connect_tcp(opt.host, opt.port);
    if (fd < 0) {
      struct rec r = {0};
      rec_str(&r, "role", "client");
      rec_int(&r, "conn", c->first_index + i);
      char text[128];
      snprintf(text, sizeof text, "connect: %s", strerror(errno));
      rec_emit(&r, text);
      continue;
    }
    int port = local_port(fd);
    jobs[i] = (struct duplex_job){.d = {.fd = fd,
                                        .send_seed = stream_seed(port, true),
                                        .recv_seed = stream_seed(port, false),
                                        .bytes = (uint64_t)opt.bytes},
                                  .index = c->first_index + i,
                                  .connected = true};
  }
  for (int i = 0; i < opt.conns; i++) {
    if (!jobs[i].connected) continue;
    started[i] = pthread_create(&threads[i], NULL, duplex_job_thread, &jobs[i]) == 0;
    if (!started[i]) {
      close(jobs[i].d.fd);
      count_failure();
    }
  }
  for (int i = 0; i < opt.conns; i++)
    if (started[i]) pthread_join(threads[i], NULL);
  free(jobs);
  free(threads);
  free(started);
  return NULL;
}

int run_threads(void) {
  pthread_t th[64];
  struct connector cs[64];
  int started = 0;
  for (int t = 0; t < opt.threads; t++) {
    cs[t] = (struct connector){.first_index = t * opt.conns};
    if (pthread_create(&th[t], NULL, connector_thread, &cs[t]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      failures++;
      break;
    }
    started++;
  }
  for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
  return failures == 0 ? 0 : 1;
}
