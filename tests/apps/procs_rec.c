// procs' JSON records: one line per record on stdout, built member by member, and the
// count of records that were not ok (the exit status).
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "procs.h"

pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
int failures;

void rec_raw(struct rec* r, const char* fmt, ...) {
  if (r->n >= sizeof r->s) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(r->s + r->n, sizeof r->s - r->n, fmt, ap);
  va_end(ap);
  if (k > 0) r->n += (size_t)k;
  if (r->n > sizeof r->s) r->n = sizeof r->s;
}

void rec_key(struct rec* r, const char* key) {
  rec_raw(r, "%s\"%s\":", r->n == 0 ? "{" : ",", key);
}

// Appends `v` as a JSON string literal, or null.
void rec_quoted(struct rec* r, const char* v) {
  if (v == NULL) {
    rec_raw(r, "null");
    return;
  }
  rec_raw(r, "\"");
  for (const unsigned char* c = (const unsigned char*)v; *c; c++) {
    if (*c == '"' || *c == '\\')
      rec_raw(r, "\\%c", *c);
    else if (*c < 0x20)
      rec_raw(r, "\\u%04x", *c);
    else
      rec_raw(r, "%c", *c);
  }
  rec_raw(r, "\"");
}

void rec_str(struct rec* r, const char* key, const char* v) {
  rec_key(r, key);
  rec_quoted(r, v);
}

void rec_int(struct rec* r, const char* key, long long v) {
  rec_key(r, key);
  rec_raw(r, "%lld", v);
}

void rec_bool(struct rec* r, const char* key, bool v) {
  rec_key(r, key);
  rec_raw(r, "%s", v ? "true" : "false");
}

void rec_tcp(struct rec* r, int fd) {
  struct tcpstats st = tcp_stats(fd);
  rec_int(r, "tcp_bytes_received", (long long)st.bytes_received);
  rec_int(r, "tcp_bytes_acked", (long long)st.bytes_acked);
}

// Prints the record with "ok" and "error" (NULL or empty: ok) appended.
void rec_emit(struct rec* r, const char* error) {
  bool ok = error == NULL || error[0] == '\0';
  rec_bool(r, "ok", ok);
  rec_str(r, "error", ok ? NULL : error);
  pthread_mutex_lock(&out_lock);
  if (!ok) failures++;
  printf("%.*s}\n", (int)r->n, r->s);
  fflush(stdout);
  pthread_mutex_unlock(&out_lock);
}

const char* errname(int e) {
  const char* s = strerrorname_np(e);
  return s != NULL ? s : "E?";
}
