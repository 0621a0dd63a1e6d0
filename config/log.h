// smcpre's log: one spdlog logger, writing to stderr or to a file. It knows nothing of the
// configuration: whoever reads SMCPRE_LOG and SMCPRE_LOG_FILE hands them to init()
// (config::current() does, before it gives the configuration to anyone). The SMC_LOG_*
// macros cost one relaxed atomic load when the level is disabled: no argument is
// evaluated, nothing is allocated.
#pragma once

#include <spdlog/logger.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace smcpre::log {

// Sets the logger up, once per process: lines at `level` and above go to `file`, appended
// to, or to stderr if `file` is "" or cannot be opened (said once on stderr). Only the
// first call counts. Before it the level is off, the configuration's default: nothing is
// logged.
void init(spdlog::level::level_enum level, const std::string& file);

// The logger init() made, or one that logs nothing if init() has not been called.
spdlog::logger& get();

// Overrides the level (and the macros' cached threshold) for tests.
void set_level_for_tests(spdlog::level::level_enum level);

namespace detail {
// The lowest level that may be logged: off until init(), then the logger's level.
extern std::atomic<int> g_threshold;
}  // namespace detail

// Whether the n-th occurrence (from 1) of a repeated event is logged: the 1st, 2nd, 4th,
// 8th..., so that a peer or a flood that repeats it a million times is heard, not echoed.
inline bool thinned(uint64_t n) {
  return n != 0 && (n & (n - 1)) == 0;
}

inline bool should_log(spdlog::level::level_enum level) {
  return static_cast<int>(level) >= detail::g_threshold.load(std::memory_order_relaxed);
}

}  // namespace smcpre::log

// Format strings are checked at compile time (fmt::format_string).
#define SMC_LOG_AT(level, ...)                      \
  do {                                              \
    if (::smcpre::log::should_log(level)) {         \
      ::smcpre::log::get().log(level, __VA_ARGS__); \
    }                                               \
  } while (0)

#define SMC_LOG_TRACE(...) SMC_LOG_AT(::spdlog::level::trace, __VA_ARGS__)
#define SMC_LOG_DEBUG(...) SMC_LOG_AT(::spdlog::level::debug, __VA_ARGS__)
#define SMC_LOG_INFO(...) SMC_LOG_AT(::spdlog::level::info, __VA_ARGS__)
#define SMC_LOG_WARN(...) SMC_LOG_AT(::spdlog::level::warn, __VA_ARGS__)
#define SMC_LOG_ERROR(...) SMC_LOG_AT(::spdlog::level::err, __VA_ARGS__)
