// Runs `exec` tools: a program started directly from argv (never through a
// shell), the tool input as JSON on its stdin, its stdout as the result.
//
// Per call:
//   - argv is the tool's configured argv with its `{input.FIELD}`
//     references filled in (ExpandArgv in tools_config.h); nothing else of
//     the input reaches argv, and no shell ever parses it. A missing field
//     is an is_error result (reason kInvalidInput) naming it, and nothing
//     runs. argv[0] without '/' is looked up in the tool's PATH; a relative
//     argv[0] with '/', and any other literal relative argument naming an
//     existing file, are made absolute against the worker's working
//     directory when the executor is built (the tool itself runs elsewhere);
//   - a fresh working directory is made per call (mkdtemp, mode 0700, under
//     ExecSpec::work_dir_root, else $TMPDIR, else /tmp) and removed with
//     everything in it after the call, whatever its outcome. The removal
//     never follows symbolic links (openat/unlinkat with O_NOFOLLOW, names
//     relative to directory fds), so a link the tool left cannot make the
//     worker delete anything outside. With ExecSpec::cwd the call runs in
//     that fixed directory instead and nothing is made or removed;
//   - the environment holds only ExecSpec::env_allow variables that the
//     worker has, then ExecSpec::env (which wins); PATH is always set (the
//     allowed or fixed one, else /usr/local/bin:/usr/bin:/bin);
//   - the process is started with fork (glibc's _Fork, which runs no atfork
//     handlers) and execve: posix_spawn cannot set rlimits. Between the two,
//     the child calls only async-signal-safe functions on data prepared
//     before the fork: setpgid (a new process group), dup2 of the pipes,
//     close_range(CLOEXEC) of every other fd, chdir, setrlimit for each of
//     ExecSpec::limits, default dispositions for every signal and an empty
//     signal mask, execve. A failure there is sent back over a CLOEXEC pipe
//     and reported as "cannot start ..." / "cannot apply limit ...";
//   - stdin receives the compact input JSON and is then closed;
//   - stdout is captured up to ExecOptions::max_stdout_bytes, marker
//     included; beyond that it is read, counted and discarded, and the
//     result ends with "[... truncated: N bytes over the M-byte limit]";
//   - the last ExecOptions::stderr_tail_bytes of stderr are kept;
//   - exit status 0: the result is stdout (is_error false). Non-zero exit:
//     is_error, reason kToolFailed, "exit code N" and the stderr tail.
//     Killed by a signal: is_error, "killed by signal SIGxxx (n)" and the
//     stderr tail. A limit that was hit is named: SIGXCPU (or SIGKILL at the
//     hard CPU limit) gives "CPU time limit of N s exceeded", SIGXFSZ gives
//     "file size limit of N bytes exceeded"; limits that make system calls
//     fail instead of killing (memory, open files, processes) are named as
//     the probable cause when the tool died of SIGKILL/SIGSEGV/SIGABRT or
//     its stderr shows the matching error (MemoryError, "Cannot allocate
//     memory", "Too many open files", "Resource temporarily unavailable").
//     A program that cannot be started: is_error naming it;
//   - the timeout (ExecSpec::timeout) and Cancel() SIGKILL the whole
//     process group (reason kTimeout / kCancelled);
//   - when the main process exits, whatever is left of its process group
//     (background children) is SIGKILLed too, so no tool leaves processes
//     behind. Every child is reaped.
//
// Threads: one thread per running call (simple, and calls are bounded by
// the worker's slots). It polls the pipes, an eventfd that Cancel() and
// shutdown signal, and a pidfd for the exit (falling back to a 10 ms waitid
// check on kernels without pidfd_open). `done` runs on that thread. All fds
// are O_CLOEXEC, so a process spawned for one call never holds another
// call's pipes. SIGPIPE is blocked on the call thread; a closed stdin is
// just the end of the input.
//
// Thread-safety: all methods may be called concurrently from any thread.
// The destructor cancels every running call and waits for their threads,
// so each `done` has run (and each call directory is gone) when it returns.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/ids.h"
#include "common/json.h"
#include "worker/executor.h"
#include "worker/thread_per_call_executor.h"
#include "worker/tools_config.h"

namespace toolmesh::worker {

struct ExecOptions {
  // The most of stdout a result holds, truncation marker included.
  size_t max_stdout_bytes = size_t{1} << 20;  // 1 MiB
  size_t stderr_tail_bytes = 2048;
};

// Removes the directory `path` and everything below it without following
// symbolic links (a link is removed, never its target) and without being
// limited by the tree's depth. Directories the tool made unreadable or
// unwritable are made accessible first. Returns kNotFound when `path` does
// not exist, kInternal naming what could not be removed. Blocks on I/O.
absl::Status RemoveDirectoryTree(const std::string& path);

class ExecExecutor final : public Executor {
 public:
  explicit ExecExecutor(ExecSpec spec, ExecOptions options = {});
  ~ExecExecutor() override;

  ExecExecutor(const ExecExecutor&) = delete;
  ExecExecutor& operator=(const ExecExecutor&) = delete;

  void Run(const ToolCall& call, DoneCallback done) override;
  bool Cancel(const common::ToolUseId& id) override;

 private:
  class Call;

  ToolOutcome RunProcess(Call& call, const common::Json& input);
  // Starts, watches and reaps the process of one call; `dir` is its
  // working directory.
  ToolOutcome RunInDirectory(Call& call, const std::vector<std::string>& argv,
                             const std::string& input, const std::string& dir);

  // Constant after construction.
  const ExecSpec spec_;
  const ExecOptions options_;
  std::vector<std::string> argv_;  // spec_.argv with relative paths resolved
  std::vector<std::string> env_;   // "NAME=value" entries for the child
  std::string path_;               // the child's PATH, for argv[0] lookup
  std::string work_dir_root_;      // where per-call directories are made

  // Last, so its destructor joins the call threads before the members above
  // go away.
  CallThreads calls_;
};

}  // namespace toolmesh::worker
