// Tests for config/log.h, and for the policy file as config::current() loads and reports
// it: each case runs this test binary again in a fresh process with a chosen environment
// and checks what it logged or wrote to stderr.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/log.h"

// --- logging -----------------------------------------------------------------------------

namespace {

int g_evaluated = 0;
int side_effect() {
  return ++g_evaluated;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs this test binary again with `env` added, executing only the hidden test case
// `tag`, with stderr redirected to `stderr_path`. Returns the exit status.
int run_self(const std::string& tag, const std::vector<std::string>& env,
             const std::string& stderr_path) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // A policy file on this host must not change what a test means.
    putenv(const_cast<char*>("SMCPRE_CONFIG=none"));
    for (const std::string& kv : env) putenv(const_cast<char*>(kv.c_str()));
    int fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) _exit(100);
    execl("/proc/self/exe", "test_config", tag.c_str(), static_cast<char*>(nullptr));
    _exit(101);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

std::string temp_path(const std::string& name) {
  return "/tmp/smcpre-test-config-" + std::to_string(getpid()) + "-" + name;
}

}  // namespace

TEST_CASE("log macros are cheap and lazy", "[log]") {
  smcpre::log::set_level_for_tests(spdlog::level::off);
  g_evaluated = 0;
  SMC_LOG_ERROR("not evaluated {}", side_effect());
  SMC_LOG_TRACE("not evaluated {}", side_effect());
  CHECK(g_evaluated == 0);
  CHECK_FALSE(smcpre::log::should_log(spdlog::level::critical));

  smcpre::log::set_level_for_tests(spdlog::level::critical);
  SMC_LOG_ERROR("not evaluated {}", side_effect());
  CHECK(g_evaluated == 0);
  CHECK(smcpre::log::should_log(spdlog::level::critical));
  smcpre::log::set_level_for_tests(spdlog::level::off);
}

// Run by "log goes to SMCPRE_LOG_FILE" in a fresh process with a chosen environment.
TEST_CASE("log child: file", "[.][log_child_file]") {
  CHECK(smcpre::config::current().enabled);  // logs the unknown variable
  SMC_LOG_INFO("hello from {}", "parent");
  SMC_LOG_DEBUG("below the level");
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    SMC_LOG_WARN("hello from child");
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(status == 0);
}

TEST_CASE("log goes to SMCPRE_LOG_FILE, also from a fork child", "[log]") {
  const std::string log = temp_path("file.log");
  const std::string err = temp_path("file.err");
  unlink(log.c_str());
  REQUIRE(run_self("[log_child_file]",
                   {"SMCPRE_LOG=info", "SMCPRE_LOG_FILE=" + log, "SMCPRE_NO_SUCH_THING=1"},
                   err) == 0);
  std::string text = read_file(log);
  INFO(text);
  CHECK(text.find("warning: unknown variable SMCPRE_NO_SUCH_THING ignored") != std::string::npos);
  CHECK(text.find("info: hello from parent") != std::string::npos);
  CHECK(text.find("warning: hello from child") != std::string::npos);
  CHECK(text.find("below the level") == std::string::npos);
  CHECK(text.find(" smcpre[") != std::string::npos);
  // Lines come from two processes: two different pids.
  size_t first = text.find("smcpre[");
  size_t last = text.rfind("smcpre[");
  CHECK(text.substr(first, text.find('/', first) - first) !=
        text.substr(last, text.find('/', last) - last));
  CHECK(read_file(err).empty());
  unlink(log.c_str());
  unlink(err.c_str());
}

// Run by "the log takes its level from init() alone" in a fresh process.
TEST_CASE("log child: init", "[.][log_child_init]") {
  SMC_LOG_ERROR("before init");
  smcpre::log::init(spdlog::level::warn, "");
  SMC_LOG_INFO("below the level");
  SMC_LOG_WARN("after init");
}

TEST_CASE("the log takes its level from init() alone", "[log]") {
  const std::string err = temp_path("init.err");
  // SMCPRE_LOG is the configuration's: the log does not read it.
  REQUIRE(run_self("[log_child_init]", {"SMCPRE_LOG=off"}, err) == 0);
  std::string text = read_file(err);
  INFO(text);
  CHECK(text.find("before init") == std::string::npos);  // off until init()
  CHECK(text.find("below the level") == std::string::npos);
  CHECK(text.find("warning: after init") != std::string::npos);
  unlink(err.c_str());
}

TEST_CASE("log child: plain", "[.][log_child_plain]") {
  smcpre::config::current();
  SMC_LOG_ERROR("an error line");
}

TEST_CASE("unopenable SMCPRE_LOG_FILE falls back to stderr with one warning", "[log]") {
  const std::string err = temp_path("fallback.err");
  REQUIRE(run_self("[log_child_plain]",
                   {"SMCPRE_LOG=error", "SMCPRE_LOG_FILE=/dev/null/not-a-dir/x.log"}, err) == 0);
  std::string text = read_file(err);
  INFO(text);
  CHECK(text.find("smcpre: cannot open SMCPRE_LOG_FILE \"/dev/null/not-a-dir/x.log\"") !=
        std::string::npos);
  CHECK(text.find("error: an error line") != std::string::npos);
  unlink(err.c_str());
}

TEST_CASE("a bad value is reported on stderr even with logging off", "[log]") {
  const std::string err = temp_path("bad.err");
  REQUIRE(run_self("[log_child_plain]", {"SMCPRE_LOG=off", "SMCPRE_RMB_SIZE=300K"}, err) == 0);
  std::string text = read_file(err);
  INFO(text);
  CHECK(text.find("smcpre: SMCPRE_RMB_SIZE=\"300K\": expected a power of two from 16K to 8M") == 0);
  CHECK(text.find("an error line") == std::string::npos);  // the log itself stays off
  unlink(err.c_str());
}

// --- the policy file, as current() loads and reports it ----------------------------------

namespace {

std::string write_policy(const std::string& name, const std::string& text) {
  const std::string path = temp_path(name);
  std::ofstream(path, std::ios::trunc) << text;
  REQUIRE(chmod(path.c_str(), 0644) == 0);
  return path;
}

}  // namespace

// Run in a fresh process: SMCPRE_TEST_EXPECT_ENABLED says what current() must give.
TEST_CASE("config child: enabled", "[.][config_child_enabled]") {
  const char* expect = getenv("SMCPRE_TEST_EXPECT_ENABLED");
  REQUIRE(expect != nullptr);
  CHECK(smcpre::config::current().enabled == (std::string(expect) == "1"));
  SMC_LOG_ERROR("an error line");
}

TEST_CASE("at debug level the settings and rules in force are logged once", "[log]") {
  // The program is "test_config" (run_self's argv[0]): the first rule is for it.
  const std::string conf = write_policy("debug.conf",
                                        "# test\n"
                                        "SMCPRE_SPIN_US = 400\n"
                                        "SMCPRE_RMB_SIZE = 1M\n"
                                        "smc test_conf* client *:5000\n"
                                        "tcp other server *\n"
                                        "SMCPRE_RQ_DEPTH=64\n");
  const std::string log = temp_path("debug.log");
  const std::string err = temp_path("debug.err");
  unlink(log.c_str());
  REQUIRE(run_self("[config_child_enabled]",
                   {"SMCPRE_CONFIG=" + conf, "SMCPRE_LOG=debug", "SMCPRE_LOG_FILE=" + log,
                    "SMCPRE_RQ_DEPTH=128", "SMCPRE_TEST_EXPECT_ENABLED=1"},
                   err) == 0);
  std::string text = read_file(log);
  INFO(text);
  auto count = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
      ++n;
    }
    return n;
  };
  CHECK(count("debug: policy file: " + conf + " (1 rule for this program)\n") == 1);
  CHECK(count("debug: setting SMCPRE_RMB_SIZE=1M (from " + conf + ":3)\n") == 1);
  CHECK(count("debug: setting SMCPRE_RQ_DEPTH=128 (from the environment)\n") == 1);
  CHECK(count("debug: setting SMCPRE_LOG=debug (from the environment)\n") == 1);
  CHECK(count("debug: setting SMCPRE_CONFIG=" + conf + " (from the environment)\n") == 1);
  CHECK(count("debug: rule smc test_conf* client *:5000 (from " + conf + ":4)\n") == 1);
  CHECK(count("SMCPRE_SPIN_US") == 0);  // set to its default
  CHECK(count("other") == 0);           // another program's rule
  CHECK(count("configuration:") == 0);  // the old one-line dump is gone
  CHECK(count("error: an error line") == 1);
  CHECK(read_file(err).empty());
  unlink(log.c_str());
  unlink(err.c_str());
  unlink(conf.c_str());
}

TEST_CASE("a malformed policy file: one stderr line with its line, smcpre disabled", "[log]") {
  const std::string conf = write_policy("bad.conf",
                                        "SMCPRE_RMB_SIZE=1M\n"
                                        "smc test_config client 10.0.0.0/33\n");
  const std::string err = temp_path("badfile.err");
  REQUIRE(run_self("[config_child_enabled]",
                   {"SMCPRE_CONFIG=" + conf, "SMCPRE_LOG=off", "SMCPRE_TEST_EXPECT_ENABLED=0"},
                   err) == 0);
  CHECK(read_file(err) == "smcpre: " + conf +
                              ":2: address \"10.0.0.0/33\": expected an IPv4 prefix length from 0 "
                              "to 32; smcpre disabled\n");
  // The same file named by nobody, and a missing one named by SMCPRE_CONFIG.
  REQUIRE(run_self("[config_child_enabled]", {"SMCPRE_TEST_EXPECT_ENABLED=1"}, err) == 0);
  CHECK(read_file(err).empty());
  unlink(conf.c_str());
  REQUIRE(run_self("[config_child_enabled]",
                   {"SMCPRE_CONFIG=" + conf, "SMCPRE_TEST_EXPECT_ENABLED=0"}, err) == 0);
  CHECK(read_file(err) ==
        "smcpre: " + conf + ": no such file (named by SMCPRE_CONFIG); smcpre disabled\n");
  unlink(err.c_str());
}
