// tcpapp's private header: options, per-connection state, its I/O with varied calls and
// the entry points the tcpapp*.c files of the one program share (tcpapp.c says what it does).
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "apputil.h"

enum mode { MODE_SINK, MODE_ECHO, MODE_SOURCE };

// --write-first: what the server says before anything else.
extern const char kGreeting[sizeof "220 tcpapp ready\r\n"];
#define GREETING_LEN (sizeof kGreeting - 1)
// Source mode: what the client asks first.
extern const char kRequest[sizeof "GET\n"];
#define MAX_CHUNK (1u << 20)

struct options {
  bool server;
  const char* host;
  const char* bind;
  int port;
  enum mode mode;
  long long bytes;  // -1: not given
  int conns;
  int parallel;
  bool concurrent;
  size_t chunk;  // 0: random
  uint64_t seed;
  bool write_first;
  bool half_close;
  bool raw;
  const char* dump;
  unsigned timeout;
  bool hold;
};
extern struct options opt;

// ---- per-connection state, reporting and I/O (tcpapp_conn.c) ----------------------------

struct conn {
  int fd;
  int index;
  uint64_t stream_c2s, stream_s2c;  // pattern seeds of both directions
  struct rng rng;                   // chunk sizes and call choices
  uint64_t sent, received;
  char error[256];
  uint8_t* sbuf;
  uint8_t* rbuf;
};

// Connections that were not ok; the exit status is 0 only at zero.
extern int failures;

// Records the connection's first error; returns false, for `return fail(...)`.
bool fail(struct conn* c, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
// The connection's JSON line on stdout (TCP_INFO in `st`).
void report(struct conn* c, const struct tcpstats* st);
// Sends all of buf with one randomly chosen call per attempt. Returns false on error.
bool send_all(struct conn* c, const void* buf, size_t len);
// One receive of at most len bytes with a randomly chosen call. Returns bytes (0 = EOF) or
// -1 on error (recorded).
ssize_t recv_some(struct conn* c, void* buf, size_t len);
// Receives exactly len bytes; EOF before that is an error.
bool recv_exact(struct conn* c, void* buf, size_t len, const char* what);
bool expect_eof(struct conn* c, const char* when);
// Sends `total` bytes of stream `seed` in random chunks.
bool send_stream(struct conn* c, uint64_t seed, uint64_t total, struct fletcher* sum);
// Receives stream `seed` until `total` bytes (total >= 0) or EOF (total < 0), verifying
// each chunk unless `raw`. Stores the count in *count. `echo_back` sends each chunk back.
bool recv_stream(struct conn* c, uint64_t seed, long long total, bool raw, bool echo_back,
                 struct fletcher* sum, uint64_t* count);
// State, stream seeds and buffers of the connection on `fd`.
void conn_init(struct conn* c, int fd, int index, int client_port);
// Closes and reports the connection, frees its buffers.
void conn_finish(struct conn* c);

// ---- the two ends (tcpapp_server.c, tcpapp_client.c) ----------------------------------------

int run_server(void);
int run_clients(void);
