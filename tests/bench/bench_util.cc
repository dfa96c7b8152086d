// Helpers shared by the system benchmarks; see bench_util.h.
#include "tests/bench/bench_util.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "toolmesh/v1/worker_service.grpc.pb.h"

namespace toolmesh::bench {
namespace {

absl::string_view Sv(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// Answers every WorkerMessage with one OrchestratorMessage; one write in
// flight, the next read started from OnWriteDone.
class EchoReactor final
    : public grpc::ServerBidiReactor<v1::WorkerMessage,
                                     v1::OrchestratorMessage> {
 public:
  EchoReactor() { StartRead(&in_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    const v1::ToolResult& result = in_.tool_result();
    v1::Assignment* assignment = out_.mutable_assignment();
    assignment->set_task_id(result.task_id());
    assignment->set_tool_use_id(result.tool_use_id());
    assignment->set_attempt(result.attempt());
    assignment->set_input_json(result.content_json());
    StartWrite(&out_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    StartRead(&in_);
  }

  void OnDone() override { delete this; }

 private:
  v1::WorkerMessage in_;
  v1::OrchestratorMessage out_;
};

class EchoService final : public v1::WorkerService::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::WorkerMessage, v1::OrchestratorMessage>*
  Connect(grpc::CallbackServerContext*) override {
    return new EchoReactor();
  }
};

}  // namespace

void Samples::Append(const Samples& other) {
  values_.insert(values_.end(), other.values_.begin(), other.values_.end());
  sorted_ = false;
}

absl::Duration Samples::Percentile(double p) const {
  if (values_.empty()) return absl::ZeroDuration();
  if (!sorted_) {
    std::sort(values_.begin(), values_.end());
    sorted_ = true;
  }
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values_.size()));
  std::size_t index = rank < 1 ? 0 : static_cast<std::size_t>(rank) - 1;
  index = std::min(index, values_.size() - 1);
  return values_[index];
}

absl::Duration Samples::Mean() const {
  if (values_.empty()) return absl::ZeroDuration();
  absl::Duration sum;
  for (absl::Duration d : values_) sum += d;
  return sum / static_cast<std::int64_t>(values_.size());
}

namespace {
// The suffix of the innermost live ScopedKeySuffix.
std::string& KeySuffix() {
  static std::string* suffix = new std::string();
  return *suffix;
}
}  // namespace

ScopedKeySuffix::ScopedKeySuffix(std::string suffix)
    : previous_(std::exchange(KeySuffix(), std::move(suffix))) {}

ScopedKeySuffix::~ScopedKeySuffix() { KeySuffix() = std::move(previous_); }

void Print(std::string_view key, std::string_view value) {
  const std::string& suffix = KeySuffix();
  std::printf("%.*s%s=%.*s\n", static_cast<int>(key.size()), key.data(),
              suffix.c_str(), static_cast<int>(value.size()), value.data());
  std::fflush(stdout);
}

void Print(std::string_view key, double value, int decimals) {
  Print(key, absl::StrFormat("%.*f", decimals, value));
}

void Print(std::string_view key, std::int64_t value) {
  Print(key, absl::StrCat(value));
}

void PrintTarget(std::string_view name, bool pass) {
  Print(absl::StrCat("target_", Sv(name)), pass ? "pass" : "fail");
}

double Micros(absl::Duration d) { return absl::ToDoubleMicroseconds(d); }
double Millis(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

absl::StatusOr<std::int64_t> ProcStatusKib(pid_t pid, std::string_view field) {
  const std::string path = absl::StrCat("/proc/", pid, "/status");
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  const std::string prefix = absl::StrCat(Sv(field), ":");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::istringstream fields(line.substr(prefix.size()));
    std::int64_t kib = 0;
    if (fields >> kib) return kib;
  }
  return absl::InternalError(absl::StrCat("no ", prefix, " line in ", path));
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  if (!(in >> a >> b >> c)) return "unknown";
  return absl::StrCat(a, " ", b, " ", c);
}

absl::StatusOr<FloorResult> RunGrpcFloor(std::size_t payload_bytes,
                                         int warmup, absl::Duration duration,
                                         int max_round_trips) {
  EchoService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError("the in-process gRPC server did not start");
  }
  auto client = v1::WorkerService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                          grpc::InsecureChannelCredentials()));

  FloorResult result;
  absl::Status failure;
  {
    grpc::ClientContext context;
    auto stream = client->Connect(&context);
    // The payload rides in content_json; ids add a few bytes so the whole
    // message is about payload_bytes on the wire.
    v1::WorkerMessage request;
    v1::ToolResult* tool_result = request.mutable_tool_result();
    tool_result->set_task_id("task_bench");
    tool_result->set_tool_use_id("toolu_bench");
    tool_result->set_attempt(1);
    const std::size_t overhead = 40;
    tool_result->set_content_json(std::string(
        payload_bytes > overhead ? payload_bytes - overhead : 1, 'x'));
    v1::OrchestratorMessage response;

    auto one = [&]() -> bool {
      return stream->Write(request) && stream->Read(&response);
    };
    for (int i = 0; i < warmup; ++i) {
      if (!one()) {
        failure = absl::UnavailableError("the ping-pong stream failed");
        break;
      }
    }
    const absl::Time start = absl::Now();
    const absl::Time end = start + duration;
    while (failure.ok() &&
           static_cast<int>(result.round_trips.size()) < max_round_trips) {
      const absl::Time t0 = absl::Now();
      if (!one()) {
        failure = absl::UnavailableError("the ping-pong stream failed");
        break;
      }
      const absl::Time t1 = absl::Now();
      result.round_trips.Add(t1 - t0);
      if (t1 >= end) break;
    }
    result.elapsed = absl::Now() - start;
    stream->WritesDone();
    const grpc::Status finished = stream->Finish();
    (void)finished;
  }
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  if (!failure.ok()) return failure;
  return result;
}

}  // namespace toolmesh::bench
