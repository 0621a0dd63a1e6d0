// The logger's setup and its fork-safe sink.
//
// The sink is spdlog's thread-safe console sink (stdout_sink_base, which formats, writes
// and flushes each message under a mutex) instantiated with our own mutex type, for one
// reason: fork(). A child forked while another thread was inside the sink inherits the
// mutex locked by a thread that does not exist there, and would hang on its first log
// line. spdlog's own console mutex is a function-local std::mutex we cannot reach; ours is
// a plain pthread mutex that a pthread_atfork child handler re-initialises.
#include "config/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <spdlog/details/fmt_helper.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks-inl.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>

#include "config/high_fd.h"
#include "config/sys.h"

namespace smcpre::log {

namespace detail {
constinit std::atomic<int> g_threshold{static_cast<int>(spdlog::level::off)};
}  // namespace detail

namespace {

// Time, "smcpre", pid/thread id, level, message. The thread id is %*, not spdlog's %t:
// spdlog caches the id per thread, and a fork child's main thread would keep printing the
// id of the parent thread that forked it.
constexpr const char* kPattern = "%Y-%m-%d %H:%M:%S.%f smcpre[%P/%*] %l: %v";

// The calling thread's id, asked of the kernel on every line (a syscall: only lines that
// are logged pay it).
class ThreadIdFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    spdlog::details::fmt_helper::append_int(static_cast<long>(::syscall(SYS_gettid)), dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<ThreadIdFlag>();
  }
};

pthread_mutex_t g_sink_mutex = PTHREAD_MUTEX_INITIALIZER;

// Satisfies spdlog's ConsoleMutex concept: a `mutex_t` with lock/unlock and a static
// accessor. Stateless: the state is g_sink_mutex, which the fork handler can reach.
struct SinkMutex {
  using mutex_t = SinkMutex;
  static mutex_t& mutex() {
    static SinkMutex instance;
    return instance;
  }
  void lock() { pthread_mutex_lock(&g_sink_mutex); }
  void unlock() { pthread_mutex_unlock(&g_sink_mutex); }
};

using Sink = spdlog::sinks::stdout_sink_base<SinkMutex>;

// The child has one thread (this one), so nobody can hold or wait for the mutex here;
// re-initialising is how glibc treats its own internal locks after fork.
void reinit_sink_mutex_in_child() {
  pthread_mutex_init(&g_sink_mutex, nullptr);
}

void write_stderr(const std::string& line) {
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = sys::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// Opens the log file for appending, close-on-exec (our fds never leak into exec'd
// programs, which spdlog's own file sink cannot promise). nullptr and errno on failure.
FILE* open_log_file(const std::string& path) {
  int fd = sys::move_fd_high(
      ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644));
  if (fd < 0) return nullptr;
  FILE* file = ::fdopen(fd, "a");
  if (file == nullptr) {
    int saved = errno;
    sys::close(fd);
    errno = saved;
  }
  return file;
}

std::once_flag g_once;
spdlog::logger* g_logger = nullptr;

void create_logger(spdlog::level::level_enum level, const std::string& file) {
  FILE* out = stderr;
  std::string fallback_warning;
  // With logging off, the file would only ever be created empty: leave it alone.
  if (!file.empty() && level != spdlog::level::off) {
    out = open_log_file(file);
    if (out == nullptr) {
      // The file is named by SMCPRE_LOG_FILE, the only way to give one: the message
      // names the variable the user set.
      fallback_warning = "smcpre: cannot open SMCPRE_LOG_FILE \"" + file +
                         "\": " + std::generic_category().message(errno) + "; logging to stderr\n";
      out = stderr;
    }
  }

  auto sink = std::make_shared<Sink>(out);
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<ThreadIdFlag>('*').set_pattern(kPattern);
  sink->set_formatter(std::move(formatter));
  // Never destroyed (and never registered with spdlog's registry): threads may still log
  // while static destructors run at exit. The file is flushed after every line.
  auto* logger = new spdlog::logger("smcpre", std::move(sink));
  logger->set_level(level);
  logger->flush_on(spdlog::level::warn);  // the sink flushes every line anyway
  pthread_atfork(nullptr, nullptr, reinit_sink_mutex_in_child);
  g_logger = logger;
  detail::g_threshold.store(static_cast<int>(level), std::memory_order_relaxed);

  if (!fallback_warning.empty()) write_stderr(fallback_warning);
}

}  // namespace

void init(spdlog::level::level_enum level, const std::string& file) {
  std::call_once(g_once, create_logger, level, file);
}

spdlog::logger& get() {
  // Reached before init() only by set_level_for_tests(): the macros stay below the
  // threshold until then.
  std::call_once(g_once, create_logger, spdlog::level::off, std::string());
  return *g_logger;
}

void set_level_for_tests(spdlog::level::level_enum level) {
  get().set_level(level);
  detail::g_threshold.store(static_cast<int>(level), std::memory_order_relaxed);
}

}  // namespace smcpre::log
