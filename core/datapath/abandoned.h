// Objects a fork child leaves behind on purpose. The parent's engine objects (its state,
// threads' bookkeeping, pools) cannot be destroyed in the child: destroying them would act
// on connections and locks that belong to the parent. The child drops its pointers to them
// and starts afresh; keep_abandoned() keeps each one reachable from a static list, so that
// a leak checker (LeakSanitizer in scripts/test --sanitize) does not report memory the
// child never meant to free.
#pragma once

namespace smcpre::core {

// Safe in a fork child (the child runs one thread; no lock is taken). A null pointer is
// ignored; if the list cannot grow, the object is merely no longer reachable.
void keep_abandoned(const void* object) noexcept;

}  // namespace smcpre::core
