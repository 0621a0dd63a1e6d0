// Reading published counters (see reader.h). The file's owner is another process,
// possibly of another smcpre version, possibly dead: nothing in the file is trusted beyond
// what is checked here (magic, version, size, pid; strings bounded and sanitized).
#include "core/stats/reader.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "config/runtime_dir.h"

namespace smcpre::stats {
namespace {

// magic, version and pid: what must be readable to tell what the file is.
constexpr size_t kHeaderBytes = offsetof(Segment, pid) + sizeof(Segment::pid);

// Closes on scope exit.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Unmaps on scope exit.
struct Mapping {
  void* addr;
  size_t len;
  ~Mapping() {
    if (addr != MAP_FAILED) ::munmap(addr, len);
  }
};

ReadResult failure(ReadStatus status, std::string error) {
  ReadResult r;
  r.status = status;
  r.error = std::move(error);
  return r;
}

// A canonical decimal number (no sign, no leading zero), as pids and uids are named.
bool parse_number(const char* name, uint32_t* value) {
  const char* end = name + std::strlen(name);
  const auto [ptr, ec] = std::from_chars(name, end, *value);
  return ec == std::errc() && ptr == end && name[0] >= '0' && name[0] <= '9' &&
         (name[0] != '0' || name[1] == '\0');
}

// The users' subtrees of `dir` that speak for their uid (runtime_dir::trusted_subtree).
std::vector<std::string> user_dirs(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    uint32_t uid = 0;
    if (!parse_number(e->d_name, &uid)) continue;
    std::string path = dir + "/" + e->d_name;
    if (runtime_dir::trusted_subtree(path, uid)) out.push_back(std::move(path));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

ReadResult read_file(const std::string& path, uint32_t pid) {
  // O_NONBLOCK: opening whatever sits at the path must not wait (a FIFO would).
  const Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)};
  if (fd.fd < 0) {
    if (errno == ENOENT) return failure(ReadStatus::kAbsent, "");
    return failure(ReadStatus::kError,
                   "cannot open " + path + ": " + runtime_dir::errno_text(errno));
  }
  struct stat kind;
  if (::fstat(fd.fd, &kind) != 0 || !S_ISREG(kind.st_mode)) {
    return failure(ReadStatus::kInvalid, path + " is not an smcpre stats file (not a file)");
  }
  // The owner holds LOCK_SH for life: if LOCK_EX is free, the owner is dead. Remove the
  // file while holding the lock, unless the path names a newer file by now (a restarted
  // process with the same pid) -- which is not ours to judge from this descriptor.
  if (::flock(fd.fd, LOCK_EX | LOCK_NB) == 0) {
    if (!runtime_dir::fd_is_at_path(fd.fd, path)) return failure(ReadStatus::kAbsent, "");
    ::unlink(path.c_str());  // may fail in a directory we cannot write: still stale
    return failure(ReadStatus::kStale, "");
  }
  if (errno != EWOULDBLOCK) {
    return failure(ReadStatus::kError,
                   "cannot lock " + path + ": " + runtime_dir::errno_text(errno));
  }
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) {
    return failure(ReadStatus::kError,
                   "cannot stat " + path + ": " + runtime_dir::errno_text(errno));
  }
  // The owner sizes the file right after locking it: empty means not ready yet.
  if (st.st_size == 0) return failure(ReadStatus::kStarting, "");
  if (static_cast<uint64_t>(st.st_size) < kHeaderBytes) {
    return failure(ReadStatus::kInvalid, path + " is not an smcpre stats file (too small)");
  }
  // Only what the file holds is mapped: touching a page beyond its end would be SIGBUS.
  const Mapping map{::mmap(nullptr, std::min<uint64_t>(st.st_size, sizeof(Segment)), PROT_READ,
                           MAP_SHARED, fd.fd, 0),
                    static_cast<size_t>(std::min<uint64_t>(st.st_size, sizeof(Segment)))};
  if (map.addr == MAP_FAILED) {
    return failure(ReadStatus::kError,
                   "cannot map " + path + ": " + runtime_dir::errno_text(errno));
  }
  const auto* seg = static_cast<const Segment*>(map.addr);
  // Stored last by the owner (release): everything in the header is written before it.
  const uint64_t magic = __atomic_load_n(&seg->magic, __ATOMIC_ACQUIRE);
  if (magic == 0) return failure(ReadStatus::kStarting, "");
  if (magic != kStatsMagic) {
    return failure(ReadStatus::kInvalid, path + " is not an smcpre stats file (bad magic)");
  }
  if (seg->version != kStatsVersion) {
    return failure(ReadStatus::kInvalid,
                   path + " has stats format version " + std::to_string(seg->version) +
                       "; this smcpre-stat reads version " + std::to_string(kStatsVersion) +
                       " (use the smcpre-stat of the smcpre that process runs)");
  }
  if (map.len < sizeof(Segment)) {
    return failure(ReadStatus::kInvalid, path + " is truncated (" + std::to_string(map.len) +
                                             " bytes, version " + std::to_string(kStatsVersion) +
                                             " needs " + std::to_string(sizeof(Segment)) + ")");
  }
  if (seg->pid != pid) {
    return failure(ReadStatus::kInvalid, path + " was written by pid " + std::to_string(seg->pid) +
                                             ", not " + std::to_string(pid));
  }

  ReadResult r;
  r.status = ReadStatus::kOk;
  r.snapshot = take_snapshot(*seg);
  return r;
}

}  // namespace

ReadResult read_segment(const std::string& dir, uint32_t pid) {
  const std::string name = "/" + std::to_string(pid);
  for (const std::string& sub : user_dirs(dir)) {
    struct stat st;
    if (::lstat((sub + name).c_str(), &st) == 0) return read_file(sub + name, pid);
  }
  return failure(ReadStatus::kAbsent, "");
}

bool list_pids(const std::string& dir, std::vector<uint32_t>* pids, std::string* error) {
  pids->clear();
  if (::access(dir.c_str(), R_OK | X_OK) != 0) {
    if (errno == ENOENT) return true;  // no process has published yet
    *error = "cannot read " + dir + ": " + runtime_dir::errno_text(errno);
    return false;
  }
  for (const std::string& sub : user_dirs(dir)) {
    // Another user's subtree we may not read: its processes are not ours to see.
    DIR* d = ::opendir(sub.c_str());
    if (d == nullptr) continue;
    while (const dirent* e = ::readdir(d)) {
      uint32_t pid = 0;
      if (parse_number(e->d_name, &pid) && pid != 0) pids->push_back(pid);
    }
    ::closedir(d);
  }
  std::sort(pids->begin(), pids->end());
  pids->erase(std::unique(pids->begin(), pids->end()), pids->end());
  return true;
}

}  // namespace smcpre::stats
