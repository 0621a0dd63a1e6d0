// Building blocks of the shm device: owned fds, random numbers, and memfd-backed shared
// memory (ours, or a peer's that we map after checking it cannot hurt us).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "config/high_fd.h"
#include "config/sys.h"
#include "rdma/shm/ring.h"

namespace smcpre::rdma::shm {

// Largest region (or ring) a peer may hand us, so that a hostile one cannot make us
// reserve absurd amounts of address space with one message.
inline constexpr uint64_t kMaxRegionBytes = uint64_t{1} << 36;

// What peers may make this process map, all queue pairs together. Each region a peer
// announces is a mapping of up to kMaxRegionBytes: without a bound, about 2000
// announcements fill the address space (128 TiB) and 65530 the map count
// (vm.max_map_count), after which the application's own mmap and malloc fail. Both
// bounds leave the application most of what it has.
inline constexpr uint64_t kMaxPeerMappedBytes = uint64_t{1} << 44;  // 16 TiB
inline constexpr uint64_t kMaxPeerMappings = 32768;

class PeerMappingBudget {
 public:
  // Takes one mapping of `bytes` from the budget; false (nothing taken) if it would not fit.
  static bool take(uint64_t bytes) {
    const uint64_t mapped = bytes_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    const uint64_t count = mappings_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (mapped <= kMaxPeerMappedBytes && count <= kMaxPeerMappings) return true;
    give_back(bytes);
    return false;
  }
  static void give_back(uint64_t bytes) {
    bytes_.fetch_sub(bytes, std::memory_order_relaxed);
    mappings_.fetch_sub(1, std::memory_order_relaxed);
  }
  static uint64_t bytes() { return bytes_.load(std::memory_order_relaxed); }
  static uint64_t mappings() { return mappings_.load(std::memory_order_relaxed); }

 private:
  static inline std::atomic<uint64_t> bytes_{0};
  static inline std::atomic<uint64_t> mappings_{0};
};

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) sys::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

inline std::string errno_text(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

inline bool random_bytes(void* out, size_t length) {
  auto* p = static_cast<uint8_t*>(out);
  while (length > 0) {
    ssize_t n = ::getrandom(p, length, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    length -= static_cast<size_t>(n);
  }
  return true;
}

// A nonzero random value with `bits` significant bits (24 for QP numbers and PSNs, 32
// for memory keys); 0 if the kernel has no randomness to give.
inline uint32_t random_nonzero(unsigned bits) {
  const uint32_t mask = bits >= 32 ? 0xffffffffu : (1u << bits) - 1;
  for (int attempt = 0; attempt < 64; ++attempt) {
    uint32_t value = 0;
    if (!random_bytes(&value, sizeof value)) return 0;
    value &= mask;
    if (value != 0) return value;
  }
  return 0;
}

// One mapping of a memfd, MAP_SHARED and MADV_DONTFORK (a forked child must never touch
// registered or shared pages, and must not see them at all). Unmapped on destruction,
// but only in the process that mapped it: in a forked child the range is not mapped,
// and the address may since have been reused for something else.
class SharedMemory {
 public:
  SharedMemory() = default;
  SharedMemory(SharedMemory&& other) noexcept { *this = std::move(other); }
  SharedMemory& operator=(SharedMemory&& other) noexcept {
    if (this != &other) {
      reset();
      addr_ = std::exchange(other.addr_, nullptr);
      length_ = std::exchange(other.length_, 0);
      owner_ = std::exchange(other.owner_, 0);
      charged_ = std::exchange(other.charged_, false);
      fd_ = std::move(other.fd_);
    }
    return *this;
  }
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;
  ~SharedMemory() { reset(); }

  // A fresh zeroed memfd of `length` bytes (rounded up to whole pages), sealed so that
  // its size can never change: a peer that maps it can then never be hit by SIGBUS.
  // The fd stays open (it is passed to peers).
  bool create(const char* name, size_t length, std::string* error) {
    reset();
    const size_t bytes = round_up(length, page_size());
    UniqueFd fd(sys::move_fd_high(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)));
    if (!fd.valid()) return fail(error, errno_text("memfd_create", errno));
    if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
      return fail(error, errno_text("ftruncate", errno));
    }
    if (sys::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
      return fail(error, errno_text("memfd seal", errno));
    }
    if (!map(fd.get(), bytes, error)) return false;
    fd_ = std::move(fd);
    return true;
  }

  // Maps `length` bytes at `offset` (page-aligned) of a memfd received from a peer and
  // closes the fd. Refuses anything but a memfd sealed against shrinking and large
  // enough: the peer must not be able to truncate pages from under our stores.
  bool map_peer(UniqueFd fd, uint64_t length, std::string* error, uint64_t offset = 0) {
    reset();
    if (length == 0 || length > kMaxRegionBytes) {
      return fail(error, "peer memory size out of range (" + std::to_string(length) + ")");
    }
    if (offset > kMaxRegionBytes || offset % page_size() != 0) {
      return fail(error, "peer memory offset out of range (" + std::to_string(offset) + ")");
    }
    const int seals = sys::fcntl(fd.get(), F_GET_SEALS);
    if (seals < 0) return fail(error, "peer passed an fd that is not a memfd");
    if ((seals & F_SEAL_SHRINK) == 0)
      return fail(error, "peer memfd is not sealed against shrinking");
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return fail(error, errno_text("fstat", errno));
    const size_t bytes = round_up(length, page_size());
    if (!S_ISREG(st.st_mode) || st.st_size < 0 ||
        static_cast<uint64_t>(st.st_size) < offset + bytes) {
      return fail(error, "peer memfd smaller than announced (" + std::to_string(st.st_size) +
                             " < " + std::to_string(offset + bytes) + ")");
    }
    if (!PeerMappingBudget::take(bytes)) {
      return fail(error, "peer memory of " + std::to_string(bytes) +
                             " bytes exceeds this process's budget for peer mappings (" +
                             std::to_string(PeerMappingBudget::mappings()) + " mappings, " +
                             std::to_string(PeerMappingBudget::bytes()) + " bytes held)");
    }
    if (!map(fd.get(), bytes, error, offset)) {
      PeerMappingBudget::give_back(bytes);
      return false;
    }
    charged_ = true;
    return true;
  }

  void* addr() const { return addr_; }
  size_t length() const { return length_; }
  int fd() const { return fd_.get(); }

 private:
  bool map(int fd, size_t bytes, std::string* error, uint64_t offset = 0) {
    void* addr =
        ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
    if (addr == MAP_FAILED) return fail(error, errno_text("mmap", errno));
    if (::madvise(addr, bytes, MADV_DONTFORK) != 0) {
      int err = errno;
      ::munmap(addr, bytes);
      return fail(error, errno_text("madvise(MADV_DONTFORK)", err));
    }
    addr_ = addr;
    length_ = bytes;
    owner_ = ::getpid();
    return true;
  }

  void reset() {
    if (charged_) PeerMappingBudget::give_back(length_);
    charged_ = false;
    if (addr_ != nullptr && owner_ == ::getpid()) ::munmap(addr_, length_);
    addr_ = nullptr;
    length_ = 0;
    fd_.reset();
  }

  static bool fail(std::string* error, std::string text) {
    if (error != nullptr) *error = std::move(text);
    return false;
  }

  void* addr_ = nullptr;
  size_t length_ = 0;
  pid_t owner_ = 0;
  bool charged_ = false;  // a peer's memory, counted in PeerMappingBudget
  UniqueFd fd_;
};

}  // namespace smcpre::rdma::shm
