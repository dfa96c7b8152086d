// toolmesh-worker: flags and wiring only (worker_flags.h parses the flags,
// worker_client.h does the work).
//
// Signals: SIGTERM and SIGINT are blocked in every thread and taken by one
// sigwait thread, so no work happens in a signal handler. The first one
// starts a drain (Run() then returns and the process exits 0); a second one
// stops at once (running tools are killed) and exits 128 + signal number.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/random.h"
#include "orchestrator/engine/real_clock.h"
#include "orchestrator/grpc/transport_security.h"
#include "worker/tools_config.h"
#include "worker/worker_client.h"
#include "worker/worker_flags.h"

namespace {

using toolmesh::worker::WorkerClient;

void LogLine(const std::string& line) {
  std::cerr << "toolmesh-worker: " << line << std::endl;
}

std::string DefaultId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
    return absl::StrCat("worker-", getpid());
  }
  return absl::StrCat(host, "-", getpid());
}

}  // namespace

int main(int argc, char** argv) {
  // Blocked before any thread exists, so every thread inherits the mask and
  // only the sigwait thread below receives these. SIGUSR1 tells that thread
  // to exit.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<toolmesh::worker::WorkerFlags> flags =
      toolmesh::worker::ParseWorkerFlags(args, DefaultId());
  if (!flags.ok()) {
    LogLine(std::string(flags.status().message()));
    return 2;
  }
  if (flags->help) {
    std::cout << toolmesh::worker::WorkerUsage();
    return 0;
  }
  absl::StatusOr<toolmesh::worker::ToolsConfig> tools =
      toolmesh::worker::LoadToolsConfigFile(flags->tools_path);
  if (!tools.ok()) {
    LogLine(std::string(tools.status().message()));
    return 2;
  }

  toolmesh::orchestrator::RealClock clock;
  toolmesh::common::SeededRandomSource random(
      static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) ^
      static_cast<uint64_t>(getpid()));

  toolmesh::worker::WorkerClientOptions options;
  options.orchestrator_address = flags->orchestrator;
  options.worker_id = flags->id;
  options.slots = flags->concurrency;
  options.max_result_bytes = flags->max_result_bytes;
  absl::StatusOr<std::string> token = toolmesh::worker::ResolveWorkerToken(
      *flags, [](const char* name) { return std::getenv(name); });
  if (!token.ok()) {
    LogLine(std::string(token.status().message()));
    return 2;
  }
  options.token = *std::move(token);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      toolmesh::orchestrator::MakeChannelCredentials(flags->tls);
  if (!credentials.ok()) {
    LogLine(std::string(credentials.status().message()));
    return 2;
  }
  options.credentials = *std::move(credentials);
  options.max_message_bytes = flags->max_message_bytes;
  // The client's lines are JSON objects already (one per line).
  options.log = [](const std::string& line) { std::cerr << line << std::endl; };
  const std::string connected_line = absl::StrCat(
      "worker ", flags->id, " connected to ", flags->orchestrator);
  options.on_connected = [connected_line] {
    std::cout << connected_line << std::endl;
  };

  absl::StatusOr<std::unique_ptr<WorkerClient>> client = WorkerClient::Create(
      std::move(options), *std::move(tools), clock, random);
  if (!client.ok()) {
    LogLine(std::string(client.status().message()));
    return 2;
  }

  std::atomic<int> forced_signal{0};
  const absl::Duration grace = flags->drain_grace;
  WorkerClient* worker = client->get();
  std::thread signal_thread([&signals, &forced_signal, grace, worker] {
    int received = 0;
    while (true) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0) continue;
      if (sig == SIGUSR1) return;
      if (++received == 1) {
        LogLine(absl::StrCat("received ", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                             ": draining"));
        worker->Drain(grace);
      } else {
        LogLine("second signal: stopping now");
        forced_signal.store(sig);
        worker->Stop();
      }
    }
  });

  const absl::Status status = worker->Run();
  pthread_kill(signal_thread.native_handle(), SIGUSR1);
  signal_thread.join();
  client->reset();  // kills and reaps whatever tool still runs

  if (forced_signal.load() != 0) return 128 + forced_signal.load();
  if (!status.ok()) {
    LogLine(absl::StrCat("exiting: ", absl::StatusCodeToString(status.code()),
                         ": ", status.message()));
    return 1;
  }
  LogLine("exiting");
  return 0;
}
