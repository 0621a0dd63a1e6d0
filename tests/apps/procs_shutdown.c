// procs shutdown: both ends in one process, shutdown() on one while the other keeps
// writing, one JSON record per step, to be compared with a plain-TCP run.
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "procs.h"

static volatile sig_atomic_t sigpipes;
static void on_sigpipe(int sig) {
  (void)sig;
  sigpipes++;
}

static int step_no;

// One step of the shutdown run: what was done and what came of it.
static void step(const char* what, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void step(const char* what, const char* fmt, ...) {
  char result[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(result, sizeof result, fmt, ap);
  va_end(ap);
  struct rec r = {0};
  rec_str(&r, "role", "step");
  rec_int(&r, "step", ++step_no);
  rec_str(&r, "what", what);
  rec_str(&r, "result", result);
  rec_emit(&r, NULL);
}

static const char* revents_text(int rc, short revents) {
  static char text[128];
  if (rc < 0) {
    snprintf(text, sizeof text, "poll failed: %s", errname(errno));
    return text;
  }
  static const struct {
    short bit;
    const char* name;
  } names[] = {{POLLIN, "IN"},   {POLLPRI, "PRI"},     {POLLOUT, "OUT"},  {POLLERR, "ERR"},
               {POLLHUP, "HUP"}, {POLLRDHUP, "RDHUP"}, {POLLNVAL, "NVAL"}};
  text[0] = '\0';
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (revents & names[i].bit)
      snprintf(text + strlen(text), sizeof text - strlen(text), "%s%s", text[0] ? "|" : "",
               names[i].name);
  if (text[0] == '\0') snprintf(text, sizeof text, "none");
  return text;
}

// The readiness of `fd` right now (IN, OUT, RDHUP asked; ERR and HUP always reported).
static void step_poll(const char* what, int fd) {
  struct pollfd p = {fd, POLLIN | POLLOUT | POLLRDHUP, 0};
  int rc = poll(&p, 1, 0);
  step(what, "%s", revents_text(rc, p.revents));
}

// Waits (bounded) for `events` on `fd`: the peer's shutdown or reset travels over the
// network; a wait that times out is a result, compared like any other.
static void step_wait(const char* what, int fd, short events) {
  struct pollfd p = {fd, events, 0};
  int rc = poll(&p, 1, 3000);
  step(what, "%s", rc == 0 ? "timeout" : revents_text(rc, p.revents));
}

static void step_rc(const char* what, ssize_t rc, int saved_errno, int pipes_before) {
  if (rc < 0)
    step(what, "-1 %s sigpipe=%d", errname(saved_errno), (int)sigpipes - pipes_before);
  else
    step(what, "%zd sigpipe=%d", rc, (int)sigpipes - pipes_before);
}

static void step_send(const char* what, int fd, size_t len, int flags) {
  static uint8_t buf[CHUNK];
  memset(buf, 'x', len);
  int before = sigpipes;
  ssize_t rc = send(fd, buf, len, flags);
  step_rc(what, rc, errno, before);
}

static void step_write(const char* what, int fd) {
  int before = sigpipes;
  ssize_t rc = write(fd, "x", 1);
  step_rc(what, rc, errno, before);
}

static void step_recv(const char* what, int fd, int flags) {
  static uint8_t buf[CHUNK];
  int before = sigpipes;
  ssize_t rc = recv(fd, buf, sizeof buf, flags);
  step_rc(what, rc, errno, before);
}

static void step_so_error(const char* what, int fd) {
  int v = -1;
  socklen_t len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &len) != 0)
    step(what, "getsockopt failed: %s", errname(errno));
  else
    step(what, "%s", v == 0 ? "0" : errname(v));
}

static void step_shutdown(const char* what, int fd, int how) {
  int rc = shutdown(fd, how);
  step(what, "%s", rc == 0 ? "0" : errname(errno));
}

// Waits until `fd` has `want` bytes queued (FIONREAD), at most 3 s; reports the count.
static void step_fionread(const char* what, int fd, int want) {
  int n = -1;
  uint64_t deadline = now_ns() + 3000000000ULL;
  while (ioctl(fd, FIONREAD, &n) == 0 && n < want && now_ns() < deadline) usleep(1000);
  step(what, "%d", n);
}

// B writes `len` pattern bytes while A is shut down for writing only; A reads and
// verifies them: the direction that is still open works.
static void step_stream(const char* what, int from, int to, size_t len) {
  static uint8_t buf[CHUNK];
  struct err e = {{0}};
  pattern_fill(opt.seed, 0, buf, len);
  if (write_all(from, buf, len, &e)) {
    memset(buf, 0, len);
    if (read_exact(to, buf, len, &e) && pattern_check(opt.seed, 0, buf, len) != SIZE_MAX)
      fail(&e, "data mismatch");
  }
  step(what, "%s", e.text[0] ? e.text : "ok");
}

int run_shutdown(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigpipe;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, NULL);
  struct pair p;
  if (!pair_open(&p, "127.0.0.1", "127.0.0.1")) {
    struct rec r = {0};
    rec_str(&r, "role", "setup");
    rec_emit(&r, p.err.text);
    return 1;
  }
  // A shuts down, B is its peer and keeps writing.
  const bool a_is_client = strcmp(opt.side, "client") == 0;
  const int a = a_is_client ? p.client_fd : p.server_fd;
  const int b = a_is_client ? p.server_fd : p.client_fd;
  // TCP_INFO of both ends before the steps: the proof of the path.
  struct rec r = {0};
  rec_str(&r, "role", "client");
  rec_int(&r, "bytes_sent", sizeof kHello - 1);
  rec_int(&r, "bytes_received", sizeof kWorld - 1);
  rec_tcp(&r, p.client_fd);
  rec_emit(&r, NULL);
  r = (struct rec){0};
  rec_str(&r, "role", "server");
  rec_int(&r, "bytes_sent", sizeof kWorld - 1);
  rec_int(&r, "bytes_received", sizeof kHello - 1);
  rec_tcp(&r, p.server_fd);
  rec_emit(&r, NULL);

  if (strcmp(opt.how, "wr") == 0) {
    step_shutdown("A shutdown(SHUT_WR)", a, SHUT_WR);
    step_poll("A poll", a);
    step_wait("B waits for RDHUP", b, POLLRDHUP);
    step_poll("B poll", b);
    step_recv("B recv(MSG_DONTWAIT)", b, MSG_DONTWAIT);
    step_send("A send(MSG_NOSIGNAL)", a, 1, MSG_NOSIGNAL);
    step_send("A send", a, 1, 0);
    step_write("A write", a);
    step_so_error("A SO_ERROR", a);
    step_stream("B writes 60000, A reads them", b, a, 60000);
    step_poll("A poll after reading", a);
    step_shutdown("B shutdown(SHUT_WR)", b, SHUT_WR);
    step_wait("A waits for RDHUP", a, POLLRDHUP);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_poll("A poll", a);
    step_poll("B poll", b);
    step_send("B send(MSG_NOSIGNAL)", b, 1, MSG_NOSIGNAL);
  } else if (strcmp(opt.how, "rd") == 0) {
    step_shutdown("A shutdown(SHUT_RD)", a, SHUT_RD);
    step_poll("A poll", a);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_poll("B poll", b);
    step_send("B send 1000", b, 1000, 0);
    step_fionread("A FIONREAD once 1000 bytes arrived", a, 1000);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_recv("A recv(MSG_DONTWAIT) again", a, MSG_DONTWAIT);
    step_stream("A writes 60000, B reads them", a, b, 60000);
    step_shutdown("B shutdown(SHUT_WR)", b, SHUT_WR);
    step_wait("A waits for RDHUP", a, POLLRDHUP);
    step_poll("A poll", a);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_so_error("A SO_ERROR", a);
    step_so_error("B SO_ERROR", b);
  } else {
    step_shutdown("A shutdown(SHUT_RDWR)", a, SHUT_RDWR);
    step_poll("A poll", a);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_send("A send(MSG_NOSIGNAL)", a, 1, MSG_NOSIGNAL);
    step_send("A send", a, 1, 0);
    step_wait("B waits for RDHUP", b, POLLRDHUP);
    step_poll("B poll", b);
    step_recv("B recv(MSG_DONTWAIT)", b, MSG_DONTWAIT);
    // Data reaching an end that is shut down for reading (and writing) makes TCP reset
    // the connection: both ends learn of it.
    step_send("B send 1000", b, 1000, 0);
    step_wait("B waits for an error or hangup", b, 0);
    step_poll("B poll", b);
    step_send("B send", b, 1, 0);
    step_send("B send again", b, 1, 0);
    step_recv("B recv(MSG_DONTWAIT)", b, MSG_DONTWAIT);
    step_so_error("B SO_ERROR", b);
    step_poll("A poll", a);
    step_recv("A recv(MSG_DONTWAIT)", a, MSG_DONTWAIT);
    step_recv("A recv(MSG_DONTWAIT) again", a, MSG_DONTWAIT);
    step_so_error("A SO_ERROR", a);
  }
  step("close both", "%d %d", close(a), close(b));
  close(p.listen_fd);
  return failures == 0 ? 0 : 1;
}
