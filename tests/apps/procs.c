// procs: process, thread and socket-edge behaviours of an ordinary TCP application, for
// tests/integration/test_processes.py. Like the other apps it knows nothing of smcpre; the
// tests run it with and without the preload and compare.
//
//   procs server --port P [--bind ADDR] [--mode echo|duplex] [--bytes N] [--conns K]
//                [--reuseport] [--daemon --out FILE --log FILE --port-file FILE
//                [--listen-first]]
//       Serves connections, one thread each: echo (raw: sends back what it reads, until
//       EOF) or duplex (once the client's first bytes are there, sends N bytes of its own
//       stream, then SHUT_WR, while it reads and verifies the client's stream to EOF). --conns K:
//       exit after K connections; 0 (the default): serve until SIGTERM, then close the listener and
//       finish the connections.
//       --daemon: daemon(1, 0), then stdout to --out and stderr to --log (so smcpre's log
//       lands there); "<port> <pid>" goes to --port-file. --listen-first listens before
//       daemon() (as nginx does, so the listener crosses a fork), else after (as redis).
//   procs exec-client --host H --port P --bytes N [--keep-open]
//       Echoes N bytes, checks that every fd it did not open itself (smcpre's internal fds)
//       is FD_CLOEXEC, then execs itself; the new image checks that it inherited none of
//       them and echoes N bytes on a new connection. --keep-open: the first connection is
//       left open across exec (its CLOEXEC socket vanishes, as with a crash).
//   procs vfork --host H --port P --bytes N [--child exec|exit]
//       Echoes N/2 bytes, vfork()s a child that writes a flag, closes the connection's fd
//       and dup2()s another file onto it, then execs /bin/true (or _exits); the parent
//       checks the flag (vfork shared its memory: not a fork) and echoes the other half.
//   procs threads --host H --port P --bytes N [--threads T] [--conns M]
//       Client of `server --mode duplex`: T threads connect M sockets each; every socket
//       has a sending and a receiving thread at once (full duplex on one fd).
//   procs shutdown --how rd|wr|rdwr --side client|server
//       Both ends in one process: shutdown() on one end (A) while the other (B) keeps
//       writing; one JSON record per step (return values, errno, EOF, poll revents,
//       SIGPIPE count), to be compared with a plain-TCP run.
//   procs xthread --op send|recv|accept|connect --act shut_rd|shut_wr|shut_rdwr|close
//       One thread blocks in the call (send: the peer does not read; recv: nothing comes;
//       accept: nobody connects; connect: the listener's queue is full) while another
//       thread shuts the socket down or closes it. One JSON record: whether the call was
//       blocked, whether the act woke it within 3 s and with what result, and what it
//       returned once the peer side let it go (or "stuck"); compared with a plain-TCP run.
//   procs addrs --listen ADDR --connect ADDR [--bytes N]
//       Both ends in one process: getsockname/getpeername/accept addresses of both ends
//       (ports named L for the listener's, C for the client's), then N bytes echoed.
//   common: [--seed S] [--timeout SECONDS] (default 60; exit 3 when it expires)
//
// Output: JSON lines on stdout; "listening <port>" on stderr from servers. Exit status 0
// only if every record is ok.
//
// The modes live in procs_*.c (procs.h lists them); this file holds the command line.
#include "procs.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct options opt = {.mode = "echo",
                      .bytes = -1,
                      .threads = 1,
                      .conns = -1,
                      .child = "exec",
                      .seed = 1,
                      .timeout = 60};

// ---- command line ------------------------------------------------------------------------

static void usage(void) {
  fprintf(stderr,
          "usage: procs server --port P [--bind ADDR] [--mode echo|duplex] [--bytes N]\n"
          "                    [--conns K] [--reuseport] [--daemon --out F --log F\n"
          "                    --port-file F [--listen-first]]\n"
          "       procs exec-client --host H --port P --bytes N [--keep-open]\n"
          "       procs vfork --host H --port P --bytes N [--child exec|exit]\n"
          "       procs threads --host H --port P --bytes N [--threads T] [--conns M]\n"
          "       procs shutdown --how rd|wr|rdwr --side client|server\n"
          "       procs xthread --op send|recv|accept|connect\n"
          "                     --act shut_rd|shut_wr|shut_rdwr|close\n"
          "       procs addrs --listen ADDR --connect ADDR [--bytes N]\n"
          "       common: [--seed S] [--timeout SECONDS]\n");
  exit(2);
}

static void parse_args(int argc, char** argv) {
  if (argc < 2) usage();
  opt.cmd = argv[1];
  for (int i = 2; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    bool takes = true;
    if (strcmp(a, "--reuseport") == 0) {
      opt.reuseport = true;
      takes = false;
    } else if (strcmp(a, "--daemon") == 0) {
      opt.daemonize = true;
      takes = false;
    } else if (strcmp(a, "--listen-first") == 0) {
      opt.listen_first = true;
      takes = false;
    } else if (strcmp(a, "--keep-open") == 0) {
      opt.keep_open = true;
      takes = false;
    } else if (v == NULL) {
      usage();
    } else if (strcmp(a, "--port") == 0) {
      opt.port = (int)num_arg("procs", a, v, 0, 65535);
    } else if (strcmp(a, "--host") == 0) {
      opt.host = v;
    } else if (strcmp(a, "--bind") == 0) {
      opt.bind = v;
    } else if (strcmp(a, "--mode") == 0) {
      if (strcmp(v, "echo") != 0 && strcmp(v, "duplex") != 0) usage();
      opt.mode = v;
    } else if (strcmp(a, "--bytes") == 0) {
      opt.bytes = num_arg("procs", a, v, 0, 1LL << 40);
    } else if (strcmp(a, "--conns") == 0) {
      opt.conns = (int)num_arg("procs", a, v, 0, 10000);
    } else if (strcmp(a, "--threads") == 0) {
      opt.threads = (int)num_arg("procs", a, v, 1, 64);
    } else if (strcmp(a, "--out") == 0) {
      opt.out = v;
    } else if (strcmp(a, "--log") == 0) {
      opt.log = v;
    } else if (strcmp(a, "--port-file") == 0) {
      opt.port_file = v;
    } else if (strcmp(a, "--stage") == 0) {
      opt.stage = (int)num_arg("procs", a, v, 1, 2);
    } else if (strcmp(a, "--inherited") == 0) {
      opt.inherited = v;
    } else if (strcmp(a, "--child") == 0) {
      if (strcmp(v, "exec") != 0 && strcmp(v, "exit") != 0) usage();
      opt.child = v;
    } else if (strcmp(a, "--how") == 0) {
      if (strcmp(v, "rd") != 0 && strcmp(v, "wr") != 0 && strcmp(v, "rdwr") != 0) usage();
      opt.how = v;
    } else if (strcmp(a, "--side") == 0) {
      if (strcmp(v, "client") != 0 && strcmp(v, "server") != 0) usage();
      opt.side = v;
    } else if (strcmp(a, "--op") == 0) {
      opt.op = v;
    } else if (strcmp(a, "--act") == 0) {
      opt.act = v;
    } else if (strcmp(a, "--listen") == 0) {
      opt.listen_addr = v;
    } else if (strcmp(a, "--connect") == 0) {
      opt.connect_addr = v;
    } else if (strcmp(a, "--seed") == 0) {
      opt.seed = (uint64_t)num_arg("procs", a, v, 0, 1LL << 50);
    } else if (strcmp(a, "--timeout") == 0) {
      opt.timeout = (unsigned)num_arg("procs", a, v, 1, 86400);
    } else {
      usage();
    }
    if (takes) i++;
  }
}

int main(int argc, char** argv) {
  parse_args(argc, argv);
  const char* c = opt.cmd;
  const bool client =
      strcmp(c, "exec-client") == 0 || strcmp(c, "vfork") == 0 || strcmp(c, "threads") == 0;
  if (client && (opt.host == NULL || opt.port == 0 || opt.bytes < 0)) usage();
  if (strcmp(c, "threads") == 0 && opt.conns < 0) opt.conns = 1;
  if (strcmp(c, "threads") == 0 && opt.conns < 1) usage();
  arm_timeout("procs", opt.timeout, NULL);
  if (strcmp(c, "server") == 0) {
    if (opt.daemonize && (opt.out == NULL || opt.log == NULL || opt.port_file == NULL)) usage();
    if (strcmp(opt.mode, "duplex") == 0 && opt.bytes < 0) usage();
    // SIGPIPE stays at its default everywhere but in the shutdown steps (which count it):
    // a peer that vanishes then shows up in the records, not as a silent death.
    signal(SIGPIPE, SIG_IGN);
    return run_server();
  }
  if (strcmp(c, "exec-client") == 0) {
    signal(SIGPIPE, SIG_IGN);
    if (opt.stage == 2) return opt.inherited != NULL ? exec_client_stage2() : 2;
    return exec_client_stage1(argv);
  }
  if (strcmp(c, "vfork") == 0) {
    signal(SIGPIPE, SIG_IGN);
    return run_vfork();
  }
  if (strcmp(c, "threads") == 0) {
    signal(SIGPIPE, SIG_IGN);
    return run_threads();
  }
  if (strcmp(c, "shutdown") == 0) {
    if (opt.how == NULL || opt.side == NULL) usage();
    return run_shutdown();
  }
  if (strcmp(c, "xthread") == 0) {
    if (opt.op == NULL || opt.act == NULL) usage();
    return run_xthread();
  }
  if (strcmp(c, "addrs") == 0) {
    if (opt.listen_addr == NULL || opt.connect_addr == NULL) usage();
    if (opt.bytes < 0) opt.bytes = 256 * 1024;
    signal(SIGPIPE, SIG_IGN);
    return run_addrs();
  }
  usage();
}
