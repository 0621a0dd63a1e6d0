#include "config/runtime_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <system_error>

namespace smcpre::runtime_dir {

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

namespace {
void set_error(std::string* error, std::string text) {
  if (error != nullptr) *error = std::move(text);
}
}  // namespace

std::string default_path() {
  const uid_t uid = ::geteuid();
  if (uid == 0) return "/run/smcpre";
  // secure_getenv: a set-user-ID program must not let its caller choose the directory.
  const char* xdg = ::secure_getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/smcpre";
  return "/tmp/smcpre-" + std::to_string(uid);
}

bool fd_is_at_path(int fd, const std::string& path) {
  struct stat by_fd;
  struct stat by_path;
  if (::fstat(fd, &by_fd) != 0 || ::lstat(path.c_str(), &by_path) != 0) return false;
  return by_fd.st_dev == by_path.st_dev && by_fd.st_ino == by_path.st_ino;
}

bool make_directory(const std::string& path, mode_t mode, bool no_symlink, std::string* error) {
  if (::mkdir(path.c_str(), mode) == 0) {
    if (::chmod(path.c_str(), mode) == 0) return true;
    set_error(error, "cannot set mode of " + path + ": " + errno_text(errno));
    return false;
  }
  const int err = errno;
  struct stat st;
  const int rc = no_symlink ? ::lstat(path.c_str(), &st) : ::stat(path.c_str(), &st);
  if (err != EEXIST || rc != 0 || !S_ISDIR(st.st_mode)) {
    set_error(error,
              "cannot create directory " + path + ": " + errno_text(err == EEXIST ? ENOTDIR : err));
    return false;
  }
  return true;
}

namespace {

// <runtime_dir>/listeners or /stats: sticky and world-writable. A directory made by an
// older smcpre (0755, 0700) is repaired by its owner or root; else whoever made it first
// would keep every other user out.
bool make_shared(const std::string& path, std::string* error) {
  constexpr mode_t kShared = 01777;
  if (!make_directory(path, kShared, true, error)) return false;
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    set_error(error, "cannot stat " + path + ": " + errno_text(errno));
    return false;
  }
  if ((st.st_mode & 07777) == kShared) return true;
  if (::chmod(path.c_str(), kShared) == 0) return true;
  set_error(error, path + " (owner uid " + std::to_string(st.st_uid) + ", mode 0" +
                       std::to_string((st.st_mode >> 9) & 7) +
                       std::to_string((st.st_mode >> 6) & 7) +
                       std::to_string((st.st_mode >> 3) & 7) + std::to_string(st.st_mode & 7) +
                       ") is not shared (mode 1777): its owner or root must run smcpre once, or "
                       "chmod 1777 it");
  return false;
}

}  // namespace

bool owned_privately(const std::string& path, uid_t uid, std::string* error) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == uid &&
      (st.st_mode & 022) == 0) {
    return true;
  }
  set_error(error, path + " is not a directory owned by uid " + std::to_string(uid) +
                       " and writable by it alone");
  return false;
}

bool ensure(const std::string& runtime_dir, std::string* error) {
  if (runtime_dir.empty() || runtime_dir.front() != '/') {
    set_error(error, "runtime dir \"" + runtime_dir + "\" is not an absolute path");
    return false;
  }
  // mkdir -p for the parents; a parent that cannot be made shows up as the error below.
  for (size_t slash = runtime_dir.find('/', 1); slash != std::string::npos;
       slash = runtime_dir.find('/', slash + 1)) {
    ::mkdir(runtime_dir.substr(0, slash).c_str(), 0755);
  }
  // The default per-user dir (possibly in /tmp) is private: anyone able to add files to it
  // could make our clients send CLC proposals to servers that do not speak SMC, or read
  // which programs run.
  const uid_t uid = ::geteuid();
  const bool per_user = uid != 0 && runtime_dir == default_path();
  if (!make_directory(runtime_dir, per_user ? 0700 : 0755, false, error)) return false;
  if (per_user && !owned_privately(runtime_dir, uid, error)) return false;
  // Best effort: whoever comes first makes both shared dirs, so that a later user who
  // cannot write the runtime dir itself still finds them. user_subtree() says what fails.
  make_shared(runtime_dir + "/listeners", nullptr);
  make_shared(runtime_dir + "/stats", nullptr);
  return true;
}

std::string subtree_path(const std::string& runtime_dir, const char* kind, uid_t uid) {
  return runtime_dir + "/" + kind + "/" + std::to_string(uid);
}

bool trusted_subtree(const std::string& path, uid_t uid) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == uid &&
         (st.st_mode & 022) == 0;
}

bool user_subtree(const std::string& runtime_dir, const char* kind, mode_t mode, std::string* path,
                  std::string* error) {
  if (!make_shared(runtime_dir + "/" + kind, error)) return false;
  const uid_t uid = ::geteuid();
  *path = subtree_path(runtime_dir, kind, uid);
  if (!make_directory(*path, mode, true, error)) return false;
  struct stat st;
  if (::lstat(path->c_str(), &st) != 0) {
    set_error(error, "cannot stat " + *path + ": " + errno_text(errno));
    return false;
  }
  // Only we (and root) can change a directory we own: then a wrong mode is ours to fix.
  // Root takes back one another user made under its uid, so that a user of a shared
  // runtime dir cannot keep root from publishing; the files it left there are not
  // root's, and readers trust only files of the subtree's own uid.
  if ((st.st_uid != uid && uid == 0 && ::lchown(path->c_str(), 0, 0) != 0) ||
      ((st.st_mode & 07777) != mode && (st.st_uid == uid || uid == 0) &&
       ::chmod(path->c_str(), mode) != 0)) {
    set_error(error, "cannot take over " + *path + ": " + errno_text(errno));
    return false;
  }
  return owned_privately(*path, uid, error);
}

}  // namespace smcpre::runtime_dir
