// Tests for config/option_map.h: what the preload trusts of the option program's records
// and map (anything another root process could have written is "nothing seen"), the
// kernel release check, and a process without the program (every call a quiet no-op).
#include <linux/bpf.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "config/option_map.h"

using smcpre::option::judge;
using smcpre::option::map_problem;
using smcpre::option::mark_record;
using smcpre::option::Role;
using smcpre::option::Seen;

namespace {

smcpre_option_record record(uint8_t want, uint8_t state) {
  smcpre_option_record r = mark_record(static_cast<Role>(want));
  r.state = state;
  return r;
}

}  // namespace

TEST_CASE("the mark is what the program looks for", "[option]") {
  const smcpre_option_record r = mark_record(Role::kClient);
  CHECK(r.magic == SMCPRE_OPTION_MAGIC);
  CHECK(r.want == SMCPRE_WANT_PROPOSE);
  CHECK(r.state == SMCPRE_STATE_MARKED);
  CHECK(r.zero[0] == 0);
  CHECK(r.zero[1] == 0);
  CHECK(mark_record(Role::kListener).want == SMCPRE_WANT_LISTEN);
  // The layout the program and the map (value size 8) were built with.
  CHECK(sizeof(smcpre_option_record) == 8);
}

TEST_CASE("records as the program leaves them", "[option]") {
  for (Role role : {Role::kClient, Role::kListener}) {
    const auto want = static_cast<uint8_t>(role);
    CHECK(judge(record(want, SMCPRE_STATE_MARKED), role) == Seen::kNothing);
    CHECK(judge(record(want, SMCPRE_STATE_ARMED), role) == Seen::kArmed);
    CHECK(judge(record(want, SMCPRE_STATE_PEER_SMC), role) == Seen::kPeerSmc);
    CHECK(judge(record(want, SMCPRE_STATE_PEER_NONE), role) == Seen::kPeerNone);
  }
}

TEST_CASE("records the program did not leave are nothing seen", "[option]") {
  // Another role: a listener's record read as a client's (a reused fd), and back.
  CHECK(judge(record(SMCPRE_WANT_LISTEN, SMCPRE_STATE_PEER_SMC), Role::kClient) == Seen::kNothing);
  CHECK(judge(record(SMCPRE_WANT_PROPOSE, SMCPRE_STATE_PEER_SMC), Role::kListener) ==
        Seen::kNothing);
  // A withdrawn mark, an unknown want or state.
  CHECK(judge(record(SMCPRE_WANT_NONE, SMCPRE_STATE_PEER_SMC), Role::kClient) == Seen::kNothing);
  CHECK(judge(record(7, SMCPRE_STATE_PEER_SMC), Role::kClient) == Seen::kNothing);
  for (int state : {4, 5, 0x80, 0xff}) {
    CHECK(judge(record(SMCPRE_WANT_PROPOSE, static_cast<uint8_t>(state)), Role::kClient) ==
          Seen::kNothing);
  }
  // Another layout's magic, or bytes where ours has zeros.
  smcpre_option_record r = record(SMCPRE_WANT_PROPOSE, SMCPRE_STATE_PEER_SMC);
  r.magic ^= 1;
  CHECK(judge(r, Role::kClient) == Seen::kNothing);
  r = record(SMCPRE_WANT_PROPOSE, SMCPRE_STATE_PEER_SMC);
  r.zero[1] = 1;
  CHECK(judge(r, Role::kClient) == Seen::kNothing);
  smcpre_option_record zeros;
  std::memset(&zeros, 0, sizeof zeros);
  CHECK(judge(zeros, Role::kClient) == Seen::kNothing);
}

TEST_CASE("only the program's own map is used", "[option]") {
  const uint32_t sk = BPF_MAP_TYPE_SK_STORAGE;
  const uint32_t flags = BPF_F_NO_PREALLOC | BPF_F_CLONE;
  CHECK(map_problem(sk, 4, 8, flags, SMCPRE_BPF_MAP_NAME).empty());
  CHECK_FALSE(map_problem(BPF_MAP_TYPE_HASH, 4, 8, flags, SMCPRE_BPF_MAP_NAME).empty());
  CHECK_FALSE(map_problem(sk, 8, 8, flags, SMCPRE_BPF_MAP_NAME).empty());
  CHECK(map_problem(sk, 4, 16, flags, SMCPRE_BPF_MAP_NAME).find("16") != std::string::npos);
  CHECK_FALSE(map_problem(sk, 4, 8, BPF_F_NO_PREALLOC, SMCPRE_BPF_MAP_NAME).empty());
  CHECK_FALSE(map_problem(sk, 4, 8, flags, "other_map").empty());
}

TEST_CASE("kernels before 5.10 cannot run the program", "[option]") {
  std::string why;
  for (const char* old : {"5.9.16", "5.4.0-150-generic", "4.19.0-27-amd64", "3.10.0"}) {
    why.clear();
    CHECK_FALSE(smcpre::option::release_supports_program(old, &why));
    CHECK(why.find(old) != std::string::npos);
    CHECK(why.find("5.10") != std::string::npos);
  }
  for (const char* ok : {"5.10.0-30-amd64", "5.15.0", "6.1.0-21-amd64", "6.12.9", "10.0"}) {
    CHECK(smcpre::option::release_supports_program(ok, &why));
  }
  // What cannot be read is left to the kernel's own answer.
  for (const char* odd : {"", "linux", "5", "5.x", "x.10"}) {
    CHECK(smcpre::option::release_supports_program(odd, &why));
  }
}

TEST_CASE("the pinned map's path", "[option]") {
  CHECK(smcpre::option::map_path("") == SMCPRE_BPF_DEFAULT_DIR "/" SMCPRE_BPF_MAP_PIN);
  CHECK(smcpre::option::map_path("/sys/fs/bpf/x") == "/sys/fs/bpf/x/option_map");
}

TEST_CASE("without a map everything is a quiet no-op", "[option]") {
  std::string error;
  CHECK(smcpre::option::open_pinned_map("/nonexistent/smcpre-bpf", &error) < 0);
  CHECK(error.find("/nonexistent/smcpre-bpf/option_map") != std::string::npos);
  // The process looks once: nothing there, never again (a later directory is not tried).
  CHECK_FALSE(smcpre::option::active("/nonexistent/smcpre-bpf"));
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  CHECK_FALSE(smcpre::option::mark("/nonexistent/smcpre-bpf", fd, Role::kClient));
  CHECK(smcpre::option::read(fd, Role::kClient) == Seen::kNothing);
  smcpre::option::withdraw(fd);
  // After a fork nothing changes either.
  smcpre::option::reset_after_fork();
  CHECK_FALSE(smcpre::option::active("/nonexistent/smcpre-bpf"));
  CHECK(smcpre::option::read(fd, Role::kListener) == Seen::kNothing);
  ::close(fd);
}
