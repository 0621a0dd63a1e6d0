// evloop's private header: options, per-connection state, the loop's shared state and the
// functions the evloop*.c files of the one program share (evloop.c says what it does).
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "apputil.h"

enum mode { MODE_SINK, MODE_ECHO, MODE_SOURCE };
extern const char* const mode_names[3];
enum api { API_EPOLL, API_EPOLL_ET, API_POLL, API_SELECT };
extern const char* const api_names[4];

// Largest single read or write; also the size of the echo server's ring.
#define MAX_CHUNK (256u * 1024u)
#define MAX_CONNS 4096
#define MAX_THREADS 64

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
extern struct options opt;

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
struct loop {
  int epfd, stopfd, lfd;
  struct conn* conns;
  pthread_mutex_t lock;  // the counters below, and stdout
  int accepted, finished, failures, stray, overlaps;
  bool fatal;
};
extern struct loop L;

#define TAG_STOP UINT64_MAX
#define TAG_LISTEN (UINT64_MAX - 1)

// Where the process waits or which call it is in, for the timeout message (read from the
// signal handler; with several threads, the latest one to get there).
extern const char* volatile waiting_in;

// ---- the connection's protocol (evloop_conn.c) -------------------------------------------

// Records the connection's first error; returns false, for `return fail(...)`.
bool fail(struct conn* c, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
bool failed(const struct conn* c);
// The connection's JSON line on stdout: under L.lock while the loop runs.
void report(const struct conn* c, const struct tcpstats* st);
// Ends the loop in every thread.
void stop_loop(void);
// A failure of the loop itself (not of one connection): perror, then stop.
void fatal(const char* what);
bool loop_done(void);
bool echo_server(void);
bool wants_read(const struct conn* c);
bool wants_write(const struct conn* c);
// How far the client's stream may be sent now (--requests).
uint64_t tx_allowed(const struct conn* c);
bool conn_complete(const struct conn* c);
// The connection's first steps in each direction, by role and mode.
void conn_start(struct conn* c);
// The current receive step is complete (`eof`: it ended with the peer's EOF).
void rx_complete(struct conn* c, bool eof);
// Completes every step that needs no further I/O.
void settle(struct conn* c);

// ---- I/O (evloop_io.c) ---------------------------------------------------------------------

// Handles one readiness event (EV_* bits); true when the connection is complete.
bool conn_event(struct conn* c, unsigned ev);

// ---- registration and connection life (evloop_life.c) -------------------------------------

bool epoll_api(void);
// Closes and reports the connection; the last one stops the loop.
void conn_finish(struct conn* c);
// A new connection (fd non-blocking): state, buffers, registration before any I/O.
void conn_open(struct conn* c, int fd, int index, int client_port);
// Accepts what the listener has, up to --conns.
void accept_ready(void);
// One event for the listener or connection `tag`.
void dispatch(uint64_t tag, unsigned ev);

// ---- the loops (evloop_loop.c) ---------------------------------------------------------------

// The whole run, server or client; the exit status.
int run(void);
