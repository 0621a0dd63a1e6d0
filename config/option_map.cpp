// The option program's socket storage map, by raw bpf(2) (option_map.h).
#include "config/option_map.h"

#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "config/fd_budget.h"
#include "config/high_fd.h"
#include "config/log.h"
#include "config/sys.h"

namespace smcpre::option {
namespace {

// The process's map: kUnknown until first looked for, kInactive when that failed, else
// its fd. Lock-free, so that a fork in the middle of the opening leaves no lock behind.
constexpr int kUnknown = -2;
constexpr int kInactive = -1;
std::atomic<int> g_map_fd{kUnknown};
// The map's kernel id, to recognize it after a fork (0: not open).
std::atomic<uint32_t> g_map_id{0};
// Set in a fork child: the next use checks that g_map_fd is still the map.
std::atomic<bool> g_check_inherited{false};

long bpf(int cmd, bpf_attr* attr) {
  return ::syscall(SYS_bpf, cmd, attr, sizeof *attr);
}

// The kernel's view of map `fd`; false (errno set) if it is none.
bool map_info(int fd, bpf_map_info* info) {
  std::memset(info, 0, sizeof *info);
  bpf_attr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.info.bpf_fd = static_cast<uint32_t>(fd);
  attr.info.info_len = sizeof *info;
  attr.info.info = reinterpret_cast<uint64_t>(info);
  return bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) == 0;
}

// Opens the map for the process, once: the winner of a race keeps its fd.
int open_once(std::string_view dir) {
  std::string error;
  int fd = dir == "none" ? -1 : open_pinned_map(dir, &error);
  if (fd >= 0) {
    fd = sys::move_fd_high(fd);
    bpf_map_info info;
    g_map_id.store(map_info(fd, &info) ? info.id : 0, std::memory_order_relaxed);
  }
  int expected = kUnknown;
  if (!g_map_fd.compare_exchange_strong(expected, fd < 0 ? kInactive : fd,
                                        std::memory_order_acq_rel)) {
    if (fd >= 0) sys::close(fd);
    return expected;
  }
  if (fd >= 0) {
    config::charge_fds(1);
    SMC_LOG_INFO(
        "option program active: {} open, sockets are marked (the TCP handshake "
        "decides where the program is attached to this process's cgroup)",
        map_path(dir));
  } else if (dir == "none") {
    SMC_LOG_INFO("option program not used (SMCPRE_BPF_DIR=none)");
  } else {
    SMC_LOG_INFO(
        "option program not active ({}): the listener registry and SMCPRE_PEERS "
        "decide who proposes",
        error);
  }
  return fd < 0 ? kInactive : fd;
}

// The map's fd if it is open (kUnknown or kInactive if not), checked once after a fork.
int open_fd() {
  if (g_check_inherited.exchange(false, std::memory_order_acq_rel)) {
    // A fork child that closed the inherited fd (or has another file under its number)
    // looks again; the number is not ours any more, so it is not closed.
    const int fd = g_map_fd.load(std::memory_order_acquire);
    bpf_map_info info;
    if (fd >= 0 && (!map_info(fd, &info) || info.id != g_map_id.load(std::memory_order_relaxed))) {
      config::uncharge_fds(1);
      g_map_fd.store(kUnknown, std::memory_order_release);
    }
  }
  return g_map_fd.load(std::memory_order_acquire);
}

// The map's fd, opened on first use; -1 if the program is not active.
int map_fd(std::string_view dir) {
  const int fd = open_fd();
  if (fd != kUnknown) return fd;
  return open_once(dir);
}

bool elem_call(int cmd, int map, int fd, smcpre_option_record* value, uint64_t flags) {
  bpf_attr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.map_fd = static_cast<uint32_t>(map);
  attr.key = reinterpret_cast<uint64_t>(&fd);
  attr.value = reinterpret_cast<uint64_t>(value);
  attr.flags = flags;
  return bpf(cmd, &attr) == 0;
}

}  // namespace

smcpre_option_record mark_record(Role role) {
  smcpre_option_record r;
  std::memset(&r, 0, sizeof r);
  r.magic = SMCPRE_OPTION_MAGIC;
  r.want = static_cast<uint8_t>(role);
  r.state = SMCPRE_STATE_MARKED;
  return r;
}

Seen judge(const smcpre_option_record& r, Role role) {
  if (r.magic != SMCPRE_OPTION_MAGIC || r.want != static_cast<uint8_t>(role) || r.zero[0] != 0 ||
      r.zero[1] != 0) {
    return Seen::kNothing;
  }
  switch (r.state) {
    case SMCPRE_STATE_ARMED:
      return Seen::kArmed;
    case SMCPRE_STATE_PEER_SMC:
      return Seen::kPeerSmc;
    case SMCPRE_STATE_PEER_NONE:
      return Seen::kPeerNone;
    default:
      return Seen::kNothing;
  }
}

std::string map_problem(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t flags,
                        std::string_view name) {
  if (type != BPF_MAP_TYPE_SK_STORAGE) return "not a socket storage map";
  if (key_size != sizeof(int) || value_size != sizeof(smcpre_option_record)) {
    return "key or value size of another layout (" + std::to_string(key_size) + "/" +
           std::to_string(value_size) + " bytes, expected " + std::to_string(sizeof(int)) + "/" +
           std::to_string(sizeof(smcpre_option_record)) + ")";
  }
  if ((flags & BPF_F_CLONE) == 0) return "accepted sockets would not inherit the record";
  if (name != SMCPRE_BPF_MAP_NAME)
    return "named " + std::string(name) + ", not " SMCPRE_BPF_MAP_NAME;
  return {};
}

bool release_supports_program(std::string_view release, std::string* why) {
  unsigned major = 0;
  unsigned minor = 0;
  size_t i = 0;
  auto number = [&](unsigned* out) {
    const size_t start = i;
    while (i < release.size() && release[i] >= '0' && release[i] <= '9' && i - start < 6) {
      *out = *out * 10 + static_cast<unsigned>(release[i++] - '0');
    }
    return i > start;
  };
  if (!number(&major) || i >= release.size() || release[i++] != '.' || !number(&minor)) {
    return true;
  }
  if (major > 5 || (major == 5 && minor >= 10)) return true;
  *why = "kernel " + std::string(release) +
         " is older than 5.10, the first that lets BPF programs write and read TCP header "
         "options (bpf_store_hdr_opt, bpf_load_hdr_opt)";
  return false;
}

std::string map_path(std::string_view dir) {
  std::string path(dir.empty() ? std::string_view(SMCPRE_BPF_DEFAULT_DIR) : dir);
  return path + "/" SMCPRE_BPF_MAP_PIN;
}

int open_pinned_map(std::string_view dir, std::string* error) {
  const std::string path = map_path(dir);
  bpf_attr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.pathname = reinterpret_cast<uint64_t>(path.c_str());
  const int fd = static_cast<int>(bpf(BPF_OBJ_GET, &attr));
  if (fd < 0) {
    const int e = errno;
    *error = path + ": " + std::strerror(e);
    if (e == ENOENT) *error += " (not pinned: smcpre-bpf attach)";
    if (e == ENOSYS) *error = "no bpf(2) in this kernel";
    return -1;
  }
  bpf_map_info info;
  std::string problem;
  if (!map_info(fd, &info)) {
    problem = std::string("cannot read it: ") + std::strerror(errno);
  } else {
    problem = map_problem(info.type, info.key_size, info.value_size, info.map_flags,
                          std::string_view(info.name, ::strnlen(info.name, sizeof info.name)));
  }
  if (!problem.empty()) {
    sys::close(fd);
    *error = path + ": not the option program's map: " + problem;
    return -1;
  }
  return fd;
}

bool active(std::string_view dir) {
  return map_fd(dir) >= 0;
}

bool mark(std::string_view dir, int fd, Role role) {
  const int map = map_fd(dir);
  if (map < 0) return false;
  smcpre_option_record r = mark_record(role);
  if (elem_call(BPF_MAP_UPDATE_ELEM, map, fd, &r, BPF_ANY)) return true;
  static std::atomic<uint64_t> failures{0};
  if (log::thinned(failures.fetch_add(1, std::memory_order_relaxed) + 1)) {
    SMC_LOG_DEBUG("option program: socket {} not marked: {}", fd, std::strerror(errno));
  }
  return false;
}

void withdraw(int fd) {
  const int map = open_fd();
  if (map < 0) return;
  bpf_attr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.map_fd = static_cast<uint32_t>(map);
  attr.key = reinterpret_cast<uint64_t>(&fd);
  bpf(BPF_MAP_DELETE_ELEM, &attr);
}

Seen read(int fd, Role role) {
  const int map = open_fd();
  if (map < 0) return Seen::kNothing;
  smcpre_option_record r;
  std::memset(&r, 0, sizeof r);
  if (!elem_call(BPF_MAP_LOOKUP_ELEM, map, fd, &r, 0)) return Seen::kNothing;
  return judge(r, role);
}

void reset_after_fork() {
  g_check_inherited.store(true, std::memory_order_release);
}

}  // namespace smcpre::option
