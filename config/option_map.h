// The preload's side of the SMC TCP option program (bpf/smc_option.bpf.c; doc/design.md
// §2.9): the program's socket storage map, reached with raw bpf(2) calls by socket fd.
//
// Before connect() or listen() smcpre marks the socket (a record in the map); the program,
// attached to the process's cgroup, announces SMC in the SYN of a marked client and echoes
// it in a marked listener's SYN-ACK, and records whether the peer's SYN-ACK or SYN carried
// the option. After the handshake smcpre reads that record by fd.
//
// The map is opened once per process, lazily, from its pinned path (SMCPRE_BPF_DIR). Where
// that fails -- no BPF, no permission, nothing pinned, a map of another layout -- the
// program is "not active" for the process: said once at info level, and every call
// below is then a cheap no-op. No libbpf: the library must not carry it into every
// program it is preloaded into, and five commands of bpf(2) are all it needs.
//
// The map is shared memory that any process allowed to open it may write, so nothing read
// from it is trusted: a record that is not exactly what the program writes counts as
// "nothing seen", and the caller then decides as it would without the program.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "bpf/smc_option.h"

namespace smcpre::option {

// A mark's role: the value of the record's `want`.
enum class Role : uint8_t {
  kClient = SMCPRE_WANT_PROPOSE,
  kListener = SMCPRE_WANT_LISTEN,
};

// What the program recorded about a socket.
enum class Seen {
  kNothing,   // no record, not one of ours, or the program has not seen the handshake
  kArmed,     // listener: listening with the option armed (an accepted socket whose
              // handshake is not recorded yet inherits this); client: SYN sent, no SYN-ACK
  kPeerSmc,   // the peer's SYN-ACK (client) or SYN (accepted socket) carried the option
  kPeerNone,  // it did not
};

// The record smcpre writes to mark a socket.
smcpre_option_record mark_record(Role role);
// Judges a record read from the map for a socket smcpre marked as `role` (an accepted
// socket carries its listener's role). Anything but a record as the program leaves it is
// kNothing.
Seen judge(const smcpre_option_record& record, Role role);
// Why a map's properties (from BPF_OBJ_GET_INFO_BY_FD) are not those of the program's
// map; "" if they are.
std::string map_problem(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t flags,
                        std::string_view name);

// Whether a kernel of this release (uname -r) can run the program: 5.10 brought the BPF
// TCP header options it writes and reads. False with *why saying so for an older one; an
// unparseable release passes (the kernel's answer to loading the program will tell).
bool release_supports_program(std::string_view release, std::string* why);

// The pinned map's path under `dir` ("" means SMCPRE_BPF_DEFAULT_DIR).
std::string map_path(std::string_view dir);

// Opens the pinned map under `dir` and checks it is the program's; -1 with *error saying
// why not. The caller owns the fd (close-on-exec). For the tools.
int open_pinned_map(std::string_view dir, std::string* error);

// The process's map, opened on first call ("none" as `dir`: never). Whether it is open.
bool active(std::string_view dir);
// Marks socket `fd` (before its connect() or listen()); false if the program is not
// active or the kernel refused.
bool mark(std::string_view dir, int fd, Role role);
// Takes a client's mark back: its SYN's retransmissions carry no option from now on.
void withdraw(int fd);
// What the program recorded for socket `fd`, marked as `role` (kNothing when the map is
// not open).
Seen read(int fd, Role role);

// In a fork child: the map's fd was inherited and stays valid, unless the child closes
// it (daemons close every descriptor after fork); the next use checks it is still the map
// and opens it again if not.
void reset_after_fork();

}  // namespace smcpre::option
