// Process-backed tools (exec_executor.h).
#include "worker/exec_executor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
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

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace toolmesh::worker {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr int kFallbackTickMs = 10;
constexpr char kDefaultPath[] = "/usr/local/bin:/usr/bin:/bin";

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

// --- the child between fork and execve --------------------------------------

// What the child reports over the error pipe when it cannot exec.
struct ChildError {
  int32_t stage;  // ChildStage, or kLimitStage + index into ChildPlan::limits
  int32_t error;  // errno
};

enum ChildStage : int32_t {
  kStageSetup = 1,  // setpgid, dup2, the signal mask
  kStageChdir = 2,
  kStageExec = 3,
  kLimitStage = 100,
};

struct ChildLimit {
  int resource;
  rlimit value;
  const char* name;  // for messages, e.g. "cpu_seconds (RLIMIT_CPU)"
};

// Everything the child needs, prepared before the fork: the child may not
// allocate or take locks.
struct ChildPlan {
  int stdin_fd;
  int stdout_fd;
  int stderr_fd;
  int error_fd;
  const char* dir;
  const char* program;
  char* const* argv;
  char* const* envp;
  const ChildLimit* limits;
  size_t limit_count;
  sigset_t empty_mask;
};

[[noreturn]] void ChildFail(const ChildPlan& plan, int32_t stage) {
  ChildError report{stage, errno};
  ssize_t unused = write(plan.error_fd, &report, sizeof(report));
  (void)unused;
  _exit(127);
}

// Makes `from` the child's descriptor `to`, without CLOEXEC.
bool ChildDup(int from, int to) {
  if (from == to) return fcntl(to, F_SETFD, 0) == 0;
  return dup2(from, to) == to;
}

// Async-signal-safe only: runs in the child of a multi-threaded process.
[[noreturn]] void RunChild(const ChildPlan& plan) {
  if (setpgid(0, 0) != 0) ChildFail(plan, kStageSetup);
  if (!ChildDup(plan.stdin_fd, 0) || !ChildDup(plan.stdout_fd, 1) ||
      !ChildDup(plan.stderr_fd, 2)) {
    ChildFail(plan, kStageSetup);
  }
  // Whatever another thread opened without O_CLOEXEC stays out of the tool.
  // The error pipe is already CLOEXEC. Older kernels: nothing more to do.
  syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
  if (plan.dir[0] != '\0' && chdir(plan.dir) != 0) {
    ChildFail(plan, kStageChdir);
  }
  for (size_t i = 0; i < plan.limit_count; ++i) {
    if (setrlimit(static_cast<__rlimit_resource_t>(plan.limits[i].resource),
                  &plan.limits[i].value) != 0) {
      ChildFail(plan, kLimitStage + static_cast<int32_t>(i));
    }
  }
  // Ignored signals stay ignored across execve; the tool gets defaults.
  struct sigaction action;
  memset(&action, 0, sizeof(action));
  action.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &action, nullptr);  // EINVAL for glibc's own: fine
  }
  if (sigprocmask(SIG_SETMASK, &plan.empty_mask, nullptr) != 0) {
    ChildFail(plan, kStageSetup);
  }
  execve(plan.program, plan.argv, plan.envp);
  ChildFail(plan, kStageExec);
}

pid_t ForkProcess() {
  // _Fork runs no atfork handlers (gRPC's, with fork support on, would
  // wait for its threads) and is async-signal-safe itself.
  return _Fork();
}

// --- helpers of the parent ---------------------------------------------------

// The rlimits of `limits`, each capped at the worker's own hard limit (an
// unprivileged process cannot raise it).
std::vector<ChildLimit> PlanLimits(const ExecLimits& limits) {
  std::vector<ChildLimit> planned;
  auto add = [&planned](int resource, uint64_t soft, uint64_t hard,
                        const char* name) {
    rlimit current;
    if (getrlimit(static_cast<__rlimit_resource_t>(resource), &current) == 0 &&
        current.rlim_max != RLIM_INFINITY) {
      soft = std::min<uint64_t>(soft, current.rlim_max);
      hard = std::min<uint64_t>(hard, current.rlim_max);
    }
    planned.push_back(
        {resource, rlimit{static_cast<rlim_t>(soft), static_cast<rlim_t>(hard)},
         name});
  };
  if (limits.cpu_seconds != 0) {
    // SIGXCPU at the soft limit; SIGKILL one second later if it is caught.
    add(RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1,
        "cpu_seconds (RLIMIT_CPU)");
  }
  if (limits.memory_bytes != 0) {
    add(RLIMIT_AS, limits.memory_bytes, limits.memory_bytes,
        "memory_bytes (RLIMIT_AS)");
  }
  if (limits.open_files != 0) {
    add(RLIMIT_NOFILE, limits.open_files, limits.open_files,
        "open_files (RLIMIT_NOFILE)");
  }
  if (limits.processes != 0) {
    add(RLIMIT_NPROC, limits.processes, limits.processes,
        "processes (RLIMIT_NPROC)");
  }
  if (limits.file_size_bytes != 0) {
    add(RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes,
        "file_size_bytes (RLIMIT_FSIZE)");
  }
  return planned;
}

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         access(path.c_str(), X_OK) == 0;
}

// argv[0] as execve needs it: with '/' as is, else the first executable
// match in `path_list`; empty when there is none.
std::string ResolveProgram(const std::string& program,
                           const std::string& path_list) {
  if (program.find('/') != std::string::npos) return program;
  for (absl::string_view dir : absl::StrSplit(path_list, ':')) {
    // An empty PATH element means the working directory, which is the
    // call's own fresh directory: never a place to find programs in.
    if (dir.empty()) continue;
    std::string candidate = absl::StrCat(dir, "/", program);
    if (IsExecutableFile(candidate)) return candidate;
  }
  return "";
}

// The cause a limit gives to a failure, or "" when no configured limit
// explains it. `signal` is 0 for a normal exit.
std::string LimitCause(const ExecLimits& limits, int signal,
                       absl::Duration cpu_used, const std::string& err_tail) {
  if (signal == SIGXCPU && limits.cpu_seconds != 0) {
    return absl::StrCat("CPU time limit of ", limits.cpu_seconds,
                        " s exceeded (limits.cpu_seconds)");
  }
  if (signal == SIGKILL && limits.cpu_seconds != 0 &&
      cpu_used >= absl::Seconds(static_cast<int64_t>(limits.cpu_seconds))) {
    return absl::StrCat("CPU time limit of ", limits.cpu_seconds,
                        " s exceeded (limits.cpu_seconds; killed at the hard "
                        "limit)");
  }
  if (signal == SIGXFSZ && limits.file_size_bytes != 0) {
    return absl::StrCat("file size limit of ", limits.file_size_bytes,
                        " bytes exceeded (limits.file_size_bytes)");
  }
  auto mentions = [&err_tail](std::initializer_list<const char*> needles) {
    for (const char* needle : needles) {
      if (absl::StrContains(err_tail, needle)) return true;
    }
    return false;
  };
  std::vector<std::string> causes;
  if (limits.memory_bytes != 0 &&
      (signal == SIGKILL || signal == SIGSEGV || signal == SIGABRT ||
       mentions({"MemoryError", "Cannot allocate memory", "bad_alloc",
                 "out of memory", "Out of memory"}))) {
    causes.push_back(absl::StrCat("the memory limit of ", limits.memory_bytes,
                                  " bytes (limits.memory_bytes, RLIMIT_AS)"));
  }
  if (limits.open_files != 0 && mentions({"Too many open files"})) {
    causes.push_back(absl::StrCat("the open files limit of ", limits.open_files,
                                  " (limits.open_files, RLIMIT_NOFILE)"));
  }
  if (limits.processes != 0 &&
      mentions({"Resource temporarily unavailable", "fork: retry"})) {
    causes.push_back(absl::StrCat("the processes limit of ", limits.processes,
                                  " (limits.processes, RLIMIT_NPROC, counted "
                                  "per user)"));
  }
  if (limits.file_size_bytes != 0 && mentions({"File too large"})) {
    causes.push_back(absl::StrCat("the file size limit of ",
                                  limits.file_size_bytes,
                                  " bytes (limits.file_size_bytes)"));
  }
  if (causes.empty()) return "";
  return absl::StrCat("probably hit ", absl::StrJoin(causes, " or "));
}

// --- removing a call directory ----------------------------------------------

// Subdirectories deeper than this are moved up to the top directory and
// removed in a later pass, so neither the stack nor the fd table limit the
// depth of a tree a tool can leave behind.
constexpr int kMaxRemoveDepth = 32;
constexpr int kMaxRemovePasses = 1 << 16;

// Opens the directory `name` in `dir_fd` without following a link. A
// directory its owner made inaccessible is given mode 0700 first, through
// an O_PATH descriptor of that very directory (never a name lookup that a
// swapped-in link could redirect).
int OpenDirectoryNoFollow(int dir_fd, const char* name) {
  const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  int fd = openat(dir_fd, name, flags);
  if (fd >= 0 || errno != EACCES) return fd;
  UniqueFd path_fd(openat(dir_fd, name, O_PATH | flags));
  if (!path_fd.valid()) return -1;
  const std::string proc = absl::StrCat("/proc/self/fd/", path_fd.get());
  if (chmod(proc.c_str(), 0700) != 0) return -1;
  return open(proc.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

struct RemoveState {
  int root_fd = -1;
  uint64_t moved_count = 0;  // names for moved-up subtrees
  bool moved = false;        // something was moved up in this pass
  std::string failure;       // the first thing that could not be removed
};

void Fail(RemoveState& state, absl::string_view what, absl::string_view name) {
  if (state.failure.empty()) {
    state.failure = absl::StrCat(what, " ", name, ": ", strerror(errno));
  }
}

// Removes what is inside `dir_fd` (at `depth` below the root).
void ClearDirectory(RemoveState& state, int dir_fd, int depth) {
  // Entries the tool cannot write to cannot be unlinked by a non-root
  // worker; the directory is about to go anyway.
  fchmod(dir_fd, 0700);
  std::vector<std::pair<std::string, bool>> entries;  // name, is_dir
  {
    int listing_fd = dup(dir_fd);
    if (listing_fd < 0) return Fail(state, "cannot list", "a directory");
    DIR* dir = fdopendir(listing_fd);
    if (dir == nullptr) {
      close(listing_fd);
      return Fail(state, "cannot list", "a directory");
    }
    rewinddir(dir);
    while (dirent* entry = readdir(dir)) {
      const std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      bool is_dir = entry->d_type == DT_DIR;
      if (entry->d_type == DT_UNKNOWN) {
        struct stat st;
        is_dir = fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                 S_ISDIR(st.st_mode);
      }
      entries.emplace_back(name, is_dir);
    }
    closedir(dir);
  }
  for (const auto& [name, is_dir] : entries) {
    if (!is_dir) {
      if (unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
        Fail(state, "cannot remove", name);
      }
      continue;
    }
    if (depth + 1 >= kMaxRemoveDepth) {
      const std::string up =
          absl::StrCat(".toolmesh-deep-", state.moved_count++);
      if (renameat(dir_fd, name.c_str(), state.root_fd, up.c_str()) != 0) {
        Fail(state, "cannot move up", name);
      } else {
        state.moved = true;
      }
      continue;
    }
    UniqueFd sub(OpenDirectoryNoFollow(dir_fd, name.c_str()));
    if (!sub.valid()) {
      // A link or file swapped in since the listing is just unlinked.
      if ((errno == ENOTDIR || errno == ELOOP) &&
          unlinkat(dir_fd, name.c_str(), 0) == 0) {
        continue;
      }
      if (errno != ENOENT) Fail(state, "cannot open", name);
      continue;
    }
    ClearDirectory(state, sub.get(), depth + 1);
    sub.Reset();
    if (unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      Fail(state, "cannot remove", name);
    }
  }
}

}  // namespace

absl::Status RemoveDirectoryTree(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string parent =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string name =
      slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("not a removable directory path: ", path));
  }
  UniqueFd parent_fd(open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent_fd.valid()) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", parent, ": ", strerror(errno)));
  }
  UniqueFd root(OpenDirectoryNoFollow(parent_fd.get(), name.c_str()));
  if (!root.valid()) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    }
    return absl::InternalError(
        absl::StrCat("cannot open ", path, ": ", strerror(errno)));
  }
  RemoveState state;
  state.root_fd = root.get();
  for (int pass = 0; pass < kMaxRemovePasses; ++pass) {
    state.moved = false;
    ClearDirectory(state, root.get(), 0);
    if (!state.moved) break;
  }
  root.Reset();
  if (unlinkat(parent_fd.get(), name.c_str(), AT_REMOVEDIR) != 0) {
    Fail(state, "cannot remove", path);
  }
  if (!state.failure.empty()) {
    return absl::InternalError(
        absl::StrCat("removing ", path, ": ", state.failure));
  }
  return absl::OkStatus();
}

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
  // The environment: allowed variables the worker has, then the fixed ones.
  std::vector<std::pair<std::string, std::string>> vars;
  auto set = [&vars](const std::string& name, std::string value) {
    for (auto& [n, v] : vars) {
      if (n == name) {
        v = std::move(value);
        return;
      }
    }
    vars.emplace_back(name, std::move(value));
  };
  for (const std::string& name : spec_.env_allow) {
    const char* value = std::getenv(name.c_str());
    if (value != nullptr) set(name, value);
  }
  for (const auto& [name, value] : spec_.env) set(name, value);
  bool have_path = false;
  for (const auto& [name, value] : vars) {
    if (name == "PATH" && !value.empty()) {
      have_path = true;
      path_ = value;
    }
  }
  if (!have_path) {
    set("PATH", kDefaultPath);
    path_ = kDefaultPath;
  }
  for (const auto& [name, value] : vars) {
    env_.push_back(absl::StrCat(name, "=", value));
  }

  // Relative paths were written against the worker's working directory;
  // the tool runs in its own, so they are made absolute here.
  std::string worker_dir;
  if (char* cwd = getcwd(nullptr, 0)) {
    worker_dir = cwd;
    free(cwd);
  }
  argv_ = spec_.argv;
  for (size_t i = 0; i < argv_.size() && !worker_dir.empty() && spec_.cwd.empty();
       ++i) {
    std::string& arg = argv_[i];
    if (arg.empty() || arg[0] == '/' || arg.find('/') == std::string::npos ||
        absl::StrContains(arg, "{input.")) {
      continue;
    }
    std::string absolute = absl::StrCat(worker_dir, "/", arg);
    struct stat st;
    if (i == 0 || stat(absolute.c_str(), &st) == 0) arg = std::move(absolute);
  }

  work_dir_root_ = spec_.work_dir_root;
  if (work_dir_root_.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    work_dir_root_ = tmp != nullptr && tmp[0] == '/' ? tmp : "/tmp";
  }
}

ExecExecutor::~ExecExecutor() = default;

void ExecExecutor::Run(const ToolCall& call, DoneCallback done) {
  auto state = std::make_shared<Call>(call.id);
  calls_.Start(
      state,
      [this, state, input = call.input]() {
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

ToolOutcome ExecExecutor::RunProcess(Call& call, const common::Json& input) {
  absl::StatusOr<std::vector<std::string>> argv = ExpandArgv(argv_, input);
  if (!argv.ok()) {
    return ErrorOutcome(OutcomeReason::kInvalidInput,
                        std::string(argv.status().message()));
  }
  if (!spec_.cwd.empty()) {
    return RunInDirectory(call, *argv, common::DumpJson(input), spec_.cwd);
  }
  std::string dir_template = absl::StrCat(work_dir_root_, "/toolmesh-call-XXXXXX");
  if (mkdtemp(dir_template.data()) == nullptr) {
    return ErrorOutcome(OutcomeReason::kToolFailed,
                        absl::StrCat("cannot create the call's working "
                                     "directory under ",
                                     work_dir_root_, ": ", strerror(errno)));
  }
  // Runs after the process group is dead and reaped, on every path.
  absl::Cleanup remove = [&dir_template] {
    absl::Status removed = RemoveDirectoryTree(dir_template);
    (void)removed;  // nothing to report it to; the outcome is already made
  };
  return RunInDirectory(call, *argv, common::DumpJson(input), dir_template);
}

ToolOutcome ExecExecutor::RunInDirectory(Call& call,
                                         const std::vector<std::string>& args,
                                         const std::string& input,
                                         const std::string& dir) {
  const SteadyClock::time_point start = SteadyClock::now();
  const SteadyClock::time_point deadline =
      start + absl::ToChronoMilliseconds(spec_.timeout);
  auto elapsed = [&start]() {
    return absl::FromChrono(SteadyClock::now() - start);
  };

  const std::string program = ResolveProgram(args[0], path_);
  if (program.empty()) {
    return ErrorOutcome(OutcomeReason::kToolFailed,
                        absl::StrCat("cannot start ", args[0],
                                     ": not found in PATH (", path_, ")"),
                        elapsed());
  }

  UniqueFd stdin_read, stdin_write, stdout_read, stdout_write, stderr_read,
      stderr_write, error_read, error_write;
  if (!call.wake.valid() || !MakePipe(&stdin_read, &stdin_write) ||
      !MakePipe(&stdout_read, &stdout_write) ||
      !MakePipe(&stderr_read, &stderr_write) ||
      !MakePipe(&error_read, &error_write)) {
    return ErrorOutcome(OutcomeReason::kToolFailed,
                        absl::StrCat("cannot set up the tool's pipes: ",
                                     strerror(errno)),
                        elapsed());
  }

  const std::vector<ChildLimit> limits = PlanLimits(spec_.limits);
  std::vector<char*> argv;
  for (const std::string& arg : args) {
    argv.push_back(const_cast<char*>(arg.c_str()));
  }
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& entry : env_) {
    envp.push_back(const_cast<char*>(entry.c_str()));
  }
  envp.push_back(nullptr);
  ChildPlan plan{};
  plan.stdin_fd = stdin_read.get();
  plan.stdout_fd = stdout_write.get();
  plan.stderr_fd = stderr_write.get();
  plan.error_fd = error_write.get();
  plan.dir = dir.c_str();
  plan.program = program.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.limits = limits.data();
  plan.limit_count = limits.size();
  sigemptyset(&plan.empty_mask);

  const pid_t pid = ForkProcess();
  if (pid == 0) RunChild(plan);
  if (pid < 0) {
    return ErrorOutcome(OutcomeReason::kToolFailed,
                        absl::StrCat("cannot start ", args[0], ": fork: ",
                                     strerror(errno)),
                        elapsed());
  }
  // Also from here, so that kill(-pid) below cannot precede the child's own
  // setpgid; EACCES once it has exec'd is harmless.
  setpgid(pid, pid);
  stdin_read.Reset();
  stdout_write.Reset();
  stderr_write.Reset();
  error_write.Reset();

  // EOF on the error pipe: execve succeeded (the pipe was CLOEXEC).
  ChildError report{0, 0};
  ssize_t got = 0;
  do {
    got = read(error_read.get(), &report, sizeof(report));
  } while (got < 0 && errno == EINTR);
  error_read.Reset();
  if (got == static_cast<ssize_t>(sizeof(report))) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const std::string reason = strerror(report.error);
    std::string message;
    if (report.stage >= kLimitStage &&
        static_cast<size_t>(report.stage - kLimitStage) < limits.size()) {
      message = absl::StrCat("cannot apply limit ",
                             limits[report.stage - kLimitStage].name, " to ",
                             args[0], ": ", reason);
    } else if (report.stage == kStageChdir) {
      message = absl::StrCat("cannot start ", args[0], " in ", dir, ": ",
                             reason);
    } else {
      message = absl::StrCat("cannot start ", args[0], ": ", reason);
    }
    return ErrorOutcome(OutcomeReason::kToolFailed, message, elapsed());
  }

  SetNonBlocking(stdin_write.get());
  SetNonBlocking(stdout_read.get());
  SetNonBlocking(stderr_read.get());
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));

  std::string out;
  size_t out_total = 0;
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
    out_total += n;
    size_t room = options_.max_stdout_bytes - out.size();
    out.append(data, std::min(n, room));
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
  rusage usage;
  memset(&usage, 0, sizeof(usage));
  while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  stdin_write.Reset();
  if (stdout_read.valid()) DrainAvailable(stdout_read.get(), sink_out);
  if (stderr_read.valid()) DrainAvailable(stderr_read.get(), sink_err);
  if (err_tail.size() > options_.stderr_tail_bytes) {
    err_tail.erase(0, err_tail.size() - options_.stderr_tail_bytes);
  }
  const absl::Duration duration = elapsed();
  const absl::Duration cpu_used =
      absl::DurationFromTimeval(usage.ru_utime) +
      absl::DurationFromTimeval(usage.ru_stime);

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
    const int sig = WTERMSIG(status);
    const std::string cause = LimitCause(spec_.limits, sig, cpu_used, err_tail);
    return ErrorOutcome(
        OutcomeReason::kToolFailed,
        absl::StrCat(cause, cause.empty() ? "" : ": ", "killed by signal ",
                     SignalName(sig), stderr_part),
        duration);
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code != 0) {
    const std::string cause = LimitCause(spec_.limits, 0, cpu_used, err_tail);
    return ErrorOutcome(OutcomeReason::kToolFailed,
                        absl::StrCat("exit code ", code,
                                     cause.empty() ? "" : " (", cause,
                                     cause.empty() ? "" : ")", stderr_part),
                        duration);
  }
  TruncateToLimit(&out, out_total, options_.max_stdout_bytes);
  ToolOutcome outcome;
  outcome.content = std::move(out);
  outcome.duration = duration;
  return outcome;
}

}  // namespace toolmesh::worker
