// procs' private header: the options, JSON records, blocking I/O and the entry point of
// every mode, shared by the procs*.c files of the one program (procs.c says what it does).
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "apputil.h"

#define CHUNK (64 * 1024)
#define MAX_CHUNK (1u << 20)

// ---- the command line (procs.c) ------------------------------------------------------------

struct options {
  const char* cmd;
  const char* host;
  const char* bind;
  int port;
  const char* mode;
  long long bytes;
  int conns;
  int threads;
  bool reuseport;
  bool daemonize;
  bool listen_first;
  const char* out;
  const char* log;
  const char* port_file;
  bool keep_open;
  int stage;
  const char* inherited;
  const char* child;
  const char* how;
  const char* side;
  const char* op;
  const char* act;
  const char* listen_addr;
  const char* connect_addr;
  uint64_t seed;
  unsigned timeout;
};
extern struct options opt;

// ---- JSON records (procs_rec.c) ------------------------------------------------------------

// Guards stdout and `failures`: threads of one run emit records at once.
extern pthread_mutex_t out_lock;
// Records that were not ok (and other failures); the exit status is 0 only at zero.
extern int failures;

// One record under construction; members are appended in order, printed as one line.
struct rec {
  char s[8192];
  size_t n;
};

void rec_raw(struct rec* r, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void rec_key(struct rec* r, const char* key);
// Appends `v` as a JSON string literal, or null.
void rec_quoted(struct rec* r, const char* v);
void rec_str(struct rec* r, const char* key, const char* v);
void rec_int(struct rec* r, const char* key, long long v);
void rec_bool(struct rec* r, const char* key, bool v);
// TCP_INFO's byte counts of `fd`: the proof of the path the data took.
void rec_tcp(struct rec* r, int fd);
// Prints the record with "ok" and "error" (NULL or empty: ok) appended.
void rec_emit(struct rec* r, const char* error);
// errno's symbolic name ("EPIPE"): the same text on every libc, for comparisons.
const char* errname(int e);

// ---- blocking I/O (procs_io.c) -------------------------------------------------------------

// The first error of an activity, kept as text (later ones are usually fallout).
struct err {
  char text[256];
};

// Records the error (unless one is there already); returns false, for `return fail(...)`.
bool fail(struct err* e, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
bool write_all(int fd, const void* buf, size_t len, struct err* e);
// Reads exactly len bytes; EOF first is an error.
bool read_exact(int fd, void* buf, size_t len, struct err* e);
// Echo client step: sends bytes [offset, offset + len) of stream `seed` in chunks and reads
// each chunk back from an echo server, verifying it.
bool echo_exchange(int fd, uint64_t seed, uint64_t offset, uint64_t len, struct err* e);
// The pattern seed of one direction of the connection from `client_port`.
uint64_t stream_seed(int client_port, bool to_server);
// A close-on-exec listening socket (the exec tests count every fd they did not open).
int listen_on(const char* bind_addr, int port, bool reuseport, int v6only, int* bound);

// One side of a duplex connection: its sending half runs on a thread of its own.
struct duplex {
  int fd;
  uint64_t send_seed, recv_seed, bytes;
  struct rng send_rng, recv_rng;
  struct fletcher sent_sum, received_sum;
  uint64_t sent, received;
  struct err send_err, recv_err;
};

// Runs both halves at once, then reports and closes. `role` and `index` name the record.
void duplex_run(struct duplex* d, const char* role, int index, int client_port);

// ---- both ends in one process (procs_pair.c) ------------------------------------------------

// A connection whose two ends both belong to this process. The client's connect() waits
// for the SMC handshake, which the server side runs on its first read: so the accepting
// end lives on a thread of its own until the first bytes have crossed both ways.
struct pair {
  int listen_fd, listen_port;
  int client_fd, server_fd;
  struct sockaddr_storage accepted_from;
  socklen_t accepted_len;
  struct err err;
};

// The greeting each end sends first; their lengths are part of the shutdown records.
extern const char kHello[sizeof "hello"], kWorld[sizeof "world"];

// Listens on listen_addr (a "::" listener accepts IPv4 too: IPV6_V6ONLY off), connects
// from connect_addr's family and exchanges a greeting each way.
bool pair_open(struct pair* p, const char* listen_addr, const char* connect_addr);

// ---- the modes -------------------------------------------------------------------------------

// procs_server.c: the raw echo of one connection (also the addrs mode's server end).
void serve_echo(int fd, int index);
int run_server(void);
// procs_exec.c
int exec_client_stage1(char** argv);
int exec_client_stage2(void);
int run_vfork(void);
// procs_threads.c
int run_threads(void);
// procs_shutdown.c
int run_shutdown(void);
// procs_xthread.c
int run_xthread(void);
// procs_pair.c
int run_addrs(void);
