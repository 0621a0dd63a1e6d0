// procs' connection with both ends in one process (used by shutdown, xthread and addrs),
// and the addrs mode: what getsockname, getpeername and accept say of both ends.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "procs.h"

const char kHello[sizeof "hello"] = "hello", kWorld[sizeof "world"] = "world";

static void* pair_accept_thread(void* arg) {
  struct pair* p = arg;
  p->accepted_len = sizeof p->accepted_from;
  p->server_fd =
      accept4(p->listen_fd, (struct sockaddr*)&p->accepted_from, &p->accepted_len, SOCK_CLOEXEC);
  if (p->server_fd < 0) {
    fail(&p->err, "accept: %s", strerror(errno));
    return NULL;
  }
  char buf[sizeof kHello - 1];
  if (read_exact(p->server_fd, buf, sizeof buf, &p->err) && memcmp(buf, kHello, sizeof buf) != 0)
    fail(&p->err, "server: wrong greeting");
  write_all(p->server_fd, kWorld, sizeof kWorld - 1, &p->err);
  return NULL;
}

// Listens on listen_addr (a "::" listener accepts IPv4 too: IPV6_V6ONLY off), connects
// from connect_addr's family and exchanges a greeting each way.
bool pair_open(struct pair* p, const char* listen_addr, const char* connect_addr) {
  memset(p, 0, sizeof *p);
  p->client_fd = p->server_fd = -1;
  p->listen_fd = listen_on(listen_addr, 0, false, 0, &p->listen_port);
  if (p->listen_fd < 0) return fail(&p->err, "cannot listen on %s", listen_addr);
  pthread_t th;
  if (pthread_create(&th, NULL, pair_accept_thread, p) != 0)
    return fail(&p->err, "pthread_create failed");
  struct err e = {{0}};
  p->client_fd = connect_tcp(connect_addr, p->listen_port);
  if (p->client_fd < 0) {
    fail(&e, "connect to %s: %s", connect_addr, strerror(errno));
  } else {
    char buf[sizeof kWorld - 1];
    if (write_all(p->client_fd, kHello, sizeof kHello - 1, &e) &&
        read_exact(p->client_fd, buf, sizeof buf, &e) && memcmp(buf, kWorld, sizeof buf) != 0)
      fail(&e, "client: wrong greeting");
  }
  if (e.text[0] != '\0' && p->client_fd >= 0) shutdown(p->client_fd, SHUT_RDWR);
  pthread_join(th, NULL);
  if (e.text[0] != '\0') fail(&p->err, "%s", e.text);
  return p->err.text[0] == '\0';
}

// ---- addresses ---------------------------------------------------------------------------

// "family address port" with the port named: L (the listener's), C (the client's).
static void rec_addr(struct rec* r, const char* key, const struct sockaddr_storage* ss,
                     int listen_port, int client_port) {
  char host[INET6_ADDRSTRLEN] = "?", text[INET6_ADDRSTRLEN + 32];
  int port = 0;
  const char* family = "other";
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in* a = (const struct sockaddr_in*)ss;
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
    family = "inet";
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6* a = (const struct sockaddr_in6*)ss;
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    family = "inet6";
  }
  char portname[16];
  if (port == listen_port)
    snprintf(portname, sizeof portname, "L");
  else if (port == client_port)
    snprintf(portname, sizeof portname, "C");
  else
    snprintf(portname, sizeof portname, "%d", port);
  snprintf(text, sizeof text, "%s %s %s", family, host, portname);
  rec_str(r, key, text);
}

static void rec_names(struct rec* r, const char* prefix, int fd, int listen_port, int client_port) {
  struct sockaddr_storage ss;
  char key[64];
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  snprintf(key, sizeof key, "%s_sockname", prefix);
  if (getsockname(fd, (struct sockaddr*)&ss, &len) == 0)
    rec_addr(r, key, &ss, listen_port, client_port);
  else
    rec_str(r, key, errname(errno));
  len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  snprintf(key, sizeof key, "%s_peername", prefix);
  if (getpeername(fd, (struct sockaddr*)&ss, &len) == 0)
    rec_addr(r, key, &ss, listen_port, client_port);
  else
    rec_str(r, key, errname(errno));
}

struct echo_job {
  int fd;
};
static void* echo_job_thread(void* arg) {
  struct echo_job* j = arg;
  serve_echo(j->fd, 0);
  return NULL;
}

int run_addrs(void) {
  struct pair p;
  if (!pair_open(&p, opt.listen_addr, opt.connect_addr)) {
    struct rec r = {0};
    rec_str(&r, "role", "setup");
    rec_emit(&r, p.err.text);
    return 1;
  }
  const int cport = local_port(p.client_fd);
  struct rec r = {0};
  rec_str(&r, "role", "names");
  rec_names(&r, "client", p.client_fd, p.listen_port, cport);
  rec_names(&r, "server", p.server_fd, p.listen_port, cport);
  rec_addr(&r, "accepted_from", &p.accepted_from, p.listen_port, cport);
  rec_int(&r, "accepted_len", p.accepted_len);
  rec_names(&r, "listener", p.listen_fd, p.listen_port, cport);
  rec_emit(&r, NULL);
  // Data both ways, then the names once more (nothing may have changed them).
  struct echo_job job = {p.server_fd};
  pthread_t th;
  struct err e = {{0}};
  if (pthread_create(&th, NULL, echo_job_thread, &job) != 0) {
    rec_emit(&r, "pthread_create failed");
    return 1;
  }
  bool ok = echo_exchange(p.client_fd, stream_seed(cport, true), 0, (uint64_t)opt.bytes, &e);
  r = (struct rec){0};
  rec_str(&r, "role", "client");
  rec_int(&r, "bytes_sent", ok ? opt.bytes : 0);
  rec_int(&r, "bytes_received", ok ? opt.bytes : 0);
  rec_tcp(&r, p.client_fd);
  rec_names(&r, "client", p.client_fd, p.listen_port, cport);
  shutdown(p.client_fd, SHUT_WR);  // the echo thread's EOF
  pthread_join(th, NULL);          // it reports the server's end and closes it
  if (close(p.client_fd) != 0) fail(&e, "close: %s", strerror(errno));
  rec_emit(&r, e.text);
  close(p.listen_fd);
  return failures == 0 ? 0 : 1;
}
