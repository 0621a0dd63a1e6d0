// libFuzzer harness: the stream-level CLC reader (core/handshake.h read_clc) on a real
// socket, as a server or client meets a peer's first bytes: arriving in pieces, then the
// peer's end of stream. The input is
//   byte 0:          n = byte & 7, the number of pieces before the last one; bit 3 set:
//                    read_clc leaves a message it finds in the socket (consume = false)
//                    and the harness takes it off, as the server's state machine does
//   bytes 1 .. n:    the sizes of those pieces (0 allowed)
//   the rest:        the byte stream the peer sends
// Each piece is written to a socketpair and read_clc runs without waiting after it; after
// the last piece the writer shuts down and read_clc runs until it decides. Besides
// crashes, the harness fails when:
// - a delivered message is not exactly the next bytes of the stream, or its header does
//   not describe it;
// - read_clc wants more bytes after the peer's end of stream, or ends the stream early;
// - when it wants more, the size it says the message needs is not more than what is
//   there, or more than a CLC message can be, or not 0 when nothing is there; when the
//   message then comes, it is not of that size (once the header told it);
// - anything it did not deliver as a message is not left in the socket, in order: those
//   bytes are the application's (nothing lost in any decline or timeout path);
// - it reports an error or an interruption on a healthy socket.
// Delivered messages then go to the parser of their type, as the handshake does.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/handshake.h"
#include "core/wire/clc.h"
#include "tests/fuzz/fuzz_check.h"

namespace clc = smcpre::core::clc;
using smcpre::core::ClcRead;
using smcpre::core::read_clc;

namespace {

// No wait happens (wait = false); a partial message is judged only by the peer's end.
constexpr int64_t kPartialNs = 1'000'000'000;

template <typename Message>
bool parses(std::span<const uint8_t> bytes,
            bool (*parse)(std::span<const uint8_t>, Message*, std::string*), std::string* error) {
  Message m;
  return parse(bytes, &m, error);
}

class Stream {
 public:
  Stream(std::span<const uint8_t> bytes, bool consume) : bytes_(bytes), consume_(consume) {
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds_) == 0);
  }
  ~Stream() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }

  void send_piece(size_t size) {
    size = std::min(size, bytes_.size() - written_);
    if (size > 0) FUZZ_CHECK(::send(fds_[1], bytes_.data() + written_, size, 0) == ssize_t(size));
    written_ += size;
    read_messages(false);
  }

  void finish() {
    send_piece(bytes_.size() - written_);
    FUZZ_CHECK(::shutdown(fds_[1], SHUT_WR) == 0);
    read_messages(true);
    // Whatever was not a message is still there for the application, all of it.
    std::vector<uint8_t> rest;
    uint8_t buf[4096];
    ssize_t n;
    while ((n = ::recv(fds_[0], buf, sizeof buf, MSG_DONTWAIT)) > 0)
      rest.insert(rest.end(), buf, buf + n);
    FUZZ_CHECK(n == 0);  // the end of stream, not EAGAIN: nothing is held back
    FUZZ_CHECK(rest.size() == bytes_.size() - delivered_);
    FUZZ_CHECK(std::equal(rest.begin(), rest.end(), bytes_.begin() + delivered_));
  }

 private:
  void read_messages(bool peer_done) {
    while (!decided_) {
      std::vector<uint8_t> message;
      clc::Header header;
      size_t needed = kUnset;
      const ClcRead r =
          read_clc(fds_[0], -1, false, &message, &header, kPartialNs, &needed, consume_);
      const size_t there = written_ - delivered_;
      switch (r) {
        case ClcRead::kMessage:
          FUZZ_CHECK(message.size() == header.length);
          FUZZ_CHECK(message.size() <= there);
          FUZZ_CHECK(std::equal(message.begin(), message.end(), bytes_.begin() + delivered_));
          // Once the header was there, the size announced is the message's.
          if (announced_ > clc::kHeaderSize) FUZZ_CHECK(message.size() == announced_);
          announced_ = 0;
          if (!consume_) take_off(message);
          delivered_ += message.size();
          check_message(message, header);
          continue;
        case ClcRead::kNeedMore:
          // Only while the peer may still send, and only for the start of a message.
          FUZZ_CHECK(!peer_done);
          FUZZ_CHECK(there < clc::kMaxMessageSize);
          FUZZ_CHECK(needed != kUnset);
          if (there == 0) {
            FUZZ_CHECK(needed == 0);
          } else {
            FUZZ_CHECK(needed > there && needed <= clc::kMaxMessageSize);
            announced_ = needed;
          }
          return;
        case ClcRead::kNotClc:
          decided_ = true;  // the rest is application data
          return;
        case ClcRead::kEof:
          FUZZ_CHECK(peer_done && delivered_ == bytes_.size());
          decided_ = true;
          return;
        case ClcRead::kError:
        case ClcRead::kInterrupted:
          FUZZ_CHECK(!"read_clc failed on a healthy socket");
      }
    }
  }

  // What the caller of read_clc(consume = false) does with the message found: takes
  // exactly its bytes off the socket.
  void take_off(const std::vector<uint8_t>& message) {
    std::vector<uint8_t> got(message.size());
    FUZZ_CHECK(::recv(fds_[0], got.data(), got.size(), MSG_DONTWAIT) == ssize_t(got.size()));
    FUZZ_CHECK(got == message);
  }

  static void check_message(const std::vector<uint8_t>& message, const clc::Header& header) {
    clc::Header again;
    FUZZ_CHECK(clc::parse_header(message, &again) == clc::HeaderResult::kOk);
    FUZZ_CHECK(again.type == header.type && again.length == header.length &&
               again.version == header.version && again.flag == header.flag);
    std::string error;
    bool taken = false;
    switch (header.type) {
      case clc::Type::kProposal:
        taken = parses(message, clc::parse_proposal, &error);
        break;
      case clc::Type::kAccept:
        taken = parses(message, clc::parse_accept, &error);
        break;
      case clc::Type::kConfirm:
        taken = parses(message, clc::parse_confirm, &error);
        break;
      case clc::Type::kDecline:
        taken = parses(message, clc::parse_decline, &error);
        break;
    }
    FUZZ_CHECK(taken || !error.empty());
  }

  static constexpr size_t kUnset = ~size_t{0};

  std::span<const uint8_t> bytes_;
  const bool consume_;
  int fds_[2] = {-1, -1};
  size_t written_ = 0;
  size_t delivered_ = 0;  // consumed as CLC messages
  bool decided_ = false;  // read_clc said: no (more) CLC here
  size_t announced_ = 0;  // the size the next message needs, as read_clc last said
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t pieces = std::min<size_t>(data[0] & 7, size - 1);
  const std::span<const uint8_t> sizes(data + 1, pieces);
  const bool consume = (data[0] & 8) == 0;
  Stream stream(std::span<const uint8_t>(data + 1 + pieces, size - 1 - pieces), consume);
  for (uint8_t piece : sizes) stream.send_piece(piece);
  stream.finish();
  return 0;
}
