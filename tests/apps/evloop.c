// evloop: an event-driven TCP application (non-blocking sockets, one readiness loop serving
// every connection), the way real servers are written. Like tcpapp it knows nothing of
// smcpre and moves a verified pseudo-random byte stream; the integration tests run it with
// and without the preload and compare.
//
//   evloop server --port P [--bind ADDR] --mode sink|echo|source --bytes N [--conns K]
//                 [--api epoll|epoll-et|poll|select] [--oneshot] [--threads T]
//   evloop client --host H --port P --mode sink|echo|source --bytes N [--conns K]
//                 [--api ...] [--oneshot] [--threads T]
//   common: [--chunk N|random] [--seed S] [--timeout SECONDS] (default 120; exit 3 on expiry)
//   client, echo mode: [--requests R] [--end shutdown|close|open]
//   common: [--idle SECONDS]
//
// Modes and wire format are tcpapp's, so either program can talk to the other:
//   sink    the client sends N bytes, then shutdown(SHUT_WR); the server verifies them,
//           replies with 16 bytes (big-endian u64 count, u64 Fletcher checksum), waits for
//           the client's EOF and closes; the client checks the reply, then expects EOF.
//   echo    the server sends back everything it reads until EOF and closes; the client
//           sends N bytes, then shutdown(SHUT_WR), while it reads and verifies the echo.
//   source  the client sends "GET\n"; the server sends N bytes and closes; the client reads
//           and verifies to EOF.
// Streams are seeded from --seed and the client's port, exactly as in tcpapp.
//
// The server's listening socket is non-blocking; accept4(SOCK_NONBLOCK) hands out
// non-blocking sockets that are registered with the readiness API before anything is read
// from them. The client connects K sockets with blocking connect(), makes them non-blocking
// (fcntl O_NONBLOCK) and runs the same loop. All K connections progress concurrently.
//
// --api:
//   epoll     level-triggered; the interest set follows what each connection waits for
//             (EPOLL_CTL_MOD), one read and one write call per event (the loop must report
//             again what is still ready), EPOLL_CTL_DEL before close (redis' way).
//   epoll-et  edge-triggered, registered once for EPOLLIN|EPOLLOUT|EPOLLRDHUP; every event
//             is drained until EAGAIN (or until the connection needs nothing more in that
//             direction); close() without EPOLL_CTL_DEL (nginx's way).
//   poll      poll() over a set rebuilt every round, POLLRDHUP requested with POLLIN.
//   select    select() with fd_sets (FD_SETSIZE bounds the fds).
// --oneshot: EPOLLONESHOT on connections, re-armed after every event (epoll APIs only).
// --requests R (client, echo mode): a keep-alive client: the N bytes go as R requests of
//   N/R bytes (rounded up), each sent only once the echo of the previous one is complete.
// --end (client, echo mode): how the client ends a connection once its echo is complete:
//   shutdown (default) SHUT_WR, then the server's EOF, then close(); close: close() at
//   once; open: never, the process exits with the connection open (exit(), not a crash).
// --idle S: once every connection is done, print "idle" on stderr and sleep S seconds
//   before exiting (a test measures what the idle server costs meanwhile; a client with
//   --end open keeps its connections open that long, so its peer is asleep when it exits).
// --threads T (epoll APIs only): T threads wait on one epoll set; the listener carries
//   EPOLLEXCLUSIVE and connections EPOLLONESHOT (implied), so a connection is handled by
//   one thread at a time.
// An eventfd in every set ends the loop once all connections are done (a mixed set: the
// sockets next to an ordinary fd).
//
// Checks beyond the data: accepted sockets must be non-blocking; with level-triggered epoll
// and poll a read that returns EOF must follow an event that reported EPOLLRDHUP/POLLRDHUP
// (kernel TCP sets it together with EPOLLIN at the peer's FIN), or, when the FIN came after
// the event, the socket must report it at the read; an event for a connection
// that is already closed, or (with EPOLLONESHOT) one that another thread is still handling,
// fails the run. Readiness that turns out not to be there (the first read or write after an
// event returns EAGAIN) is counted as "spurious" in the record. A timeout names the call
// that hung.
//
// Output: one JSON line per connection on stdout (tcpapp's fields plus api, events and
// spurious; TCP_INFO taken before close); the server prints "listening <port>" on stderr.
// Exit status 0 only if every connection was ok.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "apputil.h"

enum mode { MODE_SINK, MODE_ECHO, MODE_SOURCE };
static const char* const mode_names[] = {"sink", "echo", "source"};
enum api { API_EPOLL, API_EPOLL_ET, API_POLL, API_SELECT };
static const char* const api_names[] = {"epoll", "epoll-et", "poll", "select"};

// Largest single read or write; also the size of the echo server's ring.
#define MAX_CHUNK (256u * 1024u)
#define MAX_CONNS 4096
#define MAX_THREADS 64

static const char kRequest[] = "GET\n";  // source mode: what the client asks first
#define REQUEST_LEN (sizeof kRequest - 1)
#define REPLY_LEN 16

struct options {
  bool server;
  const char* host;
  const char* bind;
  int port;
  enum mode mode;
  long long bytes;  // -1: not given
  int conns;
  enum api api;
  bool oneshot;
  int threads;
  size_t chunk;  // 0: random
  uint64_t seed;
  unsigned timeout;
  long long requests;  // 0: one stream
  enum end { END_SHUTDOWN, END_CLOSE, END_OPEN } end;
  unsigned idle;
};
static const char* const end_names[] = {"shutdown", "close", "open"};
static struct options opt = {
    .bytes = -1, .conns = 1, .api = API_EPOLL, .threads = 1, .seed = 1, .timeout = 120};

// Readiness as the handlers see it, whatever API reported it.
enum { EV_IN = 1, EV_OUT = 2, EV_RDHUP = 4, EV_HUP = 8, EV_ERR = 16 };

// ---- per-connection state ----------------------------------------------------------------

// What a connection is doing in each direction; the two run concurrently.
enum rx_step {
  RX_IDLE,  // nothing to read until the send side has done its part
  RX_MSG,   // a small message: the request (server) or the sink reply (client)
  RX_DATA,  // the pattern stream, up to rx_limit bytes or to EOF
  RX_EOF,   // nothing but EOF may come
  RX_DONE,
};
enum tx_step {
  TX_IDLE,  // nothing to send until the receive side has done its part
  TX_MSG,   // msg_out
  TX_DATA,  // the pattern stream, tx_total bytes
  TX_ECHO,  // echo server: whatever the ring holds
  TX_DONE,
};

struct conn {
  int fd;
  int index;
  bool active;                // open and not yet finished (an event for an inactive conn is stray)
  atomic_bool busy;           // a thread is handling an event of this connection
  uint64_t seed_rx, seed_tx;  // pattern seeds of the stream this end receives / sends
  struct rng rng;             // chunk sizes and call choices
  enum rx_step rx;
  enum tx_step tx;
  long long rx_limit;  // RX_DATA: stream bytes expected, -1: until EOF
  uint64_t rx_off;     // RX_DATA: stream bytes received and verified so far
  uint8_t msg_in[REPLY_LEN];
  size_t msg_in_want, msg_in_got;
  uint64_t tx_total, tx_filled;  // TX_DATA: stream length, bytes generated into sbuf so far
  uint8_t msg_out[REPLY_LEN];
  size_t pend_pos, pend_len;   // TX_MSG/TX_DATA: unsent part of msg_out or sbuf
  size_t ring_head, ring_len;  // echo server: bytes read but not yet echoed, in rbuf
  struct fletcher sum;         // sink: checksum of the data stream
  uint64_t sent, received;     // application bytes through this socket
  bool may_read, may_write;    // readiness known and not yet used up
  unsigned last_ev;            // the event being handled (EV_* bits)
  uint32_t registered;         // level-triggered epoll: the events in the set now
  unsigned events, spurious;
  uint8_t* sbuf;
  uint8_t* rbuf;
  char error[256];
};

// The loop's shared state. Connection slots are never reused: an event carrying the index
// of a finished connection is detectably stray.
static struct {
  int epfd, stopfd, lfd;
  struct conn* conns;
  pthread_mutex_t lock;  // the counters below, and stdout
  int accepted, finished, failures, stray, overlaps;
  bool fatal;
} L = {.epfd = -1, .stopfd = -1, .lfd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

#define TAG_STOP UINT64_MAX
#define TAG_LISTEN (UINT64_MAX - 1)

// Where the process waits or which call it is in, for the timeout message (read from the
// signal handler; with several threads, the latest one to get there).
static const char* volatile waiting_in = "setup";
static const char* where(void) {
  return waiting_in;
}

static bool fail(struct conn* c, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(struct conn* c, const char* fmt, ...) {
  if (c->error[0] != '\0') return false;  // keep the first error: later ones are fallout
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->error, sizeof c->error, fmt, ap);
  va_end(ap);
  return false;
}

static bool failed(const struct conn* c) {
  return c->error[0] != '\0';
}

static void report(const struct conn* c, const struct tcpstats* st) {
  bool ok = !failed(c);
  printf(
      "{\"role\":\"%s\",\"conn\":%d,\"mode\":\"%s\",\"api\":\"%s\",\"bytes_sent\":%llu,"
      "\"bytes_received\":%llu,\"ok\":%s,\"tcp_bytes_received\":%llu,\"tcp_bytes_acked\":%llu,"
      "\"tcp_segs_in\":%u,\"tcp_segs_out\":%u,\"events\":%u,\"spurious\":%u,\"error\":",
      opt.server ? "server" : "client", c->index, mode_names[opt.mode], api_names[opt.api],
      (unsigned long long)c->sent, (unsigned long long)c->received, ok ? "true" : "false",
      (unsigned long long)st->bytes_received, (unsigned long long)st->bytes_acked, st->segs_in,
      st->segs_out, c->events, c->spurious);
  json_string(stdout, ok ? NULL : c->error);
  printf("}\n");
  fflush(stdout);
}

// Ends the loop in every thread: the stop eventfd stays readable (it is never read).
static void stop_loop(void) {
  uint64_t one = 1;
  if (write(L.stopfd, &one, sizeof one) != (ssize_t)sizeof one) perror("eventfd write");
}

static void fatal(const char* what) {
  perror(what);
  pthread_mutex_lock(&L.lock);
  L.fatal = true;
  pthread_mutex_unlock(&L.lock);
  stop_loop();
}

static bool loop_done(void) {
  pthread_mutex_lock(&L.lock);
  bool done = L.fatal || L.finished == opt.conns;
  pthread_mutex_unlock(&L.lock);
  return done;
}

// ---- what a connection waits for ---------------------------------------------------------

static bool echo_server(void) {
  return opt.server && opt.mode == MODE_ECHO;
}

static bool wants_read(const struct conn* c) {
  switch (c->rx) {
    case RX_MSG:
    case RX_EOF:
      return true;
    case RX_DATA:
      return !echo_server() || c->ring_len < MAX_CHUNK;  // a full ring waits for the writer
    default:
      return false;
  }
}

// How far the client's stream may be sent now: with --requests, up to the end of the
// request after the last one whose echo is complete.
static uint64_t tx_allowed(const struct conn* c) {
  if (opt.requests == 0) return c->tx_total;
  uint64_t req = ((uint64_t)opt.bytes + (uint64_t)opt.requests - 1) / (uint64_t)opt.requests;
  if (req == 0) return c->tx_total;
  uint64_t next = (c->rx_off / req + 1) * req;
  return next < c->tx_total ? next : c->tx_total;
}

static bool wants_write(const struct conn* c) {
  switch (c->tx) {
    case TX_MSG:
      return true;
    case TX_DATA:
      return c->pend_pos < c->pend_len || c->tx_filled < tx_allowed(c);
    case TX_ECHO:
      return c->ring_len > 0;
    default:
      return false;
  }
}

static bool conn_complete(const struct conn* c) {
  return failed(c) || (c->rx == RX_DONE && c->tx == TX_DONE);
}

// ---- the protocol: what follows when a step is complete ------------------------------------

static void start_msg_out(struct conn* c, const void* msg, size_t len) {
  memcpy(c->msg_out, msg, len);
  c->pend_pos = 0;
  c->pend_len = len;
  c->tx = TX_MSG;
}

static void start_msg_in(struct conn* c, size_t len) {
  c->msg_in_want = len;
  c->msg_in_got = 0;
  c->rx = RX_MSG;
}

static void start_data_out(struct conn* c, uint64_t total) {
  c->tx_total = total;
  c->tx_filled = 0;
  c->pend_pos = c->pend_len = 0;
  c->tx = TX_DATA;
}

static void start_data_in(struct conn* c, long long limit) {
  c->rx_limit = limit;
  c->rx_off = 0;
  c->rx = RX_DATA;
}

static void conn_start(struct conn* c) {
  if (opt.server) {
    switch (opt.mode) {
      case MODE_SINK:
        start_data_in(c, opt.bytes);
        break;
      case MODE_SOURCE:
        start_msg_in(c, REQUEST_LEN);
        break;
      case MODE_ECHO:
        start_data_in(c, -1);
        c->tx = TX_ECHO;
        break;
    }
    return;
  }
  switch (opt.mode) {
    case MODE_SINK:
      start_data_out(c, (uint64_t)opt.bytes);
      start_msg_in(c, REPLY_LEN);  // the reply can only come after all data; read it early
      break;
    case MODE_SOURCE:
      start_msg_out(c, kRequest, REQUEST_LEN);
      start_data_in(c, -1);
      break;
    case MODE_ECHO:
      start_data_out(c, (uint64_t)opt.bytes);
      start_data_in(c, opt.bytes);
      break;
  }
}

// The current receive step is complete (`eof`: it ended with the peer's EOF).
static void rx_complete(struct conn* c, bool eof) {
  if (c->rx == RX_EOF) {
    c->rx = RX_DONE;
    return;
  }
  if (opt.server) {
    switch (opt.mode) {
      case MODE_SINK: {  // all data: reply, then the client's EOF
        uint8_t reply[REPLY_LEN];
        put_be64(reply, c->rx_off);
        put_be64(reply + 8, fletcher_value(&c->sum));
        start_msg_out(c, reply, sizeof reply);
        c->rx = RX_IDLE;
        return;
      }
      case MODE_SOURCE:  // the request
        if (memcmp(c->msg_in, kRequest, REQUEST_LEN) != 0) {
          fail(c, "wrong request");
          return;
        }
        c->rx = RX_DONE;
        start_data_out(c, (uint64_t)opt.bytes);
        return;
      case MODE_ECHO:  // EOF after the data
        if (c->rx_off != (uint64_t)opt.bytes)
          fail(c, "echoed %llu bytes, expected %lld", (unsigned long long)c->rx_off, opt.bytes);
        c->rx = RX_DONE;
        return;
    }
  }
  switch (opt.mode) {
    case MODE_SINK:  // the reply
      if (c->tx != TX_DONE) {
        fail(c, "sink reply arrived after only %llu of %lld bytes were sent",
             (unsigned long long)c->sent, opt.bytes);
        return;
      }
      if (get_be64(c->msg_in) != (uint64_t)opt.bytes) {
        fail(c, "server counted %llu bytes, sent %lld", (unsigned long long)get_be64(c->msg_in),
             opt.bytes);
        return;
      }
      if (get_be64(c->msg_in + 8) != fletcher_value(&c->sum)) {
        fail(c, "server checksum %016llx differs from ours %016llx",
             (unsigned long long)get_be64(c->msg_in + 8),
             (unsigned long long)fletcher_value(&c->sum));
        return;
      }
      c->rx = RX_EOF;  // the server closes once it has seen our EOF
      return;
    case MODE_SOURCE:  // the data, to EOF
      if (c->rx_off != (uint64_t)opt.bytes)
        fail(c, "received %llu bytes before EOF, expected %lld", (unsigned long long)c->rx_off,
             opt.bytes);
      c->rx = RX_DONE;
      return;
    case MODE_ECHO:  // the whole echo; the server's close follows our half-close
      c->rx = eof || opt.end != END_SHUTDOWN ? RX_DONE : RX_EOF;
      return;
  }
}

// The current send step is complete.
static void tx_complete(struct conn* c) {
  c->tx = TX_DONE;
  if (opt.server) {
    if (opt.mode == MODE_SINK) c->rx = RX_EOF;  // reply sent; the client's EOF comes next
    return;
  }
  if (opt.mode == MODE_SOURCE || opt.end != END_SHUTDOWN) return;
  waiting_in = "shutdown(SHUT_WR)";
  if (shutdown(c->fd, SHUT_WR) != 0) fail(c, "shutdown(SHUT_WR): %s", strerror(errno));
  waiting_in = "event handling";
}

// Completes every step that needs no further I/O (a full message, a stream at its limit,
// an empty stream).
static void settle(struct conn* c) {
  while (!failed(c)) {
    if (c->rx == RX_MSG && c->msg_in_got == c->msg_in_want)
      rx_complete(c, false);
    else if (c->rx == RX_DATA && c->rx_limit >= 0 && c->rx_off == (uint64_t)c->rx_limit)
      rx_complete(c, false);
    else if (c->tx == TX_MSG && c->pend_pos == c->pend_len)
      tx_complete(c);
    else if (c->tx == TX_DATA && c->tx_filled == c->tx_total && c->pend_pos == c->pend_len)
      tx_complete(c);
    else if (c->tx == TX_ECHO && c->rx == RX_DONE && c->ring_len == 0)
      tx_complete(c);
    else
      return;
  }
}

// ---- I/O ---------------------------------------------------------------------------------

static size_t min_size(size_t a, size_t b) {
  return a < b ? a : b;
}

enum io { IO_PROGRESS, IO_AGAIN, IO_FAILED };

// One receive call (read, recv or recvmsg, chosen at random).
static ssize_t recv_call(struct conn* c, void* buf, size_t len) {
  ssize_t n;
  do {
    struct iovec iov = {buf, len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    switch (rng_next(&c->rng) % 3) {
      case 0:
        waiting_in = "read() on a non-blocking socket";
        n = read(c->fd, buf, len);
        break;
      case 1:
        waiting_in = "recv() on a non-blocking socket";
        n = recv(c->fd, buf, len, 0);
        break;
      default:
        waiting_in = "recvmsg() on a non-blocking socket";
        n = recvmsg(c->fd, &msg, 0);
        break;
    }
  } while (n < 0 && errno == EINTR);
  waiting_in = "event handling";
  return n;
}

// One send call (write, send, writev or sendmsg, chosen at random).
static ssize_t send_call(struct conn* c, const void* buf, size_t len) {
  ssize_t n;
  do {
    struct iovec iov = {(void*)buf, len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    switch (rng_next(&c->rng) % 4) {
      case 0:
        waiting_in = "write() on a non-blocking socket";
        n = write(c->fd, buf, len);
        break;
      case 1:
        waiting_in = "send() on a non-blocking socket";
        n = send(c->fd, buf, len, MSG_NOSIGNAL);
        break;
      case 2:
        waiting_in = "writev() on a non-blocking socket";
        n = writev(c->fd, &iov, 1);
        break;
      default:
        waiting_in = "sendmsg() on a non-blocking socket";
        n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        break;
    }
  } while (n < 0 && errno == EINTR);
  waiting_in = "event handling";
  return n;
}

static bool rdhup_checked(void) {
  return opt.api == API_EPOLL || opt.api == API_POLL;
}

// Whether the socket reports the peer's FIN now (poll, no wait).
static bool rdhup_now(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
  return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP)) != 0;
}

static enum io on_eof(struct conn* c) {
  // Level-triggered: the read that finds EOF follows an event, and kernel TCP reports
  // EPOLLRDHUP with EPOLLIN once the FIN is in. The FIN may also arrive between the event
  // (taken for data) and the read; then RDHUP must show now, or it was never reported.
  if (rdhup_checked() && (c->last_ev & (EV_RDHUP | EV_HUP)) == 0 && !rdhup_now(c->fd)) {
    fail(c, "read returned EOF after an event without %s (events 0x%x)",
         opt.api == API_POLL ? "POLLRDHUP" : "EPOLLRDHUP", c->last_ev);
    return IO_FAILED;
  }
  switch (c->rx) {
    case RX_MSG:
      fail(c, "EOF after %zu of %zu bytes of the %s", c->msg_in_got, c->msg_in_want,
           opt.server ? "request" : "sink reply");
      return IO_FAILED;
    case RX_DATA:
      if (c->rx_limit >= 0) {
        fail(c, "EOF after %llu of %lld bytes", (unsigned long long)c->rx_off, c->rx_limit);
        return IO_FAILED;
      }
      break;
    default:
      break;
  }
  rx_complete(c, true);
  settle(c);
  return IO_PROGRESS;
}

static enum io do_read(struct conn* c) {
  uint8_t* dst;
  size_t len;
  switch (c->rx) {
    case RX_MSG:
      dst = c->msg_in + c->msg_in_got;
      len = c->msg_in_want - c->msg_in_got;
      break;
    case RX_EOF:
      dst = c->rbuf;
      len = 1;
      break;
    case RX_DATA:
      len = pick_chunk(&c->rng, opt.chunk, MAX_CHUNK);
      if (c->rx_limit >= 0) len = (size_t)min_size(len, (uint64_t)c->rx_limit - c->rx_off);
      if (echo_server()) {  // into the ring's free space behind the unsent bytes
        size_t tail = (c->ring_head + c->ring_len) % MAX_CHUNK;
        len = min_size(len, min_size(MAX_CHUNK - c->ring_len, MAX_CHUNK - tail));
        dst = c->rbuf + tail;
      } else {
        dst = c->rbuf;
      }
      break;
    default:
      fail(c, "internal: read in receive step %d", (int)c->rx);
      return IO_FAILED;
  }
  ssize_t n = recv_call(c, dst, len);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return IO_AGAIN;
  if (n < 0) {
    fail(c, "receive after %llu bytes: %s", (unsigned long long)c->received, strerror(errno));
    return IO_FAILED;
  }
  if ((size_t)n > len) {
    fail(c, "receive returned %zd for a %zu-byte buffer", n, len);
    return IO_FAILED;
  }
  if (n == 0) return on_eof(c);
  c->received += (uint64_t)n;
  switch (c->rx) {
    case RX_MSG:
      c->msg_in_got += (size_t)n;
      break;
    case RX_EOF:
      fail(c, "unexpected byte 0x%02x (expected EOF)", dst[0]);
      return IO_FAILED;
    default: {
      size_t bad = pattern_check(c->seed_rx, c->rx_off, dst, (size_t)n);
      if (bad != SIZE_MAX) {
        fail(c, "data mismatch at stream offset %llu (got 0x%02x)",
             (unsigned long long)(c->rx_off + bad), dst[bad]);
        return IO_FAILED;
      }
      if (opt.server && opt.mode == MODE_SINK) fletcher_update(&c->sum, dst, (size_t)n);
      if (echo_server()) c->ring_len += (size_t)n;
      c->rx_off += (uint64_t)n;
      break;
    }
  }
  settle(c);
  return IO_PROGRESS;
}

static enum io do_write(struct conn* c) {
  const uint8_t* src;
  size_t len;
  switch (c->tx) {
    case TX_MSG:
      src = c->msg_out + c->pend_pos;
      len = c->pend_len - c->pend_pos;
      break;
    case TX_DATA:
      if (c->pend_pos == c->pend_len) {  // the next chunk of the stream
        size_t n = (size_t)min_size(pick_chunk(&c->rng, opt.chunk, MAX_CHUNK),
                                    tx_allowed(c) - c->tx_filled);
        pattern_fill(c->seed_tx, c->tx_filled, c->sbuf, n);
        if (!opt.server && opt.mode == MODE_SINK) fletcher_update(&c->sum, c->sbuf, n);
        c->tx_filled += n;
        c->pend_pos = 0;
        c->pend_len = n;
      }
      src = c->sbuf + c->pend_pos;
      len = c->pend_len - c->pend_pos;
      break;
    case TX_ECHO:
      src = c->rbuf + c->ring_head;
      len = min_size(c->ring_len, MAX_CHUNK - c->ring_head);
      break;
    default:
      fail(c, "internal: write in send step %d", (int)c->tx);
      return IO_FAILED;
  }
  ssize_t n = send_call(c, src, len);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return IO_AGAIN;
  if (n < 0) {
    fail(c, "send after %llu bytes: %s", (unsigned long long)c->sent, strerror(errno));
    return IO_FAILED;
  }
  if (n == 0 || (size_t)n > len) {
    fail(c, "send returned %zd for %zu bytes", n, len);
    return IO_FAILED;
  }
  c->sent += (uint64_t)n;
  if (c->tx == TX_ECHO) {
    c->ring_head = (c->ring_head + (size_t)n) % MAX_CHUNK;
    c->ring_len -= (size_t)n;
  } else {
    c->pend_pos += (size_t)n;
  }
  settle(c);
  return IO_PROGRESS;
}

// Handles one readiness event. Level-triggered APIs make one read and one write call per
// event and rely on being told again; edge-triggered epoll keeps going until both
// directions are blocked (EAGAIN) or need nothing more, and remembers readiness it has not
// used up (a full echo ring stops reading without EAGAIN). Returns true when the
// connection is complete (done or failed).
static bool conn_event(struct conn* c, unsigned ev) {
  const bool edge = opt.api == API_EPOLL_ET;
  const bool rd = (ev & (EV_IN | EV_RDHUP | EV_HUP | EV_ERR)) != 0;
  const bool wr = (ev & (EV_OUT | EV_HUP | EV_ERR)) != 0;
  c->events++;
  c->last_ev = ev;
  if (edge) {
    c->may_read |= rd;
    c->may_write |= wr;
  } else {
    c->may_read = rd;
    c->may_write = wr;
  }
  // The first call after an event that said "ready" must not block (TCP never says so
  // falsely); later EAGAINs are how draining ends.
  bool first_read = (ev & EV_IN) != 0, first_write = (ev & EV_OUT) != 0;
  for (;;) {
    bool progress = false;
    if (c->may_read && wants_read(c)) {
      enum io r = do_read(c);
      if (r == IO_AGAIN) {
        c->may_read = false;
        if (first_read) c->spurious++;
      } else {
        progress = r == IO_PROGRESS;
      }
      first_read = false;
      if (!edge) c->may_read = false;
    }
    if (!failed(c) && c->may_write && wants_write(c)) {
      enum io w = do_write(c);
      if (w == IO_AGAIN) {
        c->may_write = false;
        if (first_write) c->spurious++;
      } else {
        progress = progress || w == IO_PROGRESS;
      }
      first_write = false;
      if (!edge) c->may_write = false;
    }
    if (conn_complete(c)) return true;
    if (!edge || !progress) return false;
  }
}

// ---- registration ------------------------------------------------------------------------

static bool epoll_api(void) {
  return opt.api == API_EPOLL || opt.api == API_EPOLL_ET;
}

static uint32_t epoll_interest(const struct conn* c) {
  uint32_t ev;
  if (opt.api == API_EPOLL_ET)
    ev = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  else
    ev = (wants_read(c) ? EPOLLIN | EPOLLRDHUP : 0) | (wants_write(c) ? EPOLLOUT : 0);
  return ev | (opt.oneshot ? EPOLLONESHOT : 0);
}

static bool conn_register(struct conn* c) {
  if (!epoll_api()) return true;  // poll and select build their sets every round
  struct epoll_event e = {.events = epoll_interest(c), .data.u64 = (uint64_t)c->index};
  if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, c->fd, &e) != 0)
    return fail(c, "epoll_ctl(ADD): %s", strerror(errno));
  c->registered = e.events;
  return true;
}

// After an event that left the connection incomplete: level-triggered epoll follows what
// the connection waits for now; a one-shot registration is re-armed. Returns false (and
// has armed nothing) on failure. After a successful re-arm another thread may own the
// connection: the caller must not touch it any more.
static bool conn_rearm(struct conn* c) {
  if (!wants_read(c) && !wants_write(c))  // it would never hear of the peer again
    return fail(c, "internal: connection waits for nothing");
  if (!epoll_api()) return true;
  uint32_t ev = epoll_interest(c);
  if (ev == c->registered && !opt.oneshot) return true;
  struct epoll_event e = {.events = ev, .data.u64 = (uint64_t)c->index};
  if (epoll_ctl(L.epfd, EPOLL_CTL_MOD, c->fd, &e) != 0)
    return fail(c, "epoll_ctl(MOD): %s", strerror(errno));
  c->registered = ev;
  return true;
}

// ---- connection life ---------------------------------------------------------------------

static void conn_finish(struct conn* c) {
  pthread_mutex_lock(&L.lock);
  c->active = false;  // from here on an event for it is stray, and no thread touches it
  pthread_mutex_unlock(&L.lock);
  struct tcpstats st = tcp_stats(c->fd);
  // Level-triggered epoll removes the fd first; edge-triggered relies on close() to drop
  // the registration (both are common, and both must leave no trace in the set). A
  // connection left open (--end open) leaves the set: an edge may still come for it (the
  // peer's window opening), which is no stray event.
  if ((opt.api == API_EPOLL || (opt.end == END_OPEN && epoll_api())) && c->registered != 0 &&
      epoll_ctl(L.epfd, EPOLL_CTL_DEL, c->fd, NULL) != 0)
    fail(c, "epoll_ctl(DEL): %s", strerror(errno));
  waiting_in = "close()";
  // --end open: the connection stays open until the process exits.
  if (opt.end != END_OPEN && close(c->fd) != 0) fail(c, "close: %s", strerror(errno));
  waiting_in = "event handling";
  free(c->sbuf);
  free(c->rbuf);
  c->sbuf = c->rbuf = NULL;
  pthread_mutex_lock(&L.lock);
  report(c, &st);
  if (failed(c)) L.failures++;
  bool all = ++L.finished == opt.conns;
  pthread_mutex_unlock(&L.lock);
  if (all) stop_loop();
}

// A new connection (fd non-blocking): state, buffers, registration before any I/O.
static void conn_open(struct conn* c, int fd, int index, int client_port) {
  memset(c, 0, sizeof *c);
  atomic_init(&c->busy, false);
  c->fd = fd;
  c->index = index;
  uint64_t conn_seed = mix64(opt.seed ^ ((uint64_t)client_port << 40));
  uint64_t c2s = mix64(conn_seed ^ 0xc25), s2c = mix64(conn_seed ^ 0x52c);
  c->seed_tx = opt.server ? s2c : c2s;
  c->seed_rx = opt.server || opt.mode == MODE_ECHO ? c2s : s2c;  // an echo is our own stream
  rng_seed(&c->rng, conn_seed ^ (opt.server ? 0x5e : 0xc1));
  c->sbuf = malloc(MAX_CHUNK);
  c->rbuf = malloc(MAX_CHUNK);
  c->active = true;
  int fl = fcntl(fd, F_GETFL);
  if (c->sbuf == NULL || c->rbuf == NULL)
    fail(c, "out of memory");
  else if (fl < 0 || (fl & O_NONBLOCK) == 0)
    fail(c, "socket is not non-blocking (F_GETFL 0x%x)", fl);
  if (!failed(c)) {
    conn_start(c);
    settle(c);
  }
  // Once registered, with several threads another one may own the connection at once.
  if (conn_complete(c) || !conn_register(c)) conn_finish(c);
}

static void accept_ready(void) {
  for (;;) {
    pthread_mutex_lock(&L.lock);
    bool full = L.accepted >= opt.conns;
    pthread_mutex_unlock(&L.lock);
    if (full) return;
    int fd = accept4(L.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) fatal("accept4");
      return;
    }
    pthread_mutex_lock(&L.lock);
    int index = L.accepted < opt.conns ? L.accepted++ : -1;
    bool last = L.accepted == opt.conns;
    pthread_mutex_unlock(&L.lock);
    if (index < 0) {  // more clients than --conns: not ours
      close(fd);
      continue;
    }
    // Once all are in, the listener leaves the set (poll/select stop adding it).
    if (last && epoll_api() && epoll_ctl(L.epfd, EPOLL_CTL_DEL, L.lfd, NULL) != 0)
      fatal("epoll_ctl(DEL listener)");
    conn_open(&L.conns[index], fd, index, peer_port(fd));
  }
}

static void dispatch(uint64_t tag, unsigned ev) {
  if (tag == TAG_LISTEN) {
    accept_ready();
    return;
  }
  struct conn* c = &L.conns[tag];
  pthread_mutex_lock(&L.lock);
  bool active = c->active;
  if (!active) L.stray++;
  pthread_mutex_unlock(&L.lock);
  if (!active) {
    fprintf(stderr, "evloop: event 0x%x for connection %d, which is closed\n", ev, (int)tag);
    return;
  }
  // With EPOLLONESHOT a connection's registration stays disabled from the event until the
  // re-arm, so no second thread can get here meanwhile. If one does, it must keep out of
  // the connection (its state is not shared safely), and the run fails.
  if (atomic_exchange(&c->busy, true)) {
    pthread_mutex_lock(&L.lock);
    L.overlaps++;
    pthread_mutex_unlock(&L.lock);
    fprintf(stderr, "evloop: event 0x%x for connection %d while another thread handles it\n", ev,
            (int)tag);
    return;
  }
  // A complete connection keeps `busy` through its close; an incomplete one clears it
  // before the re-arm, after which another thread may own the connection.
  if (conn_event(c, ev)) {
    conn_finish(c);
    return;
  }
  atomic_store(&c->busy, false);
  if (!conn_rearm(c)) conn_finish(c);
}

// ---- the loops ---------------------------------------------------------------------------

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

static int run(void) {
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

// ---- command line ------------------------------------------------------------------------

static void usage(void) {
  fprintf(stderr,
          "usage: evloop server --port P [--bind ADDR] --mode sink|echo|source --bytes N\n"
          "                     [--conns K] [--api epoll|epoll-et|poll|select] [--oneshot]\n"
          "                     [--threads T] [--chunk N|random] [--seed S] [--timeout S]\n"
          "       evloop client --host H --port P --mode sink|echo|source --bytes N\n"
          "                     [--conns K] [--api ...] [--oneshot] [--threads T]\n"
          "                     [--chunk N|random] [--seed S] [--timeout S]\n"
          "                     [--requests R] [--end shutdown|close|open] (echo client)\n"
          "       common: [--idle S]\n");
  exit(2);
}

static int name_index(const char* v, const char* const* names, int n) {
  for (int i = 0; i < n; i++)
    if (strcmp(v, names[i]) == 0) return i;
  usage();
  return -1;
}

static void parse_args(int argc, char** argv) {
  if (argc < 2) usage();
  if (strcmp(argv[1], "server") == 0)
    opt.server = true;
  else if (strcmp(argv[1], "client") != 0)
    usage();
  bool mode_given = false;
  for (int i = 2; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--oneshot") == 0) {
      opt.oneshot = true;
      continue;
    }
    if (v == NULL) usage();
    if (strcmp(a, "--port") == 0) {
      opt.port = (int)num_arg("evloop", a, v, 0, 65535);
    } else if (strcmp(a, "--host") == 0) {
      opt.host = v;
    } else if (strcmp(a, "--bind") == 0) {
      opt.bind = v;
    } else if (strcmp(a, "--mode") == 0) {
      opt.mode = (enum mode)name_index(v, mode_names, 3);
      mode_given = true;
    } else if (strcmp(a, "--api") == 0) {
      opt.api = (enum api)name_index(v, api_names, 4);
    } else if (strcmp(a, "--bytes") == 0) {
      opt.bytes = num_arg("evloop", a, v, 0, 1LL << 40);
    } else if (strcmp(a, "--conns") == 0) {
      opt.conns = (int)num_arg("evloop", a, v, 1, MAX_CONNS);
    } else if (strcmp(a, "--threads") == 0) {
      opt.threads = (int)num_arg("evloop", a, v, 1, MAX_THREADS);
    } else if (strcmp(a, "--chunk") == 0) {
      opt.chunk = strcmp(v, "random") == 0 ? 0 : (size_t)num_arg("evloop", a, v, 1, MAX_CHUNK);
    } else if (strcmp(a, "--seed") == 0) {
      opt.seed = (uint64_t)num_arg("evloop", a, v, 0, 1LL << 50);
    } else if (strcmp(a, "--timeout") == 0) {
      opt.timeout = (unsigned)num_arg("evloop", a, v, 1, 86400);
    } else if (strcmp(a, "--requests") == 0) {
      opt.requests = num_arg("evloop", a, v, 1, 1LL << 40);
    } else if (strcmp(a, "--end") == 0) {
      opt.end = (enum end)name_index(v, end_names, 3);
    } else if (strcmp(a, "--idle") == 0) {
      opt.idle = (unsigned)num_arg("evloop", a, v, 0, 3600);
    } else {
      usage();
    }
    i++;
  }
  if (!mode_given || opt.bytes < 0) usage();
  if (!opt.server && (opt.host == NULL || opt.port == 0)) usage();
  if ((opt.oneshot || opt.threads > 1) && !epoll_api()) {
    fprintf(stderr, "evloop: --oneshot and --threads need --api epoll or epoll-et\n");
    exit(2);
  }
  if ((opt.requests > 0 || opt.end != END_SHUTDOWN) && (opt.server || opt.mode != MODE_ECHO)) {
    fprintf(stderr, "evloop: --requests and --end are for an echo client\n");
    exit(2);
  }
  // Several threads on one set: a connection must be handled by one thread at a time.
  if (opt.threads > 1) opt.oneshot = true;
}

int main(int argc, char** argv) {
  parse_args(argc, argv);
  // A peer that vanishes must show up as an error in the report, not as a silent death.
  signal(SIGPIPE, SIG_IGN);
  arm_timeout("evloop", opt.timeout, where);
  return run();
}
