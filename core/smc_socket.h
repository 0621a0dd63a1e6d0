// The sockets smc_socket.cpp makes for the engine's entry points (engine.cpp).
#pragma once

#include <memory>

namespace smcpre::core {

class Socket;
struct HandshakeResult;

// A client's socket once its handshake is done: SMC, or TCP with the result's reason.
std::shared_ptr<Socket> make_client_socket(int fd, HandshakeResult& result);
// A server's socket, undecided until the client's first bytes: accepted here, or
// inherited from another process (`shared`). A policy may keep it on TCP. Without
// `clc_expected` (the client's SYN did not announce SMC, doc/design.md §2.9) it is TCP
// from the first byte: nothing is looked for in the stream.
std::shared_ptr<Socket> make_server_socket(int fd, bool policy_tcp, bool shared, bool clc_expected);

}  // namespace smcpre::core
