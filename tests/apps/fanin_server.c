// fanin server: accepts the probe and the N bulk connections of one run, checks their
// headers agree, then receives (or with --reverse sends) and answers with its counts.
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fanin.h"

int run_server(const char* bind_addr, int port, bool hold_at_end) {
  raise_nofile();
  int bound = 0;
  int lfd = listen_tcp(bind_addr, port, &bound);
  if (lfd < 0) return 1;
  fprintf(stderr, "listening %d\n", bound);
  fflush(stderr);

  // Accept until the probe and all N bulk connections are in; N comes with the headers.
  phase = PH_ACCEPT;
  struct params p = {0};
  uint8_t first[HDR_LEN];
  struct conn* c = NULL;
  uint32_t nbulk = 0;
  int probe_fd = -1;
  while (probe_fd < 0 || c == NULL || nbulk < p.conns) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0 && errno == EINTR) continue;
    if (fd < 0) fail("accept: %s", strerror(errno));
    uint8_t h[HDR_LEN];
    struct params hp;
    int kind = 0;
    if (recv_all_fd(fd, h, sizeof h) == 1) kind = decode_header(h, &hp);
    if (kind == 0) fail("connection %u: no valid header", nbulk + (probe_fd >= 0));
    if (c == NULL) {
      check_nofile(hp.conns);
      c = calloc(hp.conns, sizeof *c);
      if (c == NULL) fail("out of memory");
      p = hp;
      memcpy(first, h, sizeof h);
    } else if (memcmp(h + 12, first + 12, HDR_LEN - 12) != 0) {
      fail("a connection's header disagrees with the first one's");
    }
    static const uint8_t ack = 'A';
    if (!send_all_fd(fd, &ack, 1)) fail("accept: acknowledging a header: %s", strerror(errno));
    if (kind == KIND_PROBE) {
      if (probe_fd >= 0) fail("two probe connections");
      probe_fd = fd;
      set_nodelay(fd);
    } else {
      if (nbulk == p.conns) fail("more than %u bulk connections", p.conns);
      c[nbulk++].fd = fd;
      set_nonblocking(fd, true);
    }
  }
  close(lfd);

  phase = PH_GO;
  send_msg(probe_fd, MSG_GO, NULL, 0);
  uint64_t t0 = now_ns();
  pthread_t echo;
  if (pthread_create(&echo, NULL, echo_main, &probe_fd) != 0) fail("pthread_create");
  struct recv_result res = {0};
  uint64_t sent = 0;
  if (p.flags & FLAG_REVERSE) {
    send_loop(c, &p, t0);
    for (uint32_t i = 0; i < p.conns; i++) sent += c[i].bytes;
  } else {
    receive_loop(c, &p, t0, true, &res);
  }
  phase = PH_RESULT;
  void* echo_failed;
  pthread_join(echo, &echo_failed);
  if (echo_failed != NULL) return 1;
  if (p.flags & FLAG_REVERSE) {
    send_msg(probe_fd, MSG_RESULT, &sent, 1);
  } else {
    uint64_t fields[] = {res.total, res.window_bytes, res.window_ns, res.conn_min, res.conn_max};
    send_msg(probe_fd, MSG_RESULT, fields, 5);
  }
  if (hold_at_end) hold();
  for (uint32_t i = 0; i < p.conns; i++) close(c[i].fd);
  close(probe_fd);
  free(c);
  return 0;
}
