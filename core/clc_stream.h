// CLC messages on a TCP byte stream (doc/design.md §2.2): the handshake reads them before
// any application byte, and a closed socket swallows late ones. Framing only: what a
// message means is the handshake's business.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/datapath/progress.h"
#include "core/wire/clc.h"

namespace smcpre::core {

// Reading CLC messages from the start of a TCP byte stream without consuming anything
// that is not one.
enum class ClcRead { kMessage, kNotClc, kNeedMore, kEof, kError, kInterrupted };

// Peeks at the stream; if it starts with a complete CLC message (its trailer eyecatcher
// included), consumes exactly that message into *message. Nothing else is ever consumed:
// bytes that do not make a complete, well-framed message stay in the socket for the
// application. With `wait`, waits until a decision or `deadline_ns` (-1: no deadline);
// without, answers from what is there now. Once part of a message is there, the rest
// gets at most `partial_ns` more (whatever `deadline_ns` says): a stalled partial message
// never holds the caller without end. A partial message followed by the peer's EOF (or an
// error) is kNotClc at once: those bytes are the application's.
// *needed (if given) says, on kNeedMore, how many bytes the message needs in all (as far
// as its header tells yet; 0 when nothing is there). Without `consume`, a message found
// stays in the socket (the caller takes it off later, header->length bytes).
ClcRead read_clc(int fd, int64_t deadline_ns, bool wait, std::vector<uint8_t>* message,
                 clc::Header* header, int64_t partial_ns, size_t* needed = nullptr,
                 bool consume = true);

// Whether any byte waits in the socket (a partial message, say) right now.
bool bytes_waiting(int fd);

// Takes over a TCP socket (`fd`, ours to close) that the application closed while the
// peer may still send CLC messages (a late Proposal, an Accept that crossed our Decline):
// they are consumed so that the close stays an orderly FIN instead of a RST over unread
// bytes. The socket is closed when they have come, on other data or EOF, or at the
// deadline. For ProgressThread::linger.
std::unique_ptr<Lingerer> swallow_late_clc(int fd, int64_t deadline_ns);

}  // namespace smcpre::core
