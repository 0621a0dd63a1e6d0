// Is a TCP connection that another process handed us still at the very start of its byte
// stream? A socket inherited across exec() or received by SCM_RIGHTS arrives without
// smcpre's state (the fd table does not cross exec, nor a unix socket). If nothing has
// been read from it and nothing written to it yet, nobody has decided it: the peer's
// first bytes may be a CLC Proposal, and the process that reads them must answer it
// exactly as the process that accepted would have (README, "Process models"). If anything
// moved already, it was decided elsewhere and stays the kernel's.
#pragma once

namespace smcpre::core {

// True for a connected (not listening) AF_INET/AF_INET6 TCP socket in ESTABLISHED state
// from which no byte has been consumed and to which no data byte was ever sent or
// queued, according to the kernel's own counters (TCP_INFO, SIOCINQ, SIOCOUTQ). Raw
// syscalls only; false when the kernel cannot tell.
bool at_stream_start(int fd);

}  // namespace smcpre::core
