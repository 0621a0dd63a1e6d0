#include "rdma/shm/arena.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "config/fd_budget.h"
#include "config/log.h"

namespace smcpre::rdma::shm {

// One memfd, mapped whole in the owner, carved front to back.
struct MemoryArena::Slice::Chunk {
  SharedMemory memory;
  uint64_t carved = 0;  // bytes handed out from the front (under the arena's mutex)
  const pid_t owner = ::getpid();
  Chunk() = default;
  Chunk(const Chunk&) = delete;
  Chunk& operator=(const Chunk&) = delete;
  ~Chunk() {
    if (memory.fd() >= 0) config::uncharge_fds(1);
  }
};

MemoryArena::Slice::Slice(std::shared_ptr<MemoryArena> arena, std::shared_ptr<Chunk> chunk,
                          uint64_t offset, size_t length)
    : arena_(std::move(arena)),
      chunk_(std::move(chunk)),
      offset_(offset),
      length_(length),
      addr_(static_cast<uint8_t*>(chunk_->memory.addr()) + offset) {}

MemoryArena::Slice::~Slice() {
  arena_->give_back(chunk_, offset_, length_);
}

int MemoryArena::Slice::fd() const {
  return chunk_->memory.fd();
}

std::unique_ptr<MemoryArena::Slice> MemoryArena::allocate(size_t length, std::string* error) {
  const size_t bytes = round_up(std::max<size_t>(length, 1), page_size());
  std::lock_guard lock(mutex_);
  // A slice of the same size given back earlier (a link group's RMBs and send buffers
  // mostly have one size each).
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->length == bytes) {
      FreeSlice slice = std::move(*it);
      free_.erase(it);
      return std::unique_ptr<Slice>(
          new Slice(shared_from_this(), std::move(slice.chunk), slice.offset, slice.length));
    }
  }
  if (chunks_.empty() || chunks_.back()->memory.length() - chunks_.back()->carved < bytes) {
    size_t chunk_bytes = next_chunk_bytes_;
    while (chunk_bytes < bytes) chunk_bytes *= 2;
    auto chunk = std::make_shared<Slice::Chunk>();
    if (!chunk->memory.create("smcpre-mr", chunk_bytes, error)) return nullptr;
    config::charge_fds(1);
    // The rest of the previous chunk is not lost: it is carved no further, and costs no
    // memory until touched.
    chunks_.push_back(std::move(chunk));
    next_chunk_bytes_ = std::min(kMaxChunkBytes, std::max(next_chunk_bytes_, chunk_bytes) * 2);
  }
  const std::shared_ptr<Slice::Chunk>& chunk = chunks_.back();
  const uint64_t offset = chunk->carved;
  chunk->carved += bytes;
  return std::unique_ptr<Slice>(new Slice(shared_from_this(), chunk, offset, bytes));
}

void MemoryArena::give_back(const std::shared_ptr<Slice::Chunk>& chunk, uint64_t offset,
                            size_t length) {
  // A forked child that destroys its inherited copy of a PD must not free the parent's
  // pages: the memfd is the same.
  if (::getpid() != chunk->owner) return;
  // Frees the pages now and makes the slice read as zeros when it is handed out again.
  // (A peer mapping the slice still cannot fault: the memfd keeps its size.)
  if (::fallocate(chunk->memory.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(offset), static_cast<off_t>(length)) != 0) {
    // Not zeroed: never hand it out again (it stays part of the chunk, unused).
    SMC_LOG_WARN("shm: cannot free a memory region's pages: {}", std::strerror(errno));
    return;
  }
  std::lock_guard lock(mutex_);
  try {
    free_.push_back(FreeSlice{chunk, offset, length});
  } catch (const std::bad_alloc&) {
    // Simply not reused.
  }
}

size_t MemoryArena::chunk_count() {
  std::lock_guard lock(mutex_);
  return chunks_.size();
}

}  // namespace smcpre::rdma::shm
