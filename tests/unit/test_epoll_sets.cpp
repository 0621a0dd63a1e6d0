// A bit per fd (preload/fd_bits.h), as epoll_sets.h and preconnect_epoll.h use it: marked,
// forgotten, independent per fd, out-of-range numbers ignored.
#include <catch2/catch.hpp>
#include <memory>

#include "preload/fd_bits.h"

using smcpre::preload::FdBits;

TEST_CASE("epoll sets: marked, forgotten, each fd on its own", "[epoll_sets]") {
  auto sets = std::make_unique<FdBits>();
  for (int fd : {0, 1, 63, 64, 65, 1000, FdBits::kMaxFds - 1}) {
    CAPTURE(fd);
    CHECK_FALSE(sets->test(fd));
    sets->mark(fd);
    CHECK(sets->test(fd));
    // Neighbours in the same word stay unmarked.
    if (fd > 0) CHECK_FALSE(sets->test(fd - 1));
    if (fd + 1 < FdBits::kMaxFds) CHECK_FALSE(sets->test(fd + 1));
    sets->mark(fd);  // idempotent
    sets->forget(fd);
    CHECK_FALSE(sets->test(fd));
    sets->forget(fd);  // forgetting twice is harmless
  }
  // Two marks in one word: forgetting one keeps the other.
  sets->mark(10);
  sets->mark(11);
  sets->forget(10);
  CHECK(sets->test(11));
  // Numbers out of range are never marked and never crash.
  for (int fd : {-1, -1000, FdBits::kMaxFds, FdBits::kMaxFds + 64}) {
    sets->mark(fd);
    CHECK_FALSE(sets->test(fd));
    sets->forget(fd);
  }
}
