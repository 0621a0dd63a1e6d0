// Which epoll fds poll the SMC links inline (preload/epoll_sets.h): marked by epoll_ctl,
// forgotten by close, independent per fd, out-of-range numbers ignored.
#include <catch2/catch.hpp>
#include <memory>

#include "preload/epoll_sets.h"

using smcpre::preload::EpollSets;

TEST_CASE("epoll sets: marked, forgotten, each fd on its own", "[epoll_sets]") {
  auto sets = std::make_unique<EpollSets>();
  for (int fd : {0, 1, 63, 64, 65, 1000, EpollSets::kMaxFds - 1}) {
    CAPTURE(fd);
    CHECK_FALSE(sets->watches_smc(fd));
    sets->mark(fd);
    CHECK(sets->watches_smc(fd));
    // Neighbours in the same word stay unmarked.
    if (fd > 0) CHECK_FALSE(sets->watches_smc(fd - 1));
    if (fd + 1 < EpollSets::kMaxFds) CHECK_FALSE(sets->watches_smc(fd + 1));
    sets->mark(fd);  // idempotent
    sets->forget(fd);
    CHECK_FALSE(sets->watches_smc(fd));
    sets->forget(fd);  // forgetting twice is harmless
  }
  // Two marks in one word: forgetting one keeps the other.
  sets->mark(10);
  sets->mark(11);
  sets->forget(10);
  CHECK(sets->watches_smc(11));
  // Numbers out of range are never marked and never crash.
  for (int fd : {-1, -1000, EpollSets::kMaxFds, EpollSets::kMaxFds + 64}) {
    sets->mark(fd);
    CHECK_FALSE(sets->watches_smc(fd));
    sets->forget(fd);
  }
}
