// Child processes for integration tests; see process.h.
#include "tests/integration/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

extern char** environ;

namespace toolmesh::integration {
namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

// Opens a pidfd for `pid`, or -1 where the kernel has none.
int PidFdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

// This Abseil's string_view is not std::string_view; converts for absl calls.
absl::string_view Sv(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

std::string BaseName(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Process>> Process::Start(Options options) {
  if (access(options.path.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(
        options.path,
        " is not an executable file (not built yet?): ", ErrnoText(errno)));
  }
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", ErrnoText(errno)));
  }
  const int wake = eventfd(0, EFD_CLOEXEC);
  if (wake < 0) {
    close(out[0]);
    close(out[1]);
    return absl::InternalError(absl::StrCat("eventfd: ", ErrnoText(errno)));
  }

  std::vector<std::string> argv_store;
  argv_store.push_back(options.path);
  for (const std::string& arg : options.args) argv_store.push_back(arg);
  std::vector<char*> argv;
  for (std::string& arg : argv_store) argv.push_back(arg.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_store;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    bool overridden = false;
    for (const auto& [key, value] : options.env) {
      if (entry.size() > key.size() && entry.substr(0, key.size()) == key &&
          entry[key.size()] == '=') {
        overridden = true;
        break;
      }
    }
    if (!overridden) env_store.emplace_back(entry);
  }
  for (const auto& [key, value] : options.env) {
    env_store.push_back(key + "=" + value);
  }
  std::vector<char*> envp;
  for (std::string& entry : env_store) envp.push_back(entry.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  const std::string err_path =
      options.stderr_path.empty() ? "/dev/null" : options.stderr_path;
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty;
  sigemptyset(&empty);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGTERM, SIGINT, SIGPIPE, SIGHUP, SIGQUIT}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                      POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);

  pid_t pid = -1;
  const int rc = posix_spawn(&pid, options.path.c_str(), &actions, &attr,
                             argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(out[1]);
  if (rc != 0) {
    close(out[0]);
    close(wake);
    return absl::InternalError(
        absl::StrCat("posix_spawn ", options.path, ": ", ErrnoText(rc)));
  }

  std::unique_ptr<Process> process(new Process());
  process->pid_ = pid;
  process->name_ = options.name.empty() ? BaseName(options.path) : options.name;
  process->stderr_path_ = options.stderr_path;
  process->stdout_fd_ = out[0];
  process->wake_fd_ = wake;
  process->reader_ = std::thread([p = process.get()] { p->ReadStdout(); });
  return process;
}

Process::~Process() {
  if (!exit_status_.has_value()) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    WaitUntilExited(absl::Seconds(10));
    if (!exit_status_.has_value()) {
      // Still not reapable after SIGKILL (uninterruptible sleep): block,
      // since leaving a zombie or a running child behind is worse.
      int status = 0;
      waitpid(pid_, &status, 0);
      exit_status_ = status;
    }
  }
  // A grandchild that inherited stdout could keep the pipe open; give the
  // reader a bounded time to see end of file, then stop it regardless.
  WaitForStdoutEof(absl::Seconds(2));
  const std::uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) {
    // The reader also stops at end of file; nothing else to do.
  }
  if (reader_.joinable()) reader_.join();
  close(stdout_fd_);
  close(wake_fd_);
}

void Process::ReadStdout() {
  char buffer[4096];
  while (true) {
    pollfd fds[2] = {{stdout_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const int n = poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0) break;
    if (fds[0].revents == 0) continue;
    const ssize_t got = read(stdout_fd_, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    absl::MutexLock l(&mu_);
    partial_.append(buffer, static_cast<std::size_t>(got));
    std::size_t start = 0;
    for (std::size_t nl = partial_.find('\n', start); nl != std::string::npos;
         nl = partial_.find('\n', start)) {
      std::string line = partial_.substr(start, nl - start);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      lines_.push_back(std::move(line));
      start = nl + 1;
    }
    partial_.erase(0, start);
  }
  absl::MutexLock l(&mu_);
  if (!partial_.empty()) {
    lines_.push_back(partial_);
    partial_.clear();
  }
  eof_ = true;
}

absl::StatusOr<std::string> Process::WaitForLine(std::string_view prefix,
                                                 absl::Duration timeout) {
  std::optional<std::string> found;
  bool eof = false;
  {
    absl::MutexLock l(&mu_);
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const std::string& line : lines_) {
        if (absl::StartsWith(line, Sv(prefix))) {
          found = line;
          return true;
        }
      }
      return eof_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    // The condition may have turned true exactly at the deadline.
    ready();
    eof = eof_;
  }
  if (found.has_value()) return *found;
  const std::string what = absl::StrCat(
      name_, ": no stdout line starting with \"", Sv(prefix), "\"");
  if (eof) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " before its stdout closed\n", Describe()));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      what, " within ", absl::FormatDuration(timeout), "\n", Describe()));
}

std::vector<std::string> Process::StdoutLines() const {
  absl::MutexLock l(&mu_);
  return lines_;
}

bool Process::WaitForStdoutEof(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&eof_), timeout);
}

std::string Process::StderrTail(std::size_t max_bytes) const {
  if (stderr_path_.empty()) return "";
  absl::StatusOr<std::string> text = ReadWholeFile(stderr_path_);
  if (!text.ok()) return "";
  if (text->size() <= max_bytes) return *text;
  return text->substr(text->size() - max_bytes);
}

std::string Process::Describe() const {
  std::vector<std::string> lines = StdoutLines();
  if (lines.size() > 20) lines.erase(lines.begin(), lines.end() - 20);
  return absl::StrCat("--- ", name_, " stdout (last lines) ---\n",
                      absl::StrJoin(lines, "\n"), "\n--- ", name_,
                      " stderr (tail) ---\n", StderrTail(2048));
}

absl::Status Process::Signal(int signal) {
  if (exit_status_.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat(name_, " has already exited"));
  }
  if (kill(-pid_, signal) != 0 && kill(pid_, signal) != 0) {
    return absl::InternalError(
        absl::StrCat("kill ", name_, ": ", ErrnoText(errno)));
  }
  return absl::OkStatus();
}

bool Process::WaitUntilExited(absl::Duration timeout) {
  if (exit_status_.has_value()) return true;
  const absl::Time deadline = absl::Now() + timeout;
  const int pidfd = PidFdOpen(pid_);
  while (true) {
    int status = 0;
    const pid_t got = waitpid(pid_, &status, WNOHANG);
    if (got == pid_) {
      exit_status_ = status;
      break;
    }
    if (got < 0 && errno != EINTR) {
      // Not our child any more (cannot happen unless someone else reaped
      // it): report it as killed so that callers stop waiting.
      exit_status_ = SIGKILL;
      break;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    if (pidfd >= 0) {
      pollfd fd = {pidfd, POLLIN, 0};
      poll(&fd, 1,
           static_cast<int>(
               std::max<int64_t>(1, absl::ToInt64Milliseconds(left))));
    } else {
      // No pidfd: re-check every few milliseconds until the deadline.
      usleep(5000);
    }
  }
  if (pidfd >= 0) close(pidfd);
  return exit_status_.has_value();
}

absl::StatusOr<int> Process::Wait(absl::Duration timeout) {
  if (!WaitUntilExited(timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat(name_, " still running after ",
                     absl::FormatDuration(timeout), "\n", Describe()));
  }
  return *exit_status_;
}

absl::StatusOr<int> Process::Stop(absl::Duration grace) {
  if (exit_status_.has_value()) return *exit_status_;
  kill(-pid_, SIGTERM);
  if (WaitUntilExited(grace)) return *exit_status_;
  kill(-pid_, SIGKILL);
  kill(pid_, SIGKILL);
  return Wait(absl::Seconds(10));
}

absl::StatusOr<std::unique_ptr<TempDir>> TempDir::Create(
    std::string_view prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat((tmp != nullptr && *tmp != '\0') ? tmp : "/tmp", "/",
                   Sv(prefix), "XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(
        absl::StrCat("mkdtemp ", pattern, ": ", ErrnoText(errno)));
  }
  return std::unique_ptr<TempDir>(new TempDir(pattern));
}

TempDir::~TempDir() {
  if (std::getenv("TOOLMESH_KEEP_TEST_DIRS") != nullptr) return;
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

absl::Status WriteFile(const std::string& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("cannot read ", path));
  return text.str();
}

}  // namespace toolmesh::integration
