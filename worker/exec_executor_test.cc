#include "worker/exec_executor.h"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
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
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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
  const std::string marker =
      "\n[... truncated: 2097152 bytes over the 1048576-byte limit]";
  EXPECT_EQ(text.size(), size_t{1} << 20);  // marker included
  EXPECT_THAT(text, EndsWith(marker));
  EXPECT_EQ(text.find_first_not_of('a'), (size_t{1} << 20) - marker.size());
}

TEST_F(ExecExecutorTest, SmallerLimitsComeFromOptions) {
  ExecOptions options;
  options.max_stdout_bytes = 60;
  options.stderr_tail_bytes = 8;
  ExecExecutor executor(Python("print('0123456789' * 10)"), options);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  // 101 bytes of stdout; 60 with the 49-byte marker leave 11 of them.
  EXPECT_EQ(Text(outcomes_.WaitOne()),
            "01234567890\n[... truncated: 41 bytes over the 60-byte limit]");
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

TEST_F(ExecExecutorTest, EnvAllowPassesOnlyListedVariablesAndEnvAddsFixedOnes) {
  setenv("TOOLMESH_EXEC_TEST_ALLOWED", "yes", 1);
  setenv("TOOLMESH_EXEC_TEST_SECRET", "hunter2", 1);
  ExecSpec spec;
  spec.argv = {"env"};
  spec.env_allow = {"TOOLMESH_EXEC_TEST_ALLOWED", "TOOLMESH_EXEC_TEST_UNSET"};
  spec.env = {{"MODE", "fixed"}, {"TOOLMESH_EXEC_TEST_ALLOWED", "overridden"}};
  ExecExecutor executor(spec);
  unsetenv("TOOLMESH_EXEC_TEST_ALLOWED");
  unsetenv("TOOLMESH_EXEC_TEST_SECRET");
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  ASSERT_FALSE(outcome.is_error) << Text(outcome);
  std::vector<std::string> lines = absl::StrSplit(Text(outcome), '\n',
                                                  absl::SkipEmpty());
  // PATH is not allowed here, so the tool gets the safe default.
  EXPECT_THAT(lines, ::testing::UnorderedElementsAre(
                         "TOOLMESH_EXEC_TEST_ALLOWED=overridden", "MODE=fixed",
                         "PATH=/usr/local/bin:/usr/bin:/bin"));
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

TEST_F(ExecExecutorTest, ProgramNotInPathIsAToolError) {
  ExecSpec spec;
  spec.argv = {"toolmesh-no-such-program"};
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_THAT(Text(outcome),
              HasSubstr("cannot start toolmesh-no-such-program: not found in "
                        "PATH"));
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

// --- argv templates: the input reaches argv only through references ------

TEST_F(ExecExecutorTest, ShellSyntaxInInputNeverReachesAShell) {
  const std::string marker = TempFile("injected");
  ExecSpec spec = Python("import json, sys; print(json.dumps(sys.argv[1:]))");
  spec.argv.push_back("{input.a}");
  spec.argv.push_back("--b={input.b}");
  ExecExecutor executor(spec);
  Json input = Json::object();
  input["a"] = "x; touch " + marker;
  input["b"] = "$(touch " + marker + ")`touch " + marker + "`";
  executor.Run(MakeCall("toolu_1", input), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  ASSERT_FALSE(outcome.is_error) << Text(outcome);
  absl::StatusOr<Json> printed = common::ParseJson(Text(outcome));
  ASSERT_TRUE(printed.ok()) << Text(outcome);
  EXPECT_EQ(*printed, Json::array({input["a"].get<std::string>(),
                                   "--b=" + input["b"].get<std::string>()}));
  EXPECT_NE(access(marker.c_str(), F_OK), 0) << "a shell ran the input";
}

TEST_F(ExecExecutorTest, ReferencesTakeStringsVerbatimAndOtherValuesAsJson) {
  ExecSpec spec = Python(
      "import json, sys\n"
      "print(json.dumps({'argv': sys.argv[1:], 'stdin': json.load(sys.stdin)}))");
  spec.argv.insert(spec.argv.end(),
                   {"{input.city}", "--n={input.n}", "{input.opts}",
                    "{input.tricky}", "{literal}", "{input.city}-{input.n}"});
  ExecExecutor executor(spec);
  Json input = Json::parse(
      R"({"city":"Zürich","n":3,"opts":{"a":[1,true]},"tricky":"{input.city}"})");
  executor.Run(MakeCall("toolu_1", input), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  ASSERT_FALSE(outcome.is_error) << Text(outcome);
  absl::StatusOr<Json> printed = common::ParseJson(Text(outcome));
  ASSERT_TRUE(printed.ok()) << Text(outcome);
  EXPECT_EQ((*printed)["argv"],
            Json::parse(R"(["Zürich","--n=3","{\"a\":[1,true]}",
                            "{input.city}","{literal}","Zürich-3"])"));
  // The whole input still arrives on stdin.
  EXPECT_EQ((*printed)["stdin"], input);
}

TEST_F(ExecExecutorTest, MissingReferenceFieldIsAnErrorNamingIt) {
  const std::string marker = TempFile("ran");
  ExecSpec spec;
  spec.argv = {"/bin/sh", "-c", "touch " + marker, "{input.city}"};
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1", Json::parse(R"({"town":"Oslo"})")),
               outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_EQ(outcome.reason, OutcomeReason::kInvalidInput);
  EXPECT_EQ(Text(outcome), "input.city is missing; the tool's argv needs it");
  EXPECT_NE(access(marker.c_str(), F_OK), 0) << "the tool must not run";
}

// --- the per-call working directory -----------------------------------------

// A fresh directory under the test's temp dir, removed by the fixture.
class ExecWorkDirTest : public ExecExecutorTest {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "/exec_workdir_test.XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    char* real = realpath(templ.c_str(), nullptr);
    ASSERT_NE(real, nullptr);
    root_ = real;
    free(real);
  }
  void TearDown() override { (void)RemoveDirectoryTree(root_); }

  // The names in `dir`, without . and ..
  static std::vector<std::string> List(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return names;
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    closedir(d);
    return names;
  }

  std::string root_;
};

// Writes files, a subdirectory and links pointing out of the directory
// (argv[1] is an outside directory), then prints its working directory.
constexpr char kLitterer[] =
    "import os, sys\n"
    "outside = sys.argv[1]\n"
    "open('file.txt', 'w').write('x')\n"
    "os.makedirs('sub/deeper')\n"
    "open('sub/deeper/f', 'w').write('y')\n"
    "os.symlink(outside, 'link_to_outside')\n"
    "os.symlink(outside, 'sub/deeper/link')\n"
    "os.symlink(os.path.join(outside, 'keep.txt'), 'file_link')\n"
    "print(os.getcwd())\n";

TEST_F(ExecWorkDirTest, EachCallRunsInAFreshDirectoryRemovedAfterwards) {
  const std::string outside = root_ + "/outside";
  ASSERT_EQ(mkdir(outside.c_str(), 0700), 0);
  { std::ofstream(outside + "/keep.txt") << "precious"; }
  const std::string calls = root_ + "/calls";
  ASSERT_EQ(mkdir(calls.c_str(), 0700), 0);

  ExecSpec spec = Python(kLitterer);
  spec.argv.push_back(outside);
  spec.work_dir_root = calls;
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  executor.Run(MakeCall("toolu_2"), outcomes_.Callback());
  std::vector<ToolOutcome> all = outcomes_.WaitFor(2);
  ASSERT_EQ(all.size(), 2u);
  std::vector<std::string> dirs;
  for (const ToolOutcome& outcome : all) {
    ASSERT_FALSE(outcome.is_error) << Text(outcome);
    dirs.push_back(std::string(absl::StripAsciiWhitespace(Text(outcome))));
    EXPECT_THAT(dirs.back(), ::testing::StartsWith(calls + "/toolmesh-call-"));
  }
  EXPECT_NE(dirs[0], dirs[1]);
  for (const std::string& dir : dirs) {
    EXPECT_NE(access(dir.c_str(), F_OK), 0) << dir << " was left behind";
  }
  EXPECT_TRUE(List(calls).empty());
  // Nothing behind the links was touched.
  EXPECT_THAT(List(outside), ::testing::ElementsAre("keep.txt"));
  std::ifstream kept(outside + "/keep.txt");
  std::string text;
  kept >> text;
  EXPECT_EQ(text, "precious");
}

TEST_F(ExecWorkDirTest, DirectoryIsRemovedAfterFailureTimeoutAndCancel) {
  const std::string calls = root_ + "/calls";
  ASSERT_EQ(mkdir(calls.c_str(), 0700), 0);
  const std::string script =
      "import os, sys, time\n"
      "os.makedirs('a/b'); open('a/b/c', 'w').write('z')\n"
      "sys.stdout.write(os.getcwd()); sys.stdout.flush()\n"
      "if sys.argv[1] == 'fail': sys.exit(4)\n"
      "time.sleep(60)\n";
  for (const std::string mode : {"fail", "timeout", "cancel"}) {
    SCOPED_TRACE(mode);
    Outcomes outcomes;
    ExecSpec spec = Python(script, absl::Milliseconds(
                                       mode == "timeout" ? 1500 : 60000));
    spec.argv.push_back(mode);
    spec.work_dir_root = calls;
    ExecExecutor executor(spec);
    executor.Run(MakeCall("toolu_1"), outcomes.Callback());
    if (mode == "cancel") {
      // Cancel once the tool has made its files.
      ASSERT_TRUE(Eventually([&] {
        for (const std::string& name : List(calls)) {
          if (access((calls + "/" + name + "/a/b/c").c_str(), F_OK) == 0) {
            return true;
          }
        }
        return false;
      }));
      executor.Cancel(common::ToolUseId("toolu_1"));
    }
    ToolOutcome outcome = outcomes.WaitOne();
    EXPECT_TRUE(outcome.is_error);
    EXPECT_TRUE(List(calls).empty()) << "left: " << List(calls).size();
  }
}

TEST_F(ExecWorkDirTest, RemoveDirectoryTreeHandlesDeepTreesLinksAndLockedDirs) {
  const std::string outside = root_ + "/outside";
  ASSERT_EQ(mkdir(outside.c_str(), 0700), 0);
  { std::ofstream(outside + "/keep.txt") << "precious"; }
  const std::string tree = root_ + "/tree";
  ASSERT_EQ(mkdir(tree.c_str(), 0700), 0);
  // 300 levels: deeper than the remover's own depth bound.
  std::string deep = tree;
  for (int i = 0; i < 300; ++i) {
    deep += "/d";
    ASSERT_EQ(mkdir(deep.c_str(), 0700), 0) << i;
  }
  { std::ofstream(deep + "/leaf") << "x"; }
  ASSERT_EQ(symlink(outside.c_str(), (deep + "/up").c_str()), 0);
  ASSERT_EQ(symlink(outside.c_str(), (tree + "/link").c_str()), 0);
  const std::string locked = tree + "/locked";
  ASSERT_EQ(mkdir(locked.c_str(), 0700), 0);
  { std::ofstream(locked + "/f") << "x"; }
  ASSERT_EQ(chmod(locked.c_str(), 0), 0);

  EXPECT_TRUE(RemoveDirectoryTree(tree).ok());
  EXPECT_NE(access(tree.c_str(), F_OK), 0);
  EXPECT_THAT(List(outside), ::testing::ElementsAre("keep.txt"));
  EXPECT_EQ(RemoveDirectoryTree(tree).code(), absl::StatusCode::kNotFound);
}

TEST_F(ExecWorkDirTest, RemoveDirectoryTreeRefusesALinkAndLeavesItsTarget) {
  const std::string outside = root_ + "/outside";
  ASSERT_EQ(mkdir(outside.c_str(), 0700), 0);
  { std::ofstream(outside + "/keep.txt") << "precious"; }
  const std::string link = root_ + "/link";
  ASSERT_EQ(symlink(outside.c_str(), link.c_str()), 0);
  EXPECT_FALSE(RemoveDirectoryTree(link).ok());
  EXPECT_THAT(List(outside), ::testing::ElementsAre("keep.txt"));
}

TEST_F(ExecWorkDirTest, RelativeArgvPathsAreResolvedAgainstTheWorkersDirectory) {
  ASSERT_EQ(mkdir((root_ + "/tools").c_str(), 0700), 0);
  {
    std::ofstream script(root_ + "/tools/hello.sh");
    script << "echo \"hello from $0 in $(pwd)\"\n";
  }
  char* before = getcwd(nullptr, 0);
  ASSERT_NE(before, nullptr);
  ASSERT_EQ(chdir(root_.c_str()), 0);
  ExecSpec spec;
  // The second path names no file here, so it stays as written.
  spec.argv = {"/bin/sh", "tools/hello.sh", "no/such/file"};
  spec.work_dir_root = root_;
  ExecExecutor executor(spec);
  EXPECT_EQ(chdir(before), 0);
  free(before);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  ASSERT_FALSE(outcome.is_error) << Text(outcome);
  EXPECT_THAT(Text(outcome),
              ::testing::StartsWith("hello from " + root_ +
                                    "/tools/hello.sh in " + root_ +
                                    "/toolmesh-call-"));
}

TEST_F(ExecWorkDirTest, MissingWorkDirRootIsAToolError) {
  ExecSpec spec = Python("print('never')");
  spec.work_dir_root = root_ + "/does-not-exist";
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_THAT(Text(outcome),
              HasSubstr("cannot create the call's working directory under " +
                        root_ + "/does-not-exist"));
}

// --- rlimits -----------------------------------------------------------------

// The value columns of /proc/self/limits for `label` ("Max open files").
std::string LimitLine(const std::string& limits, const std::string& label) {
  for (absl::string_view line : absl::StrSplit(limits, '\n')) {
    if (absl::StartsWith(line, label)) {
      std::vector<absl::string_view> words =
          absl::StrSplit(line.substr(label.size()), ' ', absl::SkipEmpty());
      std::string joined;
      for (size_t i = 0; i < words.size() && i < 2; ++i) {
        if (i > 0) joined += " ";
        joined += std::string(words[i]);
      }
      return joined;
    }
  }
  return "";
}

TEST_F(ExecExecutorTest, LimitsAreSetInTheToolProcess) {
  ExecSpec spec;
  spec.argv = {"cat", "/proc/self/limits"};
  spec.limits.cpu_seconds = 7;
  spec.limits.memory_bytes = 512 << 20;
  spec.limits.open_files = 48;
  spec.limits.processes = 40;
  spec.limits.file_size_bytes = 1 << 20;
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  ASSERT_FALSE(outcome.is_error) << Text(outcome);
  const std::string text = Text(outcome);
  EXPECT_EQ(LimitLine(text, "Max cpu time"), "7 8");
  EXPECT_EQ(LimitLine(text, "Max address space"),
            absl::StrCat(512 << 20, " ", 512 << 20));
  EXPECT_EQ(LimitLine(text, "Max open files"), "48 48");
  EXPECT_EQ(LimitLine(text, "Max processes"), "40 40");
  EXPECT_EQ(LimitLine(text, "Max file size"),
            absl::StrCat(1 << 20, " ", 1 << 20));
}

TEST_F(ExecExecutorTest, CpuTimeLimitIsNamed) {
  ExecSpec spec = Python("while True: pass\n");
  spec.limits.cpu_seconds = 1;
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_EQ(outcome.reason, OutcomeReason::kToolFailed);
  EXPECT_THAT(Text(outcome),
              HasSubstr("CPU time limit of 1 s exceeded (limits.cpu_seconds)"));
  EXPECT_THAT(Text(outcome), HasSubstr("killed by signal SIGXCPU"));
}

TEST_F(ExecExecutorTest, FileSizeLimitIsNamed) {
  // Python ignores SIGXFSZ by default; a plain program would die of it.
  ExecSpec spec = Python(
      "import signal\n"
      "signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
      "with open('big', 'wb') as f: f.write(b'x' * (1 << 20))\n");
  spec.limits.file_size_bytes = 65536;
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_THAT(Text(outcome),
              HasSubstr("file size limit of 65536 bytes exceeded "
                        "(limits.file_size_bytes): killed by signal SIGXFSZ"));
}

TEST_F(ExecExecutorTest, MemoryLimitIsNamed) {
  ExecSpec spec = Python("x = bytearray(1 << 30)\n");
  spec.limits.memory_bytes = 256 << 20;
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_THAT(Text(outcome), HasSubstr("exit code 1 (probably hit the memory "
                                       "limit of 268435456 bytes"));
  EXPECT_THAT(Text(outcome), HasSubstr("MemoryError"));
}

TEST_F(ExecExecutorTest, OpenFilesLimitIsNamed) {
  ExecSpec spec = Python(
      "import os\n"
      "fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(64)]\n");
  spec.limits.open_files = 16;
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_THAT(Text(outcome),
              HasSubstr("probably hit the open files limit of 16 "
                        "(limits.open_files, RLIMIT_NOFILE)"));
}

TEST_F(ExecExecutorTest, FailureWithoutAMatchingLimitNamesNone) {
  ExecSpec spec = Python("import sys; sys.exit(2)");
  spec.limits.open_files = 64;
  spec.limits.memory_bytes = 1 << 30;
  ExecExecutor executor(spec);
  executor.Run(MakeCall("toolu_1"), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_EQ(Text(outcome), "exit code 2");
}

}  // namespace
}  // namespace toolmesh::worker
