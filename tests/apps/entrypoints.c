// entrypoints: exercises every data call an interposer must catch, on one TCP connection,
// one request/response exchange per call, each verified byte for byte.
//
//   entrypoints server --port P [--bind ADDR] [--timeout S]
//   entrypoints client --host H --port P [--timeout S]
//
// Built with -O2 -D_FORTIFY_SOURCE=2, so reads into buffers of known size compile to
// __read_chk / __recv_chk / __recvfrom_chk (the *_chk steps make sure of it; the tests
// check the imports with nm). A call that slips past an interposer onto the kernel socket
// of an SMC connection would hang or lose data: alarm() bounds the run and the program then
// exits 3 naming the step. Output: one JSON line on stdout; exit 0 only if every step passed.
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "apputil.h"

enum kind {
  K_READ_WRITE,
  K_READV_WRITEV,
  K_SEND_RECV,
  K_SENDTO_RECVFROM,
  K_SENDMSG_RECVMSG,
  K_READ_CHK,
  K_RECV_CHK,
  K_RECVFROM_CHK,
  K_PEEK,
  K_WAITALL,
  K_DUP,
  K_MMSG,
  K_FIONREAD,
  K_SPLICE,
  K_SHUTDOWN,  // must stay last: the client half-closes, then both sides close
};

struct step {
  const char* name;
  enum kind kind;
  size_t req, resp;  // request (client -> server) and response sizes
};

// Several messages exceed a 256 KiB receive buffer, so flow control is exercised too.
static const struct step steps[] = {
    {"read/write", K_READ_WRITE, 300 * 1024 + 3, 1000},
    {"readv/writev", K_READV_WRITEV, 5000, 280 * 1024 + 1},
    {"recv/send", K_SEND_RECV, 70000, 70001},
    {"recvfrom/sendto", K_SENDTO_RECVFROM, 12345, 54321},
    {"recvmsg/sendmsg", K_SENDMSG_RECVMSG, 100 * 1024, 3},
    {"__read_chk", K_READ_CHK, 90000, 90001},
    {"__recv_chk", K_RECV_CHK, 1, 200000},
    {"__recvfrom_chk", K_RECVFROM_CHK, 200000, 7},
    {"MSG_PEEK then read", K_PEEK, 40000, 40001},
    {"MSG_WAITALL", K_WAITALL, 300 * 1024, 100 * 1024},
    {"dup'd fd", K_DUP, 65536, 65537},
    {"recv/send after dup closed", K_SEND_RECV, 999, 1001},
    {"recvmmsg/sendmmsg", K_MMSG, 150 * 1024 + 1, 3 * 1024},
    {"ioctl FIONREAD/SIOCOUTQ", K_FIONREAD, 200 * 1024, 5000},
    {"splice through a pipe", K_SPLICE, 300 * 1024 + 7, 70000},
    {"shutdown(SHUT_WR) and EOF", K_SHUTDOWN, 4096, 70000},
};
#define NSTEPS (sizeof steps / sizeof steps[0])

static bool is_server;
static volatile const char* current_step = "setup";
static char error[300];
static uint64_t total_sent, total_received;
static size_t steps_done;

static const char* step_name(void) {
  return (const char*)current_step;
}

static bool fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static bool fail(const char* fmt, ...) {
  if (error[0] != '\0') return false;
  int n = snprintf(error, sizeof error, "%s: ", step_name());
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(error + n, sizeof error - (size_t)n, fmt, ap);
  va_end(ap);
  return false;
}

static uint64_t stream_seed(size_t step, bool response) {
  return mix64(0xe9 + step * 2 + response);
}

// ---- sending -------------------------------------------------------------------------------

static bool check_sent(ssize_t n, size_t len, const char* call) {
  if (n < 0) return fail("%s: %s", call, strerror(errno));
  if (n == 0 || (size_t)n > len) return fail("%s returned %zd for %zu bytes", call, n, len);
  total_sent += (uint64_t)n;
  return true;
}

static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// Sends a whole message with the step's sending call (retrying on short writes).
static bool send_message(int fd, enum kind kind, const uint8_t* buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    const uint8_t* p = buf + off;
    size_t rest = len - off;
    ssize_t n;
    const char* call;
    switch (kind) {
      case K_READV_WRITEV: {
        size_t a = rest / 3;
        struct iovec iov[4] = {{(void*)p, a},
                               {(void*)(p + a), 0},
                               {(void*)(p + a), rest - 2 * a},
                               {(void*)(p + rest - a), a}};
        n = writev(fd, iov, 4);
        call = "writev";
        break;
      }
      case K_SEND_RECV:
        n = send(fd, p, rest, MSG_NOSIGNAL);
        call = "send";
        break;
      case K_SENDTO_RECVFROM:
        n = sendto(fd, p, rest, 0, NULL, 0);
        call = "sendto";
        break;
      case K_SENDMSG_RECVMSG: {
        size_t a = rest / 2;
        struct iovec iov[2] = {{(void*)p, a}, {(void*)(p + a), rest - a}};
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
        n = sendmsg(fd, &msg, 0);
        call = "sendmsg";
        break;
      }
      case K_MMSG: {
        // Three entries of one sendmmsg, the middle one empty-then-rest split.
        size_t a = rest / 3;
        struct iovec iov[3] = {
            {(void*)p, a}, {(void*)(p + a), a}, {(void*)(p + 2 * a), rest - 2 * a}};
        struct mmsghdr mm[3];
        memset(mm, 0, sizeof mm);
        for (int i = 0; i < 3; i++) {
          mm[i].msg_hdr.msg_iov = &iov[i];
          mm[i].msg_hdr.msg_iovlen = 1;
        }
        int k = sendmmsg(fd, mm, 3, MSG_NOSIGNAL);
        call = "sendmmsg";
        n = k;
        if (k > 0) {
          n = 0;
          for (int i = 0; i < k; i++) n += mm[i].msg_len;
          // A stream socket sends entries in order; an entry sent short ends the message
          // here, and the rest goes in the next round.
          for (int i = 0; i < k; i++) {
            if (mm[i].msg_len != iov[i].iov_len) {
              n = 0;
              for (int j = 0; j <= i; j++) n += mm[j].msg_len;
              break;
            }
          }
        }
        break;
      }
      case K_SPLICE: {
        // Through a pipe: write into it, then splice from it into the socket.
        int pfd[2];
        if (pipe(pfd) != 0) return fail("pipe: %s", strerror(errno));
        size_t piece = rest < 16384 ? rest : 16384;
        ssize_t w = write(pfd[1], p, piece);
        n = w < 0 ? w : splice(pfd[0], NULL, fd, NULL, (size_t)w, 0);
        call = "splice(pipe -> socket)";
        if (n >= 0 && n != w) return fail("splice moved %zd of %zd bytes from the pipe", n, w);
        close(pfd[0]);
        close(pfd[1]);
        break;
      }
      case K_WAITALL: {
        // Four pieces with pauses, so the receiver's MSG_WAITALL really has to wait.
        size_t piece = len / 4 + 1;
        if (piece > rest) piece = rest;
        if (off > 0) pause_ms(20);
        n = send(fd, p, piece, 0);
        call = "send";
        break;
      }
      default:
        n = write(fd, p, rest);
        call = "write";
        break;
    }
    if (n < 0 && errno == EINTR) continue;
    if (!check_sent(n, rest, call)) return false;
    off += (size_t)n;
  }
  if (kind == K_FIONREAD) {
    int outq = -1;
    int unsent = -1;
    if (ioctl(fd, SIOCOUTQ, &outq) != 0) return fail("ioctl(SIOCOUTQ): %s", strerror(errno));
    if (ioctl(fd, SIOCOUTQNSD, &unsent) != 0)
      return fail("ioctl(SIOCOUTQNSD): %s", strerror(errno));
    if (outq < 0 || (size_t)outq > len || unsent < 0 || unsent > outq)
      return fail("SIOCOUTQ %d, SIOCOUTQNSD %d after sending %zu bytes", outq, unsent, len);
  }
  return true;
}

// ---- receiving -----------------------------------------------------------------------------

// The fortified calls need a destination of known size and a length that is not a
// compile-time constant; static storage gives the former, the loop the latter.
#define CHK_BUF 65536
static uint8_t chk_buf[CHK_BUF];

static bool check_received(ssize_t n, size_t want, const char* call) {
  if (n < 0) return fail("%s: %s", call, strerror(errno));
  if (n == 0) return fail("%s: unexpected EOF", call);
  if ((size_t)n > want) return fail("%s returned %zd for %zu bytes", call, n, want);
  total_received += (uint64_t)n;
  return true;
}

// One receive call of at most `want` bytes into buf, with the step's receiving call.
static ssize_t receive_once(int fd, enum kind kind, uint8_t* buf, size_t want) {
  struct sockaddr_storage from;
  socklen_t fromlen = sizeof from;
  ssize_t n;
  const char* call;
  if (want > CHK_BUF) want = CHK_BUF;
  // Hide the clamp from the optimiser: had it proven want <= CHK_BUF, the fortified read()
  // would compile to the plain read() and __read_chk would never be exercised.
  __asm__ volatile("" : "+r"(want));
  switch (kind) {
    case K_READV_WRITEV: {
      size_t a = want / 2;
      struct iovec iov[3] = {{buf, a}, {buf + a, 0}, {buf + a, want - a}};
      n = readv(fd, iov, 3);
      call = "readv";
      break;
    }
    case K_SEND_RECV:
      n = recv(fd, buf, want, 0);
      call = "recv";
      break;
    case K_SENDTO_RECVFROM:
      n = recvfrom(fd, buf, want, 0, (struct sockaddr*)&from, &fromlen);
      call = "recvfrom";
      // Linux TCP never reports a source address: the length comes back as 0.
      if (n > 0 && fromlen != 0) return fail("recvfrom set addrlen %u, TCP gives 0", fromlen), -1;
      break;
    case K_SENDMSG_RECVMSG: {
      size_t a = want / 3;
      struct iovec iov[2] = {{buf, a}, {buf + a, want - a}};
      struct msghdr msg = {
          .msg_name = &from, .msg_namelen = sizeof from, .msg_iov = iov, .msg_iovlen = 2};
      n = recvmsg(fd, &msg, 0);
      call = "recvmsg";
      if (n > 0 && (msg.msg_namelen != 0 || msg.msg_flags != 0))
        return fail("recvmsg set msg_namelen %u msg_flags %#x, TCP gives 0 and 0", msg.msg_namelen,
                    msg.msg_flags),
               -1;
      break;
    }
    case K_MMSG: {
      // Up to three entries; MSG_WAITFORONE: only the first waits. A stream fills each
      // entry with what is there, short or not, so the entries are joined in order.
      size_t a = want / 3 + 1;
      struct iovec iov[3];
      struct mmsghdr mm[3];
      memset(mm, 0, sizeof mm);
      for (int i = 0; i < 3; i++) {
        size_t from = (size_t)i * a;
        iov[i].iov_base = chk_buf + from;
        iov[i].iov_len = from >= want ? 0 : (want - from < a ? want - from : a);
        mm[i].msg_hdr.msg_iov = &iov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
      }
      int k = recvmmsg(fd, mm, 3, MSG_WAITFORONE, NULL);
      call = "recvmmsg";
      n = k;
      if (k > 0) {
        n = 0;
        for (int i = 0; i < k; i++) {
          if (mm[i].msg_len > iov[i].iov_len) return fail("recvmmsg entry %d overfilled", i), -1;
          if (mm[i].msg_hdr.msg_flags != 0) return fail("recvmmsg set msg_flags"), -1;
          memmove(buf + n, iov[i].iov_base, mm[i].msg_len);
          n += mm[i].msg_len;
        }
      }
      break;
    }
    case K_SPLICE: {
      // splice from the socket into a pipe, then read the pipe.
      int pfd[2];
      if (pipe(pfd) != 0) return fail("pipe: %s", strerror(errno)), -1;
      n = splice(fd, NULL, pfd[1], NULL, want, 0);
      call = "splice(socket -> pipe)";
      if (n > 0) {
        ssize_t r = read(pfd[0], buf, (size_t)n);
        if (r != n) return fail("pipe gave %zd of the %zd spliced bytes", r, n), -1;
      }
      close(pfd[0]);
      close(pfd[1]);
      break;
    }
    case K_FIONREAD: {
      // Waits for FIONREAD to show data, then reads exactly what it announced.
      int avail = 0;
      for (;;) {
        if (ioctl(fd, FIONREAD, &avail) != 0)
          return fail("ioctl(FIONREAD): %s", strerror(errno)), -1;
        if (avail > 0) break;
        pause_ms(1);
      }
      size_t take = (size_t)avail < want ? (size_t)avail : want;
      n = read(fd, buf, take);
      call = "read after FIONREAD";
      if (n >= 0 && (size_t)n != take)
        return fail("FIONREAD said %d, read of %zu returned %zd", avail, take, n), -1;
      break;
    }
    case K_READ_CHK:
      n = read(fd, chk_buf, want);
      call = "__read_chk";
      if (n > 0) memcpy(buf, chk_buf, (size_t)n);
      break;
    case K_RECV_CHK:
      n = recv(fd, chk_buf, want, 0);
      call = "__recv_chk";
      if (n > 0) memcpy(buf, chk_buf, (size_t)n);
      break;
    case K_RECVFROM_CHK:
      n = recvfrom(fd, chk_buf, want, 0, (struct sockaddr*)&from, &fromlen);
      call = "__recvfrom_chk";
      if (n > 0) memcpy(buf, chk_buf, (size_t)n);
      break;
    default:
      n = read(fd, buf, want);
      call = "read";
      break;
  }
  if (n < 0 && errno == EINTR) return -2;
  if (!check_received(n, want, call)) return -1;
  return n;
}

// Receives a whole message with the step's receiving call(s) and verifies it.
static bool receive_message(int fd, enum kind kind, uint8_t* buf, size_t len, uint64_t seed) {
  size_t off = 0;
  if (kind == K_READ_WRITE) {
    // A zero-length read on a live connection returns 0 without consuming anything.
    ssize_t z = read(fd, buf, 0);
    if (z != 0) return fail("read(fd, buf, 0) returned %zd (%s)", z, strerror(errno));
  }
  if (kind == K_PEEK) {
    ssize_t p = recv(fd, buf, len, MSG_PEEK);
    if (!check_received(p, len, "recv(MSG_PEEK)")) return false;
    total_received -= (uint64_t)p;  // peeked bytes are counted when really read
    size_t bad = pattern_check(seed, 0, buf, (size_t)p);
    if (bad != SIZE_MAX) return fail("MSG_PEEK data wrong at offset %zu", bad);
    uint8_t first = 0;
    ssize_t again = recv(fd, &first, 1, MSG_PEEK);
    if (again != 1 || first != buf[0]) return fail("second MSG_PEEK did not see the same byte");
  }
  if (kind == K_WAITALL) {
    ssize_t n = recv(fd, buf, len, MSG_WAITALL);
    if (!check_received(n, len, "recv(MSG_WAITALL)")) return false;
    if ((size_t)n != len)
      return fail("recv(MSG_WAITALL) returned %zd of %zu bytes (no signal, no EOF)", n, len);
    off = len;
  }
  int dupfd = -1;
  if (kind == K_DUP) {
    // Client: dup(); server: fcntl(F_DUPFD_CLOEXEC). The first half is read through the
    // duplicate, the rest through the original, then the duplicate is closed.
    dupfd = is_server ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : dup(fd);
    if (dupfd < 0) return fail("dup: %s", strerror(errno));
  }
  while (off < len) {
    int use = dupfd >= 0 && off < len / 2 ? dupfd : fd;
    size_t want = len - off;
    if (use == dupfd && want > len / 2 - off) want = len / 2 - off;
    ssize_t n = receive_once(use, kind, buf + off, want);
    if (n == -2) continue;
    if (n < 0) return false;
    off += (size_t)n;
  }
  if (dupfd >= 0 && close(dupfd) != 0) return fail("close(dup): %s", strerror(errno));
  size_t bad = pattern_check(seed, 0, buf, len);
  if (bad != SIZE_MAX) return fail("data wrong at offset %zu of %zu", bad, len);
  return true;
}

static bool expect_eof(int fd, const char* when) {
  uint8_t b;
  ssize_t n = read(fd, &b, 1);
  if (n == 0) return true;
  if (n > 0) return fail("got data %s, expected EOF", when);
  return fail("read %s: %s (expected EOF)", when, strerror(errno));
}

// ---- the two roles -------------------------------------------------------------------------

static bool run_steps(int fd, uint8_t* buf, size_t bufsize) {
  for (size_t i = 0; i < NSTEPS; i++) {
    const struct step* s = &steps[i];
    current_step = s->name;
    size_t in = is_server ? s->req : s->resp;
    size_t out = is_server ? s->resp : s->req;
    if (in > bufsize || out > bufsize) return fail("message larger than buffer");
    uint64_t in_seed = stream_seed(i, !is_server), out_seed = stream_seed(i, is_server);
    if (is_server) {
      if (!receive_message(fd, s->kind, buf, in, in_seed)) return false;
      if (s->kind == K_SHUTDOWN && !expect_eof(fd, "after the client's shutdown(SHUT_WR)"))
        return false;
      pattern_fill(out_seed, 0, buf, out);
      if (!send_message(fd, s->kind, buf, out)) return false;
    } else {
      pattern_fill(out_seed, 0, buf, out);
      if (s->kind == K_DUP) {
        int d = dup(fd);
        if (d < 0) return fail("dup: %s", strerror(errno));
        bool ok = send_message(d, s->kind, buf, out);
        if (close(d) != 0) return fail("close(dup): %s", strerror(errno));
        if (!ok) return false;
      } else if (!send_message(fd, s->kind, buf, out)) {
        return false;
      }
      if (s->kind == K_SHUTDOWN && shutdown(fd, SHUT_WR) != 0)
        return fail("shutdown(SHUT_WR): %s", strerror(errno));
      if (!receive_message(fd, s->kind, buf, in, in_seed)) return false;
      if (s->kind == K_SHUTDOWN) {
        // The server closes after its response: EOF, and EOF again (it is sticky).
        if (!expect_eof(fd, "after the server closed")) return false;
        if (!expect_eof(fd, "a second time after the server closed")) return false;
      }
    }
    steps_done++;
  }
  current_step = "close";
  return true;
}

static void usage(void) {
  fprintf(stderr,
          "usage: entrypoints server --port P [--bind ADDR] [--timeout S]\n"
          "       entrypoints client --host H --port P [--timeout S]\n");
  exit(2);
}

int main(int argc, char** argv) {
  const char* host = NULL;
  const char* bind_addr = "127.0.0.1";
  long long port = -1, timeout = 30;
  if (argc < 2) usage();
  if (strcmp(argv[1], "server") == 0)
    is_server = true;
  else if (strcmp(argv[1], "client") != 0)
    usage();
  for (int i = 2; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--port") == 0)
      port = parse_size(argv[i + 1]);
    else if (strcmp(argv[i], "--host") == 0)
      host = argv[i + 1];
    else if (strcmp(argv[i], "--bind") == 0)
      bind_addr = argv[i + 1];
    else if (strcmp(argv[i], "--timeout") == 0)
      timeout = parse_size(argv[i + 1]);
    else
      usage();
  }
  if ((argc % 2) != 0 || port < 0 || port > 65535 || timeout < 1 || (!is_server && host == NULL))
    usage();
  signal(SIGPIPE, SIG_IGN);
  arm_timeout("entrypoints", (unsigned)timeout, step_name);

  int fd;
  if (is_server) {
    int bound = 0;
    int lfd = listen_tcp(bind_addr, (int)port, &bound);
    if (lfd < 0) return 1;
    fprintf(stderr, "listening %d\n", bound);
    fflush(stderr);
    current_step = "accept";
    fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      perror("accept");
      return 1;
    }
    close(lfd);
  } else {
    current_step = "connect";
    fd = connect_tcp(host, (int)port);
    if (fd < 0) {
      fprintf(stderr, "entrypoints: connect: %s\n", strerror(errno));
      return 1;
    }
  }

  size_t bufsize = 1 << 20;
  uint8_t* buf = malloc(bufsize);
  bool ok = buf != NULL ? run_steps(fd, buf, bufsize) : fail("out of memory");
  struct tcpstats st = tcp_stats(fd);
  if (close(fd) != 0) ok = fail("close: %s", strerror(errno));
  free(buf);

  printf(
      "{\"role\":\"%s\",\"steps\":%zu,\"steps_done\":%zu,\"bytes_sent\":%llu,"
      "\"bytes_received\":%llu,\"ok\":%s,\"tcp_bytes_received\":%llu,"
      "\"tcp_bytes_acked\":%llu,\"tcp_segs_in\":%u,\"tcp_segs_out\":%u,\"error\":",
      is_server ? "server" : "client", NSTEPS, steps_done, (unsigned long long)total_sent,
      (unsigned long long)total_received, ok ? "true" : "false",
      (unsigned long long)st.bytes_received, (unsigned long long)st.bytes_acked, st.segs_in,
      st.segs_out);
  json_string(stdout, ok ? NULL : error);
  printf("}\n");
  return ok ? 0 : 1;
}
