// The orchestrator fuzz targets' engine harness (engine_harness.h).
#include "tests/fuzz/services/engine_harness.h"

#include <ostream>
#include <streambuf>

#include "google/protobuf/stubs/logging.h"
#include "orchestrator/engine/log.h"

namespace toolmesh::fuzzing {
namespace {

// Swallows everything written to it.
class NullBuffer final : public std::streambuf {
 protected:
  int overflow(int c) override { return c; }
  std::streamsize xsputn(const char*, std::streamsize n) override {
    return n;
  }
};

void SilenceLogsOnce() {
  // Leaked on purpose: Log() may run on an engine thread until the process
  // exits.
  static std::ostream* const null_stream = [] {
    auto* stream = new std::ostream(new NullBuffer());
    orchestrator::SetLogStreamForTesting(stream);
    // Parsing fuzzed protos logs every string field that is not UTF-8.
    google::protobuf::SetLogHandler(nullptr);
    return stream;
  }();
  (void)null_stream;
}

}  // namespace

EngineHarness::EngineHarness(orchestrator::EngineOptions options)
    : clock_(absl::FromUnixSeconds(1700000000)), random_(7) {
  SilenceLogsOnce();
  engine_ = std::make_unique<orchestrator::Engine>(std::move(options), clock_,
                                                   transport_, random_, store_);
}

EngineHarness::~EngineHarness() {
  engine_.reset();
  transport_.FinishAll();
}

v1::ListWorkersResponse EngineHarness::Sync() {
  absl::StatusOr<v1::ListWorkersResponse> workers =
      Call<v1::ListWorkersResponse>(
          [this](orchestrator::Reply<v1::ListWorkersResponse> reply) {
            engine_->ListWorkers(v1::ListWorkersRequest(), std::move(reply));
          });
  Check(workers.ok());
  return *std::move(workers);
}

}  // namespace toolmesh::fuzzing
