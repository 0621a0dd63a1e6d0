// The runtime dir (SMCPRE_RUNTIME_DIR) and the files smcpre keeps in it: the listener
// registry (config/registry) and the published counters (core/stats). Both make their
// directories the same way and recognise a file that was replaced under its name.
#pragma once

#include <sys/types.h>

#include <string>

namespace smcpre::runtime_dir {

// Makes `runtime_dir` (and its parents). The per-user default (which may lie in /tmp) must
// end up a directory owned by us that nobody else can write. On failure *error (if not
// null) gets one line.
bool ensure(const std::string& runtime_dir, std::string* error);

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
