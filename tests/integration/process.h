// A child process for integration tests: started with posix_spawn in its own
// process group, stdout read line by line on a pipe, stderr appended to a
// file, signalled and reaped with bounded waits.
//
// Every wait here has a deadline: a test that waits for a line the child
// never prints fails with the child's output instead of hanging. The
// destructor kills the whole process group (SIGKILL) if the child is still
// running and always reaps it, so a failed assertion never leaks a process.
//
// Thread-safety: WaitForLine(), StdoutLines() and StderrTail() may be called
// from any thread. Signal(), Wait(), Stop() and the destructor are meant for
// the owning (test) thread: they must not be called concurrently with each
// other. One internal thread per process drains stdout.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace toolmesh::integration {

class Process {
 public:
  struct Options {
    // Absolute path of the executable. Required.
    std::string path;
    // Arguments after argv[0] (argv[0] is `path`).
    std::vector<std::string> args;
    // Variables set (or overridden) on top of this process's environment.
    std::vector<std::pair<std::string, std::string>> env;
    // Where the child's stderr goes (created or appended). Empty: /dev/null.
    std::string stderr_path;
    // A short name for messages ("orchestrator", "worker w1"). Defaults to
    // the executable's file name.
    std::string name;
  };

  // Starts the child with stdin from /dev/null, stdout on a pipe read by a
  // background thread, stderr to `options.stderr_path`, in a new process
  // group whose id is its pid, with an empty signal mask and default
  // dispositions for SIGTERM/SIGINT/SIGPIPE/SIGHUP.
  // Errors: kNotFound when `path` is not an executable file (for instance a
  // binary that has not been built yet), kInternal when spawning fails.
  static absl::StatusOr<std::unique_ptr<Process>> Start(Options options);

  // Kills the process group with SIGKILL if the child has not been reaped,
  // reaps it, and stops the stdout reader.
  ~Process();

  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

  // Blocks until a complete stdout line starts with `prefix` and returns it
  // (without the newline). Lines seen before the call count too, so it can
  // be called after the line was printed.
  // Errors: kDeadlineExceeded after `timeout`; kFailedPrecondition when
  // stdout reached end of file (the child exited or closed it) without such
  // a line. Both messages quote the child's recent stdout and stderr.
  absl::StatusOr<std::string> WaitForLine(std::string_view prefix,
                                          absl::Duration timeout);

  // Every complete stdout line so far, in order (a final line without a
  // newline is included once stdout has reached end of file).
  std::vector<std::string> StdoutLines() const;

  // Blocks until stdout reaches end of file or `timeout` passes; returns
  // whether it did. Use after Wait() to be sure every line was read.
  bool WaitForStdoutEof(absl::Duration timeout);

  // The last `max_bytes` of the stderr file ("" when there is none).
  std::string StderrTail(std::size_t max_bytes = 4096) const;

  // The last stdout lines and the stderr tail, labelled with name(), for
  // failure messages.
  std::string Describe() const ABSL_LOCKS_EXCLUDED(mu_);

  // Sends `signal` to the child's whole process group.
  // Errors: kFailedPrecondition once the child has been reaped.
  absl::Status Signal(int signal);

  // Blocks until the child exits (reaping it) or `timeout` passes. Returns
  // its raw wait status (use WIFEXITED/WEXITSTATUS). Calling it again after
  // the child was reaped returns the same status at once.
  // Errors: kDeadlineExceeded when it is still running after `timeout`.
  absl::StatusOr<int> Wait(absl::Duration timeout);

  // SIGTERM, then up to `grace` for the child to exit, then SIGKILL and a
  // bounded wait. Returns the raw wait status, or an error if even SIGKILL
  // did not end it within 10 s.
  absl::StatusOr<int> Stop(absl::Duration grace);

  // True once the child has been reaped (by Wait or Stop).
  bool reaped() const { return exit_status_.has_value(); }

 private:
  Process() = default;

  void ReadStdout();
  // Waits for the child with waitpid, no longer than `timeout`; sets
  // exit_status_ when it reaps it.
  bool WaitUntilExited(absl::Duration timeout);

  // Constant after Start().
  pid_t pid_ = -1;
  std::string name_;
  std::string stderr_path_;
  int stdout_fd_ = -1;
  int wake_fd_ = -1;  // eventfd that stops the reader thread
  std::thread reader_;

  // Owned by the test thread (see the file comment).
  std::optional<int> exit_status_;

  mutable absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
  std::string partial_ ABSL_GUARDED_BY(mu_);
  bool eof_ ABSL_GUARDED_BY(mu_) = false;
};

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it
// when the object is destroyed, unless TOOLMESH_KEEP_TEST_DIRS is set.
class TempDir {
 public:
  // Errors: kInternal when mkdtemp fails.
  static absl::StatusOr<std::unique_ptr<TempDir>> Create(
      std::string_view prefix);
  ~TempDir();

  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Writes `contents` to `path`, replacing the file.
// Errors: kInternal naming the path.
absl::Status WriteFile(const std::string& path, std::string_view contents);

// Reads the whole file at `path`. Errors: kNotFound / kInternal naming it.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace toolmesh::integration
