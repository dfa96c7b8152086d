// Runs `exec` tools: a program started directly from argv (never through a
// shell), the tool input as JSON on its stdin, its stdout as the result.
//
// Per call:
//   - the process starts in a new process group (posix_spawn with
//     POSIX_SPAWN_SETPGROUP), with an empty signal mask, default handlers
//     for SIGPIPE/SIGINT/SIGTERM/SIGQUIT/SIGHUP, and a minimal environment:
//     PATH (the worker's, or /usr/local/bin:/usr/bin:/bin), HOME and LANG
//     when the worker has them; nothing else of the worker's environment
//     (its tokens in particular) reaches the tool;
//   - stdin receives the compact input JSON and is then closed;
//   - stdout is captured up to ExecOptions::max_stdout_bytes; beyond that
//     it is read and discarded, and the result ends with the line
//     "[toolmesh: output truncated at N bytes]";
//   - the last ExecOptions::stderr_tail_bytes of stderr are kept;
//   - exit status 0: the result is stdout (is_error false). Non-zero exit:
//     is_error, reason kToolFailed, "exit code N" and the stderr tail.
//     Killed by a signal: is_error, "killed by signal SIGxxx (n)" and the
//     stderr tail. A program that cannot be started: is_error naming it;
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
// so each `done` has run when it returns.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/ids.h"
#include "worker/executor.h"
#include "worker/thread_per_call_executor.h"
#include "worker/tools_config.h"

namespace toolmesh::worker {

struct ExecOptions {
  size_t max_stdout_bytes = size_t{1} << 20;  // 1 MiB
  size_t stderr_tail_bytes = 2048;
};

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

  ToolOutcome RunProcess(Call& call, const std::string& input);

  // Constant after construction.
  const ExecSpec spec_;
  const ExecOptions options_;
  std::vector<std::string> env_;  // "NAME=value" entries for the child

  // Last, so its destructor joins the call threads before the members above
  // go away.
  CallThreads calls_;
};

}  // namespace toolmesh::worker
