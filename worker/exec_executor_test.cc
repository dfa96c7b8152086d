#include "worker/exec_executor.h"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace toolmesh::worker {
namespace {

using common::Json;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kWait = absl::Seconds(20);

// Collects outcomes delivered on executor threads.
class Outcomes {
 public:
  DoneCallback Callback() {
    return [this](ToolOutcome outcome) {
      absl::MutexLock lock(&mu_);
      outcomes_.push_back(std::move(outcome));
    };
  }
  // Waits until `n` outcomes arrived (bounded); returns them.
  std::vector<ToolOutcome> WaitFor(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return outcomes_.size() >= n;
    };
    mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
    return outcomes_;
  }
  ToolOutcome WaitOne() {
    std::vector<ToolOutcome> all = WaitFor(1);
    if (all.empty()) {
      ADD_FAILURE() << "no outcome within " << kWait;
      return ErrorOutcome(OutcomeReason::kToolFailed, "no outcome");
    }
    return all[0];
  }
  size_t Count() {
    absl::MutexLock lock(&mu_);
    return outcomes_.size();
  }

 private:
  absl::Mutex mu_;
  std::vector<ToolOutcome> outcomes_ ABSL_GUARDED_BY(mu_);
};

// The system interpreter when present: version-manager shims on PATH can
// take a second to start, which would make these tests slow.
std::string PythonPath() {
  return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

ExecSpec Python(const std::string& script,
                absl::Duration timeout = absl::Seconds(30)) {
  ExecSpec spec;
  spec.argv = {PythonPath(), "-c", script};
  spec.timeout = timeout;
  return spec;
}

ToolCall MakeCall(const std::string& id, Json input = Json::object()) {
  ToolCall call;
  call.id = common::ToolUseId(id);
  call.name = "t";
  call.input = std::move(input);
  return call;
}

std::string Text(const ToolOutcome& outcome) {
  return outcome.content.is_string() ? outcome.content.get<std::string>()
                                     : common::DumpJson(outcome.content);
}

// True once `pid` no longer runs: it does not exist, or it is a zombie
// waiting for its new parent (init) to reap it.
bool IsGone(pid_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() &&
         (line[paren + 2] == 'Z' || line[paren + 2] == 'X');
}

// Polls (bounded) until `pred` holds.
template <typename Pred>
bool Eventually(Pred pred, absl::Duration limit = kWait) {
  auto end = std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(limit);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

// Reads whitespace-separated pids from `path` once it holds `count` of them.
std::vector<pid_t> ReadPids(const std::string& path, size_t count) {
  std::vector<pid_t> pids;
  Eventually([&]() {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    pids.clear();
    for (absl::string_view piece :
         absl::StrSplit(text.str(), ' ', absl::SkipWhitespace())) {
      int pid = 0;
      if (absl::SimpleAtoi(piece, &pid)) pids.push_back(pid);
    }
    return pids.size() >= count && text.str().back() == '\n';
  });
  return pids;
}

int OpenFdCount() {
  int count = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (readdir(dir) != nullptr) ++count;
  closedir(dir);
  return count;
}

class ExecExecutorTest : public ::testing::Test {
 protected:
  std::string TempFile(const std::string& name) {
    std::string path = ::testing::TempDir() + "/exec_executor_test_" +
                       std::to_string(getpid()) + "_" + name;
    std::remove(path.c_str());
    return path;
  }
  Outcomes outcomes_;
};

// A script that starts a grandchild `sleep 60` in its own process group,
// writes "<own pid> <grandchild pid>\n" to the file argv[1], then sleeps.
constexpr char kSleeperWithChild[] =
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen(['sleep', '60'])\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write('%d %d\\n' % (os.getpid(), child.pid))\n"
    "time.sleep(60)\n";

TEST_F(ExecExecutorTest, ScriptReadsInputFromStdinAndItsStdoutIsTheResult) {
  ExecExecutor executor(Python(
      "import json, sys\n"
      "d = json.load(sys.stdin)\n"
      "print(json.dumps({'sum': d['a'] + d['b'], 'city': d['city']}))\n"));
  executor.Run(MakeCall("toolu_1", Json::parse(R"({"a":2,"b":3,"city":"Zürich"})")),
               outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_FALSE(outcome.is_error) << Text(outcome);
  EXPECT_EQ(outcome.reason, OutcomeReason::kOk);
  EXPECT_EQ(Text(outcome), "{\"sum\": 5, \"city\": \"Z\\u00fcrich\"}\n");
  EXPECT_GT(outcome.duration, absl::ZeroDuration());
}

TEST_F(ExecExecutorTest, NonZeroExitGivesExitCodeAndStderrTail) {
  ExecExecutor executor(Python(
      "import sys\n"
      "sys.stdout.write('partial output')\n"
      "sys.stderr.write('x' * 5000 + 'LAST LINE: city not found\\n')\n"
      "sys.exit(3)\n"));
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_EQ(outcome.reason, OutcomeReason::kToolFailed);
  std::string text = Text(outcome);
  EXPECT_THAT(text, HasSubstr("exit code 3"));
  EXPECT_THAT(text, EndsWith("LAST LINE: city not found\n"));
  EXPECT_LT(text.size(), 2048u + 100u);  // only the tail of stderr
  EXPECT_THAT(text, Not(HasSubstr("partial output")));
}

TEST_F(ExecExecutorTest, DeathBySignalIsNamed) {
  ExecExecutor executor(Python(
      "import os, signal, sys\n"
      "sys.stderr.write('about to die\\n'); sys.stderr.flush()\n"
      "os.kill(os.getpid(), signal.SIGTERM)\n"));
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_EQ(outcome.reason, OutcomeReason::kToolFailed);
  EXPECT_THAT(Text(outcome), HasSubstr("killed by signal SIGTERM (15)"));
  EXPECT_THAT(Text(outcome), HasSubstr("about to die"));
}

TEST_F(ExecExecutorTest, TimeoutKillsTheWholeProcessGroup) {
  std::string pid_file = TempFile("timeout_pids");
  ExecSpec spec = Python(kSleeperWithChild, absl::Milliseconds(1500));
  spec.argv.push_back(pid_file);
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  std::vector<pid_t> pids = ReadPids(pid_file, 2);
  ASSERT_EQ(pids.size(), 2u) << "the script did not report its pids";
  EXPECT_FALSE(IsGone(pids[0]));
  EXPECT_FALSE(IsGone(pids[1]));

  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_EQ(outcome.reason, OutcomeReason::kTimeout);
  EXPECT_THAT(Text(outcome), HasSubstr("timed out after 1500 ms"));
  EXPECT_GE(outcome.duration, absl::Milliseconds(1500));
  // The main process was reaped by the executor; the grandchild was killed
  // with the group (init reaps it).
  EXPECT_TRUE(IsGone(pids[0]));
  EXPECT_TRUE(Eventually([&] { return IsGone(pids[1]); }));
  std::remove(pid_file.c_str());
}

TEST_F(ExecExecutorTest, CancelKillsTheProcessGroupAtOnce) {
  std::string pid_file = TempFile("cancel_pids");
  ExecSpec spec = Python(kSleeperWithChild, absl::Seconds(60));
  spec.argv.push_back(pid_file);
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  std::vector<pid_t> pids = ReadPids(pid_file, 2);
  ASSERT_EQ(pids.size(), 2u) << "the script did not report its pids";
  EXPECT_EQ(outcomes_.Count(), 0u);

  EXPECT_TRUE(executor.Cancel(common::ToolUseId("toolu_1")));
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_EQ(outcome.reason, OutcomeReason::kCancelled);
  EXPECT_LT(outcome.duration, absl::Seconds(30));
  EXPECT_TRUE(IsGone(pids[0]));
  EXPECT_TRUE(Eventually([&] { return IsGone(pids[1]); }));
  EXPECT_FALSE(executor.Cancel(common::ToolUseId("toolu_1")));
  std::remove(pid_file.c_str());
}

TEST_F(ExecExecutorTest, BackgroundChildrenAreKilledWhenTheToolExits) {
  ExecExecutor executor(Python(
      "import subprocess\n"
      "child = subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL,\n"
      "                         stderr=subprocess.DEVNULL)\n"
      "print(child.pid)\n"));
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  ASSERT_FALSE(outcome.is_error) << Text(outcome);
  int pid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(Text(outcome)), &pid));
  EXPECT_TRUE(Eventually([&] { return IsGone(pid); }));
}

TEST_F(ExecExecutorTest, LargeStdoutIsTruncatedWithAMarker) {
  ExecExecutor executor(Python(
      "import sys\n"
      "sys.stdout.write('a' * (3 * 1024 * 1024))\n"));
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  ASSERT_FALSE(outcome.is_error) << Text(outcome).substr(0, 200);
  std::string text = Text(outcome);
  const std::string marker = "\n[toolmesh: output truncated at 1048576 bytes]";
  EXPECT_EQ(text.size(), (size_t{1} << 20) + marker.size());
  EXPECT_THAT(text, EndsWith(marker));
  EXPECT_EQ(text.find_first_not_of('a'), size_t{1} << 20);
}

TEST_F(ExecExecutorTest, SmallerLimitsComeFromOptions) {
  ExecOptions options;
  options.max_stdout_bytes = 10;
  options.stderr_tail_bytes = 8;
  ExecExecutor executor(Python("print('0123456789abcdef')"), options);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  EXPECT_EQ(Text(outcomes_.WaitOne()),
            "0123456789\n[toolmesh: output truncated at 10 bytes]");
}

TEST_F(ExecExecutorTest, ArgvIsPassedVerbatimWithoutAShell) {
  ExecSpec spec = Python("import json, sys; print(json.dumps(sys.argv[1:]))");
  const std::vector<std::string> args = {
      "two words", "it's \"quoted\"", "$HOME", "*", "; echo injected", "`id`", ""};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  ASSERT_FALSE(outcome.is_error) << Text(outcome);
  absl::StatusOr<Json> printed = common::ParseJson(Text(outcome));
  ASSERT_TRUE(printed.ok()) << Text(outcome);
  EXPECT_EQ(*printed, Json(args));
}

TEST_F(ExecExecutorTest, EnvironmentIsMinimal) {
  setenv("TOOLMESH_EXEC_TEST_SECRET", "hunter2", 1);
  ExecSpec spec;
  spec.argv = {"env"};  // prints exactly the environment it was given
  ExecExecutor executor(spec);
  unsetenv("TOOLMESH_EXEC_TEST_SECRET");
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  ASSERT_FALSE(outcome.is_error) << Text(outcome);
  std::vector<std::string> names;
  for (absl::string_view line :
       absl::StrSplit(Text(outcome), '\n', absl::SkipEmpty())) {
    names.push_back(std::string(line.substr(0, line.find('='))));
  }
  EXPECT_THAT(names, ::testing::Contains("PATH"));
  for (const std::string& name : names) {
    EXPECT_THAT(name, ::testing::AnyOf("PATH", "HOME", "LANG"));
  }
}

TEST_F(ExecExecutorTest, WorkingDirectoryComesFromTheSpec) {
  ExecSpec spec = Python("import os; print(os.getcwd())");
  char* real = realpath(::testing::TempDir().c_str(), nullptr);
  ASSERT_NE(real, nullptr);
  spec.cwd = real;
  free(real);
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  EXPECT_EQ(Text(outcomes_.WaitOne()), spec.cwd + "\n");
}

TEST_F(ExecExecutorTest, MissingProgramIsAToolError) {
  ExecSpec spec;
  spec.argv = {"/nonexistent/toolmesh-no-such-program"};
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_EQ(outcome.reason, OutcomeReason::kToolFailed);
  EXPECT_THAT(Text(outcome),
              HasSubstr("cannot start /nonexistent/toolmesh-no-such-program"));
}

TEST_F(ExecExecutorTest, ToolThatIgnoresLargeInputStillSucceeds) {
  // The tool exits without reading 4 MiB of input: writing the rest of stdin
  // fails with EPIPE, which must neither kill the worker nor fail the call.
  ExecExecutor executor(Python("print('ok')"));
  Json input = Json::object();
  input["blob"] = std::string(4 << 20, 'z');
  executor.Run(MakeCall("toolu_1", input), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_FALSE(outcome.is_error) << Text(outcome);
  EXPECT_EQ(Text(outcome), "ok\n");
}

TEST_F(ExecExecutorTest, LargeInputReachesTheTool) {
  ExecExecutor executor(Python(
      "import json, sys; print(len(json.load(sys.stdin)['blob']))"));
  Json input = Json::object();
  input["blob"] = std::string(3 << 20, 'z');
  executor.Run(MakeCall("toolu_1", input), outcomes_.Callback());
  EXPECT_EQ(Text(outcomes_.WaitOne()), std::to_string(3 << 20) + "\n");
}

TEST_F(ExecExecutorTest, ConcurrentCallsEachGetTheirOwnResult) {
  ExecExecutor executor(Python(
      "import json, sys; print(json.load(sys.stdin)['n'] * 10)"));
  for (int i = 0; i < 4; ++i) {
    Json input = Json::object();
    input["n"] = i;
    executor.Run(MakeCall("toolu_" + std::to_string(i), input),
                 outcomes_.Callback());
  }
  std::vector<ToolOutcome> all = outcomes_.WaitFor(4);
  ASSERT_EQ(all.size(), 4u);
  std::vector<std::string> texts;
  for (const ToolOutcome& outcome : all) texts.push_back(Text(outcome));
  EXPECT_THAT(texts, ::testing::UnorderedElementsAre("0\n", "10\n", "20\n", "30\n"));
}

TEST_F(ExecExecutorTest, DuplicateRunningIdIsRejected) {
  std::string pid_file = TempFile("dup_pids");
  ExecSpec spec = Python(kSleeperWithChild, absl::Seconds(60));
  spec.argv.push_back(pid_file);
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome first = outcomes_.WaitOne();
  EXPECT_EQ(first.reason, OutcomeReason::kToolFailed);
  EXPECT_THAT(Text(first), HasSubstr("already running"));
  EXPECT_TRUE(executor.Cancel(common::ToolUseId("toolu_1")));
  std::vector<ToolOutcome> all = outcomes_.WaitFor(2);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].reason, OutcomeReason::kCancelled);
  std::remove(pid_file.c_str());
}

TEST_F(ExecExecutorTest, DestructionCancelsRunningCallsAndDeliversTheirOutcome) {
  std::string pid_file = TempFile("destroy_pids");
  std::vector<pid_t> pids;
  {
    ExecSpec spec = Python(kSleeperWithChild, absl::Seconds(60));
    spec.argv.push_back(pid_file);
    ExecExecutor executor(spec);
    executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
    pids = ReadPids(pid_file, 2);
  }
  ASSERT_EQ(outcomes_.Count(), 1u);
  EXPECT_EQ(outcomes_.WaitOne().reason, OutcomeReason::kCancelled);
  ASSERT_EQ(pids.size(), 2u);
  EXPECT_TRUE(IsGone(pids[0]));
  EXPECT_TRUE(Eventually([&] { return IsGone(pids[1]); }));
  std::remove(pid_file.c_str());
}

TEST_F(ExecExecutorTest, NoFileDescriptorsLeak) {
  const int before = OpenFdCount();
  {
    ExecExecutor executor(Python("import sys; print(sys.stdin.read())"));
    for (int i = 0; i < 5; ++i) {
      executor.Run(MakeCall("toolu_" + std::to_string(i)), outcomes_.Callback());
    }
    ASSERT_EQ(outcomes_.WaitFor(5).size(), 5u);
  }
  EXPECT_EQ(OpenFdCount(), before);
}

}  // namespace
}  // namespace toolmesh::worker
