// procs exec-client and vfork: what crosses exec (no internal fd of smcpre may) and a
// vfork child that shares the parent's memory and fd table while the connection lives on.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "procs.h"

// ---- exec-client -----------------------------------------------------------------------------

#define MAX_FDS 1024

// The open fds of this process, ascending, without the one listing them.
static int list_fds(int* fds, int max) {
  DIR* d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int n = 0;
  struct dirent* de;
  while ((de = readdir(d)) != NULL && n < max) {
    if (de->d_name[0] == '.') continue;
    int fd = atoi(de->d_name);
    if (fd != dirfd(d)) fds[n++] = fd;
  }
  closedir(d);
  for (int i = 1; i < n; i++)  // few entries: insertion sort
    for (int j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
      int t = fds[j];
      fds[j] = fds[j - 1];
      fds[j - 1] = t;
    }
  return n;
}

static bool contains(const int* fds, int n, int fd) {
  for (int i = 0; i < n; i++)
    if (fds[i] == fd) return true;
  return false;
}

// "fd -> target" of an fd, for the records.
static void describe_fd(int fd, char* out, size_t size) {
  char path[64], target[200];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, target, sizeof target - 1);
  target[n > 0 ? n : 0] = '\0';
  snprintf(out, size, "%d->%s", fd, target);
}

// Appends the fds in `fds` (n of them) to the record as a JSON array of descriptions.
static void rec_fd_list(struct rec* r, const char* key, const int* fds, int n) {
  rec_key(r, key);
  rec_raw(r, "[");
  for (int i = 0; i < n; i++) {
    char d[256];
    describe_fd(fds[i], d, sizeof d);
    if (i > 0) rec_raw(r, ",");
    rec_quoted(r, d);
  }
  rec_raw(r, "]");
}

int exec_client_stage1(char** argv) {
  static int before[MAX_FDS], now[MAX_FDS], internal[MAX_FDS], open_ones[MAX_FDS];
  int nbefore = list_fds(before, MAX_FDS);
  struct err e = {{0}};
  struct rec r = {0};
  rec_str(&r, "role", "client");
  rec_int(&r, "stage", 1);
  int fd = connect_tcp(opt.host, opt.port);
  if (fd < 0 || nbefore < 0) {
    fail(&e, "connect: %s", strerror(errno));
    rec_emit(&r, e.text);
    return 1;
  }
  // Our own socket must not reach the new image either.
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) fail(&e, "F_SETFD: %s", strerror(errno));
  uint64_t seed = stream_seed(local_port(fd), true);
  if (echo_exchange(fd, seed, 0, (uint64_t)opt.bytes, &e)) {
    rec_int(&r, "bytes_sent", opt.bytes);
    rec_int(&r, "bytes_received", opt.bytes);
  } else {
    rec_int(&r, "bytes_sent", 0);
    rec_int(&r, "bytes_received", 0);
  }
  rec_tcp(&r, fd);
  // Every fd that appeared and is not ours belongs to smcpre.
  int nnow = list_fds(now, MAX_FDS), ninternal = 0, nopen = 0;
  for (int i = 0; i < nnow; i++) {
    if (now[i] == fd || contains(before, nbefore, now[i])) continue;
    internal[ninternal++] = now[i];
    int flags = fcntl(now[i], F_GETFD);
    if (flags < 0 || !(flags & FD_CLOEXEC)) open_ones[nopen++] = now[i];
  }
  rec_int(&r, "internal_fds", ninternal);
  rec_fd_list(&r, "internal", internal, ninternal);
  rec_fd_list(&r, "not_cloexec", open_ones, nopen);
  if (nopen > 0) fail(&e, "%d internal fds are not close-on-exec", nopen);
  if (!opt.keep_open && close(fd) != 0) fail(&e, "close: %s", strerror(errno));
  rec_emit(&r, e.text);
  if (e.text[0] != '\0') return 1;

  // The new image learns which fds it may inherit: those this process started with.
  char inherited[4096];
  size_t off = 0;
  inherited[0] = '\0';
  for (int i = 0; i < nbefore && off < sizeof inherited - 16; i++)
    off +=
        (size_t)snprintf(inherited + off, sizeof inherited - off, "%s%d", i ? "," : "", before[i]);
  char port[16], bytes[32], seed_s[32], timeout[16];
  snprintf(port, sizeof port, "%d", opt.port);
  snprintf(bytes, sizeof bytes, "%lld", opt.bytes);
  snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)opt.seed);
  snprintf(timeout, sizeof timeout, "%u", opt.timeout);
  char* args[] = {argv[0],   "exec-client", "--host",      (char*)opt.host, "--port",    port,
                  "--bytes", bytes,         "--seed",      seed_s,          "--timeout", timeout,
                  "--stage", "2",           "--inherited", inherited,       NULL};
  execv("/proc/self/exe", args);
  fprintf(stderr, "execv: %s\n", strerror(errno));
  return 1;
}

int exec_client_stage2(void) {
  static int now[MAX_FDS], inherited[MAX_FDS], leaked[MAX_FDS];
  // First thing: what this image holds before it opens anything.
  int nnow = list_fds(now, MAX_FDS);
  int ninherited = 0, nleaked = 0;
  for (const char* p = opt.inherited; *p != '\0' && ninherited < MAX_FDS;) {
    inherited[ninherited++] = atoi(p);
    p = strchr(p, ',');
    if (p == NULL) break;
    p++;
  }
  for (int i = 0; i < nnow; i++)
    if (!contains(inherited, ninherited, now[i])) leaked[nleaked++] = now[i];
  struct err e = {{0}};
  struct rec r = {0};
  rec_str(&r, "role", "client");
  rec_int(&r, "stage", 2);
  rec_fd_list(&r, "leaked", leaked, nleaked);
  if (nnow < 0) fail(&e, "cannot list /proc/self/fd");
  if (nleaked > 0) fail(&e, "%d fds of the previous image survived exec", nleaked);
  int fd = connect_tcp(opt.host, opt.port);
  if (fd < 0) {
    fail(&e, "connect: %s", strerror(errno));
    rec_emit(&r, e.text);
    return 1;
  }
  bool ok = echo_exchange(fd, stream_seed(local_port(fd), true), 0, (uint64_t)opt.bytes, &e);
  rec_int(&r, "bytes_sent", ok ? opt.bytes : 0);
  rec_int(&r, "bytes_received", ok ? opt.bytes : 0);
  rec_tcp(&r, fd);
  if (close(fd) != 0) fail(&e, "close: %s", strerror(errno));
  rec_emit(&r, e.text);
  return failures == 0 ? 0 : 1;
}

// ---- vfork -----------------------------------------------------------------------------

// Written by the vfork child, read by the parent: a fork child's write would stay its own.
static volatile int vfork_flag;

int run_vfork(void) {
  struct err e = {{0}};
  struct rec r = {0};
  rec_str(&r, "role", "client");
  rec_str(&r, "child", opt.child);
  int fd = connect_tcp(opt.host, opt.port);
  int other = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || other < 0) {
    fail(&e, "connect or open: %s", strerror(errno));
    rec_emit(&r, e.text);
    return 1;
  }
  uint64_t seed = stream_seed(local_port(fd), true);
  uint64_t half = (uint64_t)opt.bytes / 2;
  bool ok = echo_exchange(fd, seed, 0, half, &e);
  static const char* const true_argv[] = {"/bin/true", NULL};
  const bool do_exec = strcmp(opt.child, "exec") == 0;
  vfork_flag = 0;
  pid_t pid = ok ? vfork() : -1;
  if (pid == 0) {
    // The child: only what vfork allows (no return, no stdio), on the parent's memory.
    vfork_flag = 1;
    close(fd);
    dup2(other, fd);
    if (do_exec) execv(true_argv[0], (char* const*)true_argv);
    _exit(do_exec ? 127 : 0);
  }
  int status = -1;
  if (pid < 0 && ok) fail(&e, "vfork: %s", strerror(errno));
  if (pid > 0 && waitpid(pid, &status, 0) != pid) fail(&e, "waitpid: %s", strerror(errno));
  rec_bool(&r, "shared_memory", vfork_flag == 1);
  rec_int(&r, "child_status", pid > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  if (pid > 0 && vfork_flag != 1) fail(&e, "the child did not share memory: vfork became fork");
  if (pid > 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    fail(&e, "child status %#x", status);
  // The parent's connection must be as it was.
  if (ok) ok = echo_exchange(fd, seed, half, (uint64_t)opt.bytes - half, &e);
  rec_int(&r, "bytes_sent", ok ? opt.bytes : 0);
  rec_int(&r, "bytes_received", ok ? opt.bytes : 0);
  rec_tcp(&r, fd);
  if (close(fd) != 0) fail(&e, "close: %s", strerror(errno));
  close(other);
  rec_emit(&r, e.text);
  return failures == 0 ? 0 : 1;
}
