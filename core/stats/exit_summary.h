// SMCPRE_STATS=exit: the process's one-screen summary (core/stats/text.h), printed when it
// exits, to SMCPRE_LOG_FILE when that is set, else to stderr.
#pragma once

namespace smcpre::core {

// Prints the summary if SMCPRE_STATS=exit and the process used smcpre (it published
// counters: a listener, a tracked connection, or a connection not proposed). Once.
void print_exit_summary();

}  // namespace smcpre::core
