#include "core/stats/exit_summary.h"

#include <fcntl.h>

#include <atomic>
#include <cerrno>
#include <string>

#include "config/config.h"
#include "config/sys.h"
#include "core/stats/segment.h"
#include "core/stats/snapshot.h"
#include "core/stats/text.h"

namespace smcpre::core {
namespace {

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = sys::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

}  // namespace

void print_exit_summary() {
  static std::atomic<bool> printed{false};
  const config::Config& config = config::current();
  if (config.stats != "exit" || !stats::published_any()) return;
  if (printed.exchange(true)) return;
  const std::string text = stats::summary_text(stats::take_snapshot(stats::segment()), "at exit");
  // Appended like the log's lines; a file that cannot be opened leaves stderr.
  int fd = -1;
  if (!config.log_file.empty()) {
    fd = ::open(config.log_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  }
  write_all(fd >= 0 ? fd : 2, text);
  if (fd >= 0) sys::close(fd);
}

}  // namespace smcpre::core
