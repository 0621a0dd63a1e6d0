// The memory behind one protection domain's shm regions: a few large memfds ("chunks")
// that regions are carved from, instead of a memfd per region.
//
// An owner keeps each region's memfd open to announce it to QPs that connect later, so a
// memfd per region cost every SMC connection a descriptor (its RMB). Here a PD's regions
// are slices of chunks that grow geometrically (4 MiB, 8 MiB, ... 256 MiB): 1000 RMBs of
// 512 KiB take 7 descriptors. A chunk's pages are allocated only where a region touches
// them, and a slice given back is hole-punched (its memory freed, zero when reused).
//
// A peer receives a chunk's fd with each region announcement and maps the region's slice
// only. It could map the whole chunk: every slice belongs to the same PD, that is, to
// regions already exposed to that same peer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rdma/shm/memory.h"

namespace smcpre::rdma::shm {

class MemoryArena : public std::enable_shared_from_this<MemoryArena> {
 public:
  static constexpr size_t kFirstChunkBytes = size_t{4} << 20;
  static constexpr size_t kMaxChunkBytes = size_t{256} << 20;

  // A region's memory. Gives its slice back to the arena on destruction.
  class Slice {
   public:
    ~Slice();
    Slice(const Slice&) = delete;
    Slice& operator=(const Slice&) = delete;

    void* addr() const { return addr_; }
    size_t length() const { return length_; }    // whole pages
    int fd() const;                              // the chunk's memfd
    uint64_t offset() const { return offset_; }  // within the chunk, page-aligned

   private:
    friend class MemoryArena;
    struct Chunk;
    Slice(std::shared_ptr<MemoryArena> arena, std::shared_ptr<Chunk> chunk, uint64_t offset,
          size_t length);
    std::shared_ptr<MemoryArena> arena_;
    std::shared_ptr<Chunk> chunk_;
    uint64_t offset_;
    size_t length_;
    void* addr_;
  };

  static std::shared_ptr<MemoryArena> create() {
    return std::shared_ptr<MemoryArena>(new MemoryArena());
  }

  // A zeroed slice of at least `length` bytes (whole pages), or nullptr with *error.
  std::unique_ptr<Slice> allocate(size_t length, std::string* error);

  // For tests: chunks (memfds) the arena holds now.
  size_t chunk_count();

 private:
  MemoryArena() = default;
  void give_back(const std::shared_ptr<Slice::Chunk>& chunk, uint64_t offset, size_t length);

  struct FreeSlice {
    std::shared_ptr<Slice::Chunk> chunk;
    uint64_t offset;
    size_t length;
  };

  std::mutex mutex_;
  std::vector<std::shared_ptr<Slice::Chunk>> chunks_;  // the last one is carved next
  std::vector<FreeSlice> free_;
  size_t next_chunk_bytes_ = kFirstChunkBytes;
};

}  // namespace smcpre::rdma::shm
