// Process-backed tools (exec_executor.h).
#include "worker/exec_executor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace toolmesh::worker {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr int kFallbackTickMs = 10;

// Owns one file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

bool MakePipe(UniqueFd* read_end, UniqueFd* write_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end->Reset(fds[0]);
  write_end->Reset(fds[1]);
  return true;
}

void SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  if (abbrev == nullptr) return absl::StrCat("signal ", sig);
  return absl::StrCat("SIG", abbrev, " (", sig, ")");
}

// Reads what is available from `fd` (non-blocking). Returns false at EOF or
// on a read error, true when the pipe is merely empty for now.
template <typename Sink>
bool DrainAvailable(int fd, Sink&& sink) {
  char buffer[65536];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      sink(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

// Owns a posix_spawn attribute set and file actions.
struct SpawnSetup {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  SpawnSetup() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

}  // namespace

class ExecExecutor::Call final : public CallState {
 public:
  explicit Call(common::ToolUseId call_id)
      : CallState(std::move(call_id)),
        wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

  // Polled by the call's thread; readable once a cancel was requested.
  const UniqueFd wake;

 protected:
  // Wakes the call's thread to kill the process group.
  void Wake() override {
    if (wake.valid()) {
      uint64_t one = 1;
      // A full counter already wakes the poller; nothing to do on failure.
      ssize_t unused = write(wake.get(), &one, sizeof(one));
      (void)unused;
    }
  }
};

ExecExecutor::ExecExecutor(ExecSpec spec, ExecOptions options)
    : spec_(std::move(spec)), options_(options) {
  const char* path = std::getenv("PATH");
  env_.push_back(absl::StrCat(
      "PATH=", path != nullptr && *path != '\0' ? path
                                                : "/usr/local/bin:/usr/bin:/bin"));
  for (const char* name : {"HOME", "LANG"}) {
    const char* value = std::getenv(name);
    if (value != nullptr) env_.push_back(absl::StrCat(name, "=", value));
  }
}

ExecExecutor::~ExecExecutor() = default;

void ExecExecutor::Run(const ToolCall& call, DoneCallback done) {
  auto state = std::make_shared<Call>(call.id);
  calls_.Start(
      state,
      [this, state, input = common::DumpJson(call.input)]() {
        // Writing to a stdin the tool has closed must give EPIPE here, not
        // kill the worker.
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
        return RunProcess(*state, input);
      },
      std::move(done));
}

bool ExecExecutor::Cancel(const common::ToolUseId& id) {
  return calls_.Cancel(id);
}

ToolOutcome ExecExecutor::RunProcess(Call& call, const std::string& input) {
  const SteadyClock::time_point start = SteadyClock::now();
  const SteadyClock::time_point deadline =
      start + absl::ToChronoMilliseconds(spec_.timeout);
  auto elapsed = [&start]() {
    return absl::FromChrono(SteadyClock::now() - start);
  };

  UniqueFd stdin_read, stdin_write, stdout_read, stdout_write, stderr_read,
      stderr_write;
  if (!call.wake.valid() || !MakePipe(&stdin_read, &stdin_write) ||
      !MakePipe(&stdout_read, &stdout_write) ||
      !MakePipe(&stderr_read, &stderr_write)) {
    return ErrorOutcome(OutcomeReason::kToolFailed,
                        absl::StrCat("cannot set up the tool's pipes: ",
                                     strerror(errno)),
                        elapsed());
  }

  pid_t pid = -1;
  {
    SpawnSetup setup;
    posix_spawn_file_actions_adddup2(&setup.actions, stdin_read.get(), 0);
    posix_spawn_file_actions_adddup2(&setup.actions, stdout_write.get(), 1);
    posix_spawn_file_actions_adddup2(&setup.actions, stderr_write.get(), 2);
    if (!spec_.cwd.empty()) {
      posix_spawn_file_actions_addchdir_np(&setup.actions, spec_.cwd.c_str());
    }
    sigset_t empty_mask, default_set;
    sigemptyset(&empty_mask);
    sigemptyset(&default_set);
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP}) {
      sigaddset(&default_set, sig);
    }
    posix_spawnattr_setflags(&setup.attr, POSIX_SPAWN_SETPGROUP |
                                              POSIX_SPAWN_SETSIGMASK |
                                              POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&setup.attr, 0);
    posix_spawnattr_setsigmask(&setup.attr, &empty_mask);
    posix_spawnattr_setsigdefault(&setup.attr, &default_set);

    std::vector<char*> argv;
    for (const std::string& arg : spec_.argv) {
      argv.push_back(const_cast<char*>(arg.c_str()));
    }
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (const std::string& entry : env_) {
      envp.push_back(const_cast<char*>(entry.c_str()));
    }
    envp.push_back(nullptr);
    int rc = posix_spawnp(&pid, argv[0], &setup.actions, &setup.attr,
                          argv.data(), envp.data());
    if (rc != 0) {
      std::string where =
          spec_.cwd.empty() ? "" : absl::StrCat(" in ", spec_.cwd);
      return ErrorOutcome(OutcomeReason::kToolFailed,
                          absl::StrCat("cannot start ", spec_.argv[0], where,
                                       ": ", strerror(rc)),
                          elapsed());
    }
  }
  stdin_read.Reset();
  stdout_write.Reset();
  stderr_write.Reset();
  SetNonBlocking(stdin_write.get());
  SetNonBlocking(stdout_read.get());
  SetNonBlocking(stderr_read.get());
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));

  std::string out;
  bool truncated = false;
  std::string err_tail;
  size_t input_offset = 0;
  if (input.empty()) stdin_write.Reset();

  enum class Killed { kNo, kTimeout, kCancelled };
  Killed killed = Killed::kNo;
  auto kill_group = [pid, &killed](Killed why) {
    if (killed != Killed::kNo) return;
    killed = why;
    // The main process is not reaped yet, so `pid` still names its group.
    kill(-pid, SIGKILL);
  };
  auto sink_out = [&](const char* data, size_t n) {
    size_t room = options_.max_stdout_bytes - out.size();
    if (n > room) {
      truncated = true;
      n = room;
    }
    out.append(data, n);
  };
  auto sink_err = [&](const char* data, size_t n) {
    err_tail.append(data, n);
    if (err_tail.size() > 2 * options_.stderr_tail_bytes) {
      err_tail.erase(0, err_tail.size() - options_.stderr_tail_bytes);
    }
  };
  auto exited = [pid]() {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    int rc = waitid(P_PID, static_cast<id_t>(pid), &info,
                    WEXITED | WNOHANG | WNOWAIT);
    return rc == 0 && info.si_pid == pid;
  };

  while (true) {
    if (call.cancelled()) kill_group(Killed::kCancelled);
    const SteadyClock::time_point now = SteadyClock::now();
    if (now >= deadline) kill_group(Killed::kTimeout);
    if (exited()) break;

    pollfd fds[5];
    nfds_t count = 0;
    auto add = [&fds, &count](int fd, short events) {
      fds[count].fd = fd;
      fds[count].events = events;
      fds[count].revents = 0;
      return static_cast<int>(count++);
    };
    int in_index = stdin_write.valid() ? add(stdin_write.get(), POLLOUT) : -1;
    int out_index = stdout_read.valid() ? add(stdout_read.get(), POLLIN) : -1;
    int err_index = stderr_read.valid() ? add(stderr_read.get(), POLLIN) : -1;
    add(call.wake.get(), POLLIN);
    if (pidfd.valid()) add(pidfd.get(), POLLIN);

    int timeout_ms = -1;
    if (killed == Killed::kNo) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - now).count() + 1;
      timeout_ms = static_cast<int>(std::min<int64_t>(left, 1 << 30));
    }
    if (!pidfd.valid()) {
      timeout_ms = timeout_ms < 0 ? kFallbackTickMs
                                  : std::min(timeout_ms, kFallbackTickMs);
    }
    int ready = poll(fds, count, timeout_ms);
    if (ready < 0 && errno != EINTR) {
      kill_group(Killed::kCancelled);
      continue;
    }
    if (ready <= 0) continue;

    if (in_index >= 0 && fds[in_index].revents != 0) {
      while (input_offset < input.size()) {
        ssize_t n = write(stdin_write.get(), input.data() + input_offset,
                          input.size() - input_offset);
        if (n > 0) {
          input_offset += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        // EPIPE: the tool closed its stdin; it does not want the rest.
        input_offset = input.size();
        if (errno == EPIPE) {
          // Consume the SIGPIPE left pending on this thread.
          sigset_t pipe_set;
          sigemptyset(&pipe_set);
          sigaddset(&pipe_set, SIGPIPE);
          timespec zero{0, 0};
          sigtimedwait(&pipe_set, nullptr, &zero);
        }
      }
      if (input_offset >= input.size()) stdin_write.Reset();
    }
    if (out_index >= 0 && fds[out_index].revents != 0 &&
        !DrainAvailable(stdout_read.get(), sink_out)) {
      stdout_read.Reset();
    }
    if (err_index >= 0 && fds[err_index].revents != 0 &&
        !DrainAvailable(stderr_read.get(), sink_err)) {
      stderr_read.Reset();
    }
    // The wake eventfd: reset its counter; the flag is checked above.
    uint64_t counter;
    ssize_t unused = read(call.wake.get(), &counter, sizeof(counter));
    (void)unused;
  }

  // The main process has exited (not yet reaped): end what is left of its
  // group, reap it, then collect what the dead processes wrote.
  kill(-pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  stdin_write.Reset();
  if (stdout_read.valid()) DrainAvailable(stdout_read.get(), sink_out);
  if (stderr_read.valid()) DrainAvailable(stderr_read.get(), sink_err);
  if (err_tail.size() > options_.stderr_tail_bytes) {
    err_tail.erase(0, err_tail.size() - options_.stderr_tail_bytes);
  }
  const absl::Duration duration = elapsed();

  std::string stderr_part;
  if (!err_tail.empty()) {
    stderr_part = absl::StrCat("\nstderr (last ", options_.stderr_tail_bytes,
                               " bytes at most):\n", err_tail);
  }
  if (killed == Killed::kCancelled) {
    return ErrorOutcome(OutcomeReason::kCancelled, "cancelled", duration);
  }
  if (killed == Killed::kTimeout) {
    return ErrorOutcome(
        OutcomeReason::kTimeout,
        absl::StrCat("timed out after ", absl::ToInt64Milliseconds(spec_.timeout),
                     " ms; the tool's process group was killed", stderr_part),
        duration);
  }
  if (WIFSIGNALED(status)) {
    return ErrorOutcome(
        OutcomeReason::kToolFailed,
        absl::StrCat("killed by signal ", SignalName(WTERMSIG(status)),
                     stderr_part),
        duration);
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code != 0) {
    return ErrorOutcome(OutcomeReason::kToolFailed,
                        absl::StrCat("exit code ", code, stderr_part),
                        duration);
  }
  if (truncated) {
    absl::StrAppend(&out, "\n[toolmesh: output truncated at ",
                    options_.max_stdout_bytes, " bytes]");
  }
  ToolOutcome outcome;
  outcome.content = std::move(out);
  outcome.duration = duration;
  return outcome;
}

}  // namespace toolmesh::worker
