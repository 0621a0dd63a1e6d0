// The runtime dir (SMCPRE_RUNTIME_DIR) and the files smcpre keeps in it: the listener
// registry (config/registry) and the published counters (core/stats). Both make their
// directories the same way and recognise a file that was replaced under its name.
//
// Several users may share one runtime dir: <runtime_dir>/listeners and <runtime_dir>/stats
// are sticky and world-writable (like /tmp), and each user keeps its files in a subtree
// of its own, <kind>/<uid>, that only it can write. A reader trusts a file only in the
// subtree of the uid it expects, owned by that uid (see trusted_subtree).
#pragma once

#include <sys/types.h>

#include <string>

namespace smcpre::runtime_dir {

// The runtime dir when SMCPRE_RUNTIME_DIR is not set: /run/smcpre for root, else
// $XDG_RUNTIME_DIR/smcpre, else /tmp/smcpre-<uid>.
std::string default_path();

// Makes `runtime_dir` (and its parents), and the shared listeners/ and stats/ in it, so
// that a user who comes later can make its subtrees even if it cannot write the runtime
// dir itself. The per-user default (which may lie in /tmp) must end up a directory owned
// by us that nobody else can write. On failure *error (if not null) gets one line.
bool ensure(const std::string& runtime_dir, std::string* error);

// Makes (or repairs) <runtime_dir>/<kind>/<our euid> with `mode`, after ensure(), and
// returns its path in *path. The shared <kind> is made sticky and world-writable if it is
// not (by its owner or root). A subtree another user made under our uid is not ours: root
// takes its own back (chown), anyone else gets an error naming the owner.
bool user_subtree(const std::string& runtime_dir, const char* kind, mode_t mode, std::string* path,
                  std::string* error);

// <runtime_dir>/<kind>/<uid>
std::string subtree_path(const std::string& runtime_dir, const char* kind, uid_t uid);

// True if `path` is a directory (not a symlink) owned by `uid` that only `uid` can write:
// only then do the files in it speak for `uid`.
bool trusted_subtree(const std::string& path, uid_t uid);

// Creates `path` with exactly `mode` (mkdir's mode passes through the umask), or accepts
// an existing directory; with no_symlink, not a symlink to one.
bool make_directory(const std::string& path, mode_t mode, bool no_symlink, std::string* error);

// True if `path` is a directory (not a symlink) owned by `uid` that only it can write;
// else false with *error set.
bool owned_privately(const std::string& path, uid_t uid, std::string* error);

// True if `path` (still) names the file open on `fd`: a file found stale and removed
// between someone's open and lock is not the one at the path any more.
bool fd_is_at_path(int fd, const std::string& path);

std::string errno_text(int err);

}  // namespace smcpre::runtime_dir
