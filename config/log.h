// smcpre's log: one spdlog logger, off by default (SMCPRE_LOG), writing to stderr or to
// SMCPRE_LOG_FILE. The SMC_LOG_* macros cost one relaxed atomic load when the level is
// disabled: no logger is created, no argument is evaluated, nothing is allocated.
#pragma once

#include <spdlog/logger.h>

#include <atomic>

namespace smcpre::log {

// The logger, created on first use from config::current()'s SMCPRE_LOG/SMCPRE_LOG_FILE.
spdlog::logger& get();

// Overrides the level (and the macros' cached threshold) for tests.
void set_level_for_tests(spdlog::level::level_enum level);

namespace detail {
// The lowest level that may be logged: -1 until get() has set the logger up (so the first
// macro use goes through get()), then the logger's level.
extern std::atomic<int> g_threshold;
}  // namespace detail

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
