// The background progress thread.
//
// Latency on this kind of machine is decided by wake-ups (doc/design.md §6.1): a futex or eventfd
// wake per message costs as much as the whole kernel TCP path. So a waiting application
// thread first polls the link itself (no thread hop, no syscall), for a budget that adapts
// to whether polling pays; only then does it sleep. The background thread keeps every link's
// receive queue reaped when no application thread is polling (so the queue never runs dry
// and the peer never meets RNR because nobody reads), and stays out of the way — no armed
// notification, so no eventfd write in the peer's send path — while application threads
// are polling.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/datapath/link.h"
#include "core/datapath/wait.h"

namespace smcpre::core {
class ConnectionEvents;
class LinkGroup;
}  // namespace smcpre::core

namespace smcpre::core {

// Something the progress thread calls back at a deadline even if no application call
// comes (a server handshake's: its Confirm missing, a partial CLC message stalled).
class DeadlineOwner {
 public:
  virtual ~DeadlineOwner() = default;
  // Called on the progress thread at or after the deadline, with no lock of its own
  // held. Returns the deadline to be called at next (ns), or -1 when done.
  virtual int64_t on_deadline(int64_t now_ns) = 0;
};

// Something the progress thread looks at every 10 ms until it is done, and then destroys
// (a closed socket that swallows the peer's late CLC messages: clc_stream.h).
class Lingerer {
 public:
  virtual ~Lingerer() = default;
  // Returns whether to look again.
  virtual bool linger(int64_t now_ns) = 0;
};

class ProgressThread {
 public:
  ProgressThread();
  ~ProgressThread();
  ProgressThread(const ProgressThread&) = delete;
  ProgressThread& operator=(const ProgressThread&) = delete;

  // Starts the thread on first use (threads start lazily, doc/design.md §4.1). The thread keeps
  // the group alive until its link has failed and its last connection is gone.
  bool add_link(std::shared_ptr<LinkGroup> group);
  // An application thread stops polling and goes to sleep: make sure the background
  // thread watches with notifications armed.
  void on_app_sleep();
  // Looks at `what` every 10 ms until it is done.
  void linger(std::unique_ptr<Lingerer> what);
  // A connection the application closed: if the peer has not closed its side by the
  // deadline, the connection is torn down (like TCP's timeout for orphaned sockets).
  void watch_close(std::weak_ptr<ConnectionEvents> connection, int64_t deadline_ns);
  // Watches an SMC connection's TCP socket (`fd`, a private duplicate that the watch
  // owns and closes) for its end: a peer process that dies cannot send an SMC close, but
  // its kernel closes its TCP socket. Returns the watch id for unwatch_tcp(), 0 on failure
  // (fd closed then). On the event the connection's on_tcp_ended() runs.
  uint64_t watch_tcp(std::weak_ptr<ConnectionEvents> connection, int fd);
  // Ends a watch and closes its fd. Safe from any thread, including inside a callback.
  void unwatch_tcp(uint64_t id);
  // Calls owner->on_deadline() at the deadline (unless the owner is gone by then).
  void watch_deadline(std::weak_ptr<DeadlineOwner> owner, int64_t deadline_ns);
  void stop();

  // The links an application thread polls while it waits for readiness
  // (wait_readiness_adaptive): a snapshot, so that no wait takes mutex_.
  using LinkGroups = std::vector<std::shared_ptr<LinkGroup>>;
  std::shared_ptr<const LinkGroups> links_for_app_polling() const;

 private:
  void run();
  // Reaps busy links back to back, without sleeping, while completions keep coming and no
  // application thread polls them (see run()).
  void poll_while_busy();
  bool ensure_started();
  void publish_links_locked();  // under mutex_, after groups_ changed

  std::mutex mutex_;  // guards links_ and the epoll set against the thread's use of them
  std::vector<std::shared_ptr<LinkGroup>> groups_;
  mutable std::mutex snapshot_mutex_;
  std::shared_ptr<const LinkGroups> snapshot_;  // under snapshot_mutex_
  // Devices whose asynchronous event fd is watched (they live as long as the process).
  std::vector<rdma::Device*> devices_;
  std::vector<std::unique_ptr<Lingerer>> lingering_;
  struct Closing {
    std::weak_ptr<ConnectionEvents> connection;
    int64_t deadline_ns;
  };
  std::vector<Closing> closing_;
  struct TcpWatch {
    std::weak_ptr<ConnectionEvents> connection;
    int fd;
  };
  // Its own lock: unwatch_tcp() is called from connection teardown, which may run on the
  // progress thread while it holds mutex_.
  std::mutex watch_mutex_;
  std::unordered_map<uint64_t, TcpWatch> tcp_watches_;
  uint64_t next_watch_id_ = 1;
  void on_tcp_event(uint64_t id);
  // Connections whose TCP connection ended: judged after a grace period, so that SMC
  // messages the peer sent before its FIN (on another path) are in first.
  struct TcpEnded {
    std::weak_ptr<ConnectionEvents> connection;
    int64_t deadline_ns;
  };
  std::vector<TcpEnded> tcp_ended_;  // under mutex_
  struct Timed {
    std::weak_ptr<DeadlineOwner> owner;
    int64_t deadline_ns;
  };
  std::vector<Timed> deadlines_;  // under mutex_
  // Calls the owners whose deadline has passed (takes mutex_ itself; not held while
  // they run). Returns the earliest deadline left, -1 if none.
  int64_t run_deadlines();
  void reap_tcp_ended();  // under mutex_
  void reap_closing();    // under mutex_
  void reap_lingering();  // under mutex_
  std::thread thread_;
  int epoll_fd_ = -1;
  int kick_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> armed_{false};
};

ProgressThread& progress_thread();
// The progress thread if one was created (no SMC link ever existed otherwise).
ProgressThread* existing_progress_thread();
void reset_progress_thread_after_fork();

}  // namespace smcpre::core
