// Server reflection of a real toolmesh-orchestrator, checked the way grpcurl
// uses it (issue 7): list the services, describe toolmesh.v1.TaskService
// from the FileDescriptorProtos that reflection sends, and call its methods
// with requests written as JSON and built as DynamicMessages of a pool made
// only from those files, sent as raw bytes over grpc::GenericStub. Also the
// standard health service, bearer tokens as call metadata, and the
// toolmesh-grpc-reflect tool as a process.
//
// The orchestrator runs against toolmesh-fakeapi on loopback (port 0), one
// cluster for the whole suite (reflection is read-only; the tasks submitted
// here are independent of each other). Every wait is bounded.
#include <sys/wait.h>

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster.h"
#include "tests/integration/process.h"
#include "tests/integration/reflection_client.h"
#include "tests/testing/status_matchers.h"
#include "toolmesh/v1/task_service.grpc.pb.h"
#include "toolmesh/v1/worker_service.grpc.pb.h"

namespace toolmesh::integration {
namespace {

namespace pb = ::google::protobuf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsSupersetOf;
using ::testing::UnorderedElementsAreArray;
using ::toolmesh::common::Json;
using ::toolmesh::common::ParseJson;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

constexpr absl::Duration kCallTimeout = absl::Seconds(10);

constexpr char kTaskService[] = "toolmesh.v1.TaskService";
constexpr char kWorkerService[] = "toolmesh.v1.WorkerService";
constexpr char kHealthService[] = "grpc.health.v1.Health";
constexpr char kReflectionService[] =
    "grpc.reflection.v1alpha.ServerReflection";


// The file names in `files`.
std::vector<std::string> Names(const std::vector<pb::FileDescriptorProto>& files) {
  std::vector<std::string> names;
  for (const auto& file : files) names.push_back(file.name());
  return names;
}

// Parses JSON text the test received; a failure is reported, null returned.
Json ParseOrFail(const std::string& text) {
  absl::StatusOr<Json> json = ParseJson(text);
  if (!json.ok()) {
    ADD_FAILURE() << json.status() << "\n" << text;
    return Json();
  }
  return *std::move(json);
}

class ReflectionClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<Cluster>> cluster =
        Cluster::Start(ClusterOptions());
    ASSERT_THAT(cluster.status(), IsOk());
    cluster_ = cluster->release();
  }

  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(cluster_, nullptr) << "the cluster did not start";
    channel_ = grpc::CreateChannel(cluster_->orchestrator_address(),
                                   grpc::InsecureChannelCredentials());
    client_ = std::make_unique<ReflectionClient>(channel_, CallMetadata(),
                                                 kCallTimeout);
  }

  // Loads the files that declare `symbol` into schema_ through reflection.
  void Load(const std::string& symbol) {
    auto files = client_->FileContainingSymbol(symbol);
    ASSERT_THAT(files.status(), IsOk());
    ASSERT_THAT(schema_.AddFiles(*files), IsOk());
  }

  // Calls `method` through reflection only, like
  // `grpcurl -d JSON ADDRESS METHOD`.
  absl::StatusOr<std::string> Call(const std::string& method,
                                   const std::string& json) {
    absl::StatusOr<const pb::MethodDescriptor*> descriptor =
        schema_.FindMethod(method);
    if (!descriptor.ok()) return descriptor.status();
    return CallUnaryJson(channel_, schema_, **descriptor, json, {},
                         kCallTimeout);
  }

  static Cluster* cluster_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<ReflectionClient> client_;
  ReflectedSchema schema_;
};

Cluster* ReflectionClientTest::cluster_ = nullptr;

TEST_F(ReflectionClientTest, ListServicesNamesEveryServiceOfTheOrchestrator) {
  auto services = client_->ListServices();
  ASSERT_THAT(services.status(), IsOk());
  EXPECT_THAT(*services, IsSupersetOf({kTaskService, kWorkerService,
                                       kHealthService, kReflectionService}));
  EXPECT_EQ(std::set<std::string>(services->begin(), services->end()).size(),
            services->size())
      << "a service is listed twice";
}

TEST_F(ReflectionClientTest, TaskServiceIsDescribedByTheContractAndItsImports) {
  auto files = client_->FileContainingSymbol(kTaskService);
  ASSERT_THAT(files.status(), IsOk());
  EXPECT_THAT(Names(*files),
              IsSupersetOf({"toolmesh/v1/task_service.proto",
                            "toolmesh/v1/task.proto",
                            "google/protobuf/timestamp.proto"}));
  // The server describes exactly the contract this test was compiled with.
  for (const pb::FileDescriptor* expected :
       {v1::SubmitTaskRequest::descriptor()->file(),
        v1::Task::descriptor()->file()}) {
    pb::FileDescriptorProto expected_proto;
    expected->CopyTo(&expected_proto);
    auto it = std::find_if(files->begin(), files->end(), [&](const auto& f) {
      return f.name() == expected->name();
    });
    ASSERT_NE(it, files->end()) << expected->name();
    EXPECT_TRUE(pb::util::MessageDifferencer::Equals(*it, expected_proto))
        << expected->name() << " differs from the contract";
  }
}

TEST_F(ReflectionClientTest, ReflectedPoolResolvesEveryTaskServiceMethod) {
  Load(kTaskService);
  auto service = schema_.FindService(kTaskService);
  ASSERT_THAT(service.status(), IsOk());
  // The contract as compiled into this test, for comparison only.
  const pb::ServiceDescriptor& generated =
      *v1::SubmitTaskRequest::descriptor()->file()->FindServiceByName(
          "TaskService");
  // Built from the reflected files, not taken from the generated pool.
  EXPECT_NE(*service, &generated);
  EXPECT_EQ((*service)->file()->pool(), &schema_.pool());
  ASSERT_EQ((*service)->method_count(), generated.method_count());
  for (int i = 0; i < generated.method_count(); ++i) {
    const pb::MethodDescriptor& want = *generated.method(i);
    auto method = schema_.FindMethod(
        absl::StrCat(kTaskService, "/", want.name()));
    ASSERT_THAT(method.status(), IsOk()) << want.name();
    EXPECT_EQ((*method)->input_type()->full_name(),
              want.input_type()->full_name());
    EXPECT_EQ((*method)->output_type()->full_name(),
              want.output_type()->full_name());
    EXPECT_EQ((*method)->server_streaming(), want.server_streaming());
    EXPECT_EQ((*method)->client_streaming(), want.client_streaming());
    // Every field of the request type resolves, nested types included.
    EXPECT_EQ((*method)->input_type()->field_count(),
              want.input_type()->field_count());
  }
  auto watch = schema_.FindMethod("toolmesh.v1.TaskService.WatchTask");
  ASSERT_THAT(watch.status(), IsOk());
  EXPECT_TRUE((*watch)->server_streaming());
  const pb::Descriptor* spec =
      schema_.pool().FindMessageTypeByName("toolmesh.v1.TaskSpec");
  ASSERT_NE(spec, nullptr);
  EXPECT_NE(spec->FindFieldByName("prompt"), nullptr);
}

TEST_F(ReflectionClientTest, MethodSymbolsAndWorkerServiceAreDescribed) {
  auto files = client_->FileContainingSymbol("toolmesh.v1.TaskService.GetTask");
  ASSERT_THAT(files.status(), IsOk());
  EXPECT_THAT(Names(*files), Contains("toolmesh/v1/task_service.proto"));

  Load(kWorkerService);
  auto connect = schema_.FindMethod("toolmesh.v1.WorkerService/Connect");
  ASSERT_THAT(connect.status(), IsOk());
  EXPECT_TRUE((*connect)->client_streaming());
  EXPECT_TRUE((*connect)->server_streaming());
}

TEST_F(ReflectionClientTest, UnknownSymbolIsNotFound) {
  EXPECT_THAT(client_->FileContainingSymbol("toolmesh.v1.NoSuchService"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ReflectionClientTest, SubmitGetAndListTasksWithJsonRequests) {
  Load(kTaskService);
  auto submitted = Call("toolmesh.v1.TaskService/SubmitTask", R"({
      "spec": {"model": "claude-sonnet-4-5", "maxTokens": 256,
               "prompt": "Say hello."}})");
  ASSERT_THAT(submitted.status(), IsOk());
  Json submit = ParseOrFail(*submitted);
  ASSERT_TRUE(submit.is_object()) << *submitted;
  ASSERT_TRUE(submit.contains("taskId")) << *submitted;
  const std::string task_id = submit["taskId"].get<std::string>();
  EXPECT_FALSE(task_id.empty());
  EXPECT_EQ(submit["task"]["spec"]["prompt"], "Say hello.") << *submitted;

  auto got = Call("toolmesh.v1.TaskService/GetTask",
                  Json({{"taskId", task_id}}).dump());
  ASSERT_THAT(got.status(), IsOk());
  Json task = ParseOrFail(*got);
  ASSERT_TRUE(task.is_object()) << *got;
  EXPECT_EQ(task["task"]["taskId"], task_id) << *got;
  EXPECT_EQ(task["task"]["spec"]["model"], "claude-sonnet-4-5") << *got;
  // An enum printed by name, and a Timestamp in RFC 3339: well-known types
  // and enums resolve from the reflected pool.
  EXPECT_TRUE(task["task"]["state"].is_string()) << *got;
  ASSERT_TRUE(task["task"]["createdAt"].is_string()) << *got;
  EXPECT_THAT(task["task"]["createdAt"].get<std::string>(), HasSubstr("T"));

  auto listed = Call("toolmesh.v1.TaskService/ListTasks", R"({"pageSize": 50})");
  ASSERT_THAT(listed.status(), IsOk());
  Json list = ParseOrFail(*listed);
  std::vector<std::string> ids;
  if (list.is_object() && list.contains("tasks")) {
    for (const Json& t : list["tasks"]) ids.push_back(t.value("taskId", ""));
  }
  EXPECT_THAT(ids, Contains(task_id)) << *listed;
}

TEST_F(ReflectionClientTest, UnknownTaskGivesTheServersNotFound) {
  Load(kTaskService);
  EXPECT_THAT(Call("toolmesh.v1.TaskService/GetTask",
                   R"({"taskId": "task_does_not_exist"})"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ReflectionClientTest, RequestJsonThatDoesNotFitTheTypeIsRejected) {
  Load(kTaskService);
  EXPECT_THAT(Call("toolmesh.v1.TaskService/ListTasks", R"({"noSuchField": 1})"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Call("toolmesh.v1.TaskService/ListTasks", "{not json"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Call("toolmesh.v1.TaskService/ListTasks", R"({"pageSize": "x"})"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Call("toolmesh.v1.TaskService/NoSuchMethod", "{}"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Call("TaskService", "{}"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ReflectionClientTest, StreamingMethodIsNotCalledAsUnary) {
  Load(kTaskService);
  EXPECT_THAT(Call("toolmesh.v1.TaskService/WatchTask", "{}"),
              StatusIs(absl::StatusCode::kUnimplemented));
}

TEST_F(ReflectionClientTest, HealthServiceIsDescribed) {
  Load(kHealthService);
  auto service = schema_.FindService(kHealthService);
  ASSERT_THAT(service.status(), IsOk());
  const pb::ServiceDescriptor* health = *service;
  const pb::MethodDescriptor* check = health->FindMethodByName("Check");
  ASSERT_NE(check, nullptr);
  EXPECT_EQ(check->input_type()->full_name(),
            "grpc.health.v1.HealthCheckRequest");
  EXPECT_EQ(check->output_type()->full_name(),
            "grpc.health.v1.HealthCheckResponse");
  const pb::MethodDescriptor* watch = health->FindMethodByName("Watch");
  ASSERT_NE(watch, nullptr);
  EXPECT_TRUE(watch->server_streaming());
}

TEST_F(ReflectionClientTest, HealthCheckAnswersServing) {
  // Only what reflection serves, as `grpcurl host:port
  // grpc.health.v1.Health/Check` does.
  Load(kHealthService);
  auto answer = Call("grpc.health.v1.Health/Check", "{}");
  ASSERT_THAT(answer.status(), IsOk());
  EXPECT_EQ(ParseOrFail(*answer), Json({{"status", "SERVING"}})) << *answer;
  // The orchestrator sets the overall status ("") only, which is what the
  // Kubernetes gRPC probe asks for; a named service has no status of its
  // own, and the standard answer for that is NOT_FOUND.
  EXPECT_THAT(Call("grpc.health.v1.Health/Check",
                   Json({{"service", kTaskService}}).dump()),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ReflectionClientTest, DifferentFileUnderAKnownNameIsRejected) {
  Load(kTaskService);
  auto files = client_->FileContainingSymbol(kTaskService);
  ASSERT_THAT(files.status(), IsOk());
  // The same files again are accepted (a second describe of one server).
  EXPECT_THAT(schema_.AddFiles(*files), IsOk());
  pb::FileDescriptorProto changed = files->front();
  changed.set_package("other.package");
  EXPECT_THAT(schema_.AddFiles({changed}),
              StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST_F(ReflectionClientTest, NothingListeningIsUnavailable) {
  // Port 1 on loopback: nothing of ours listens there.
  ReflectionClient nowhere(
      grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()),
      {}, absl::Seconds(2));
  EXPECT_THAT(nowhere.ListServices(),
              StatusIs(absl::StatusCode::kUnavailable));
}

// --- the toolmesh-grpc-reflect tool ----------------------------------------

// Runs the tool with `args`; returns its exit code and stdout lines.
struct ToolRun {
  int exit_code = -1;
  std::vector<std::string> lines;
  std::string stderr_tail;
  std::string Text() const {
    std::string text;
    for (const std::string& line : lines) absl::StrAppend(&text, line, "\n");
    return text;
  }
};

ToolRun RunTool(const std::vector<std::string>& args) {
  ToolRun run;
  absl::StatusOr<std::unique_ptr<TempDir>> dir = TempDir::Create("reflect-");
  if (!dir.ok()) {
    ADD_FAILURE() << dir.status();
    return run;
  }
  Process::Options options;
  options.path = BinaryPath("toolmesh-grpc-reflect");
  options.args = args;
  options.stderr_path = (*dir)->path() + "/stderr";
  absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(options);
  if (!process.ok()) {
    ADD_FAILURE() << process.status();
    return run;
  }
  absl::StatusOr<int> status = (*process)->Wait(absl::Seconds(30));
  if (!status.ok()) {
    ADD_FAILURE() << status.status() << "\n" << (*process)->Describe();
    return run;
  }
  (*process)->WaitForStdoutEof(absl::Seconds(5));
  run.exit_code = WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  run.lines = (*process)->StdoutLines();
  run.stderr_tail = (*process)->StderrTail();
  return run;
}

TEST_F(ReflectionClientTest, ToolListsDescribesAndCallsLikeGrpcurl) {
  const std::string& address = cluster_->orchestrator_address();
  ToolRun list = RunTool({address, "list"});
  ASSERT_EQ(list.exit_code, 0) << list.stderr_tail;
  EXPECT_THAT(list.lines, IsSupersetOf({kTaskService, kWorkerService,
                                        kHealthService, kReflectionService}));

  ToolRun describe = RunTool({address, "describe", kTaskService});
  ASSERT_EQ(describe.exit_code, 0) << describe.stderr_tail;
  EXPECT_THAT(describe.Text(),
              HasSubstr("rpc WatchTask(.toolmesh.v1.WatchTaskRequest) "
                        "returns (stream .toolmesh.v1.TaskEvent)"));

  ToolRun message = RunTool({address, "describe", "toolmesh.v1.TaskSpec"});
  ASSERT_EQ(message.exit_code, 0) << message.stderr_tail;
  EXPECT_THAT(message.Text(), HasSubstr("message TaskSpec"));

  ToolRun call = RunTool({address, "call", "toolmesh.v1.TaskService/ListTasks",
                          R"({"pageSize": 1})"});
  ASSERT_EQ(call.exit_code, 0) << call.stderr_tail;
  EXPECT_TRUE(ParseOrFail(call.Text()).is_object()) << call.Text();
}

TEST_F(ReflectionClientTest, ToolFailsWithOneLineAndItsExitCodes) {
  const std::string& address = cluster_->orchestrator_address();
  ToolRun unknown = RunTool({address, "describe", "toolmesh.v1.Nope"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.stderr_tail, HasSubstr("NOT_FOUND"));
  ToolRun bad_json = RunTool(
      {address, "call", "toolmesh.v1.TaskService/ListTasks", "[1,2"});
  EXPECT_EQ(bad_json.exit_code, 1);
  EXPECT_THAT(bad_json.stderr_tail, HasSubstr("INVALID_ARGUMENT"));
  ToolRun usage = RunTool({address, "frobnicate"});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_THAT(usage.stderr_tail, HasSubstr("usage:"));
}

// --- bearer tokens ----------------------------------------------------------

TEST(ReflectionWithTokenTest, ReflectionNeedsNoTokenAndCallsCarryIt) {
  absl::StatusOr<std::unique_ptr<TempDir>> dir = TempDir::Create("reflect-");
  ASSERT_THAT(dir.status(), IsOk());
  const std::string token_file = (*dir)->path() + "/client-token";
  ASSERT_THAT(WriteFile(token_file, "reflection-secret\n"), IsOk());
  ClusterOptions options;
  options.orchestrator_args = {"--client-token-file", token_file};
  absl::StatusOr<std::unique_ptr<Cluster>> cluster = Cluster::Start(options);
  ASSERT_THAT(cluster.status(), IsOk());
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(
      (*cluster)->orchestrator_address(), grpc::InsecureChannelCredentials());

  // Describing the server needs no token (as for grpcurl without -H).
  ReflectionClient client(channel, {}, kCallTimeout);
  auto files = client.FileContainingSymbol(kTaskService);
  ASSERT_THAT(files.status(), IsOk());
  ReflectedSchema schema;
  ASSERT_THAT(schema.AddFiles(*files), IsOk());
  auto method = schema.FindMethod("toolmesh.v1.TaskService/ListTasks");
  ASSERT_THAT(method.status(), IsOk());

  EXPECT_THAT(CallUnaryJson(channel, schema, **method, "{}", {}, kCallTimeout),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(CallUnaryJson(channel, schema, **method, "{}",
                            {{"authorization", "Bearer wrong"}}, kCallTimeout),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(CallUnaryJson(channel, schema, **method, "{}",
                            {{"authorization", "Bearer reflection-secret"}},
                            kCallTimeout),
              IsOk());
  ToolRun call = RunTool({"-H", "authorization: Bearer reflection-secret",
                          (*cluster)->orchestrator_address(), "call",
                          "toolmesh.v1.TaskService/ListTasks"});
  EXPECT_EQ(call.exit_code, 0) << call.stderr_tail;
}

}  // namespace
}  // namespace toolmesh::integration
