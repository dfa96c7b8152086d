// toolmesh-fakeapi: a local stand-in for the Anthropic Messages API that
// streams scripted or rule-driven responses, enforces the API's request
// rules with its 400 texts, and injects faults. Flags and wiring only; the
// server is FakeApiServer. Runs until SIGTERM or SIGINT.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testing/fakeapi/fake_api_server.h"

namespace {

using toolmesh::fakeapi::FakeApiOptions;
using toolmesh::fakeapi::FakeApiServer;
using toolmesh::fakeapi::ToAbsl;

constexpr char kUsage[] =
    "usage: toolmesh-fakeapi [flags]\n"
    "A local stand-in for the Anthropic Messages API (POST /v1/messages).\n"
    "\n"
    "  --listen HOST:PORT     address to serve on (default 127.0.0.1:0; port 0\n"
    "                         picks a free port); prints\n"
    "                         `listening on HOST:PORT` once it accepts\n"
    "  --scenario FILE        scripted responses (see tests/testing/fakeapi/\n"
    "                         README.md); without it the rule-driven model\n"
    "                         answers every request\n"
    "  --seed N               seed for ids, the model and random faults (0)\n"
    "  --api-key K            accept only this x-api-key (default: any\n"
    "                         non-empty key)\n"
    "  --fault-rate P         probability in [0,1] of a fault per request\n"
    "  --faults A,B,...       faults to draw from (default: http_529,\n"
    "                         sse_error,cut); known: ";
constexpr char kUsageTail[] =
    "\n"
    "  --log FILE             append every request as a JSON line\n"
    "  --max-log-entries N    requests kept for GET /_fake/requests (10000)\n"
    "  --threads N            worker threads (16)\n"
    "  --help                 this text\n"
    "\n"
    "Side endpoints: GET /_fake/requests, GET /_fake/stats, POST /_fake/reset.\n";

[[noreturn]] void Fail(absl::string_view message) {
  std::cerr << "toolmesh-fakeapi: " << message << "\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  FakeApiOptions options;
  std::string scenario_path;
  std::vector<std::string> fault_names = {"http_529", "sse_error", "cut"};
  bool faults_given = false;
  bool rate_given = false;

  std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    std::string_view value;
    std::string_view name = arg;
    bool inline_value = false;
    if (auto eq = arg.find('='); arg.substr(0, 2) == "--" &&
                                 eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    if (name == "--help" || name == "-h") {
      std::cout << kUsage << toolmesh::fakeapi::KnownFaultNames()
                << kUsageTail;
      return 0;
    }
    auto next = [&]() -> std::string_view {
      if (inline_value) return value;
      if (i + 1 >= args.size()) Fail(absl::StrCat(ToAbsl(name), " needs a value"));
      return args[++i];
    };
    if (name == "--listen") {
      std::string_view listen = next();
      auto colon = listen.rfind(':');
      int port = 0;
      if (colon == std::string_view::npos || colon == 0 ||
          !absl::SimpleAtoi(ToAbsl(listen.substr(colon + 1)), &port) || port < 0 ||
          port > 65535) {
        Fail(absl::StrCat("--listen wants HOST:PORT, got `", ToAbsl(listen),
                         "`"));
      }
      options.host = std::string(listen.substr(0, colon));
      options.port = port;
    } else if (name == "--scenario") {
      scenario_path = std::string(next());
    } else if (name == "--seed") {
      if (!absl::SimpleAtoi(ToAbsl(next()), &options.seed)) {
        Fail("--seed wants a non-negative integer");
      }
    } else if (name == "--api-key") {
      options.api_key = std::string(next());
      if (options.api_key.empty()) Fail("--api-key must not be empty");
    } else if (name == "--fault-rate") {
      if (!absl::SimpleAtod(ToAbsl(next()), &options.fault_rate) ||
          !(options.fault_rate >= 0 && options.fault_rate <= 1)) {
        Fail("--fault-rate wants a number in [0, 1]");
      }
      rate_given = true;
    } else if (name == "--faults") {
      fault_names = absl::StrSplit(ToAbsl(next()), ',', absl::SkipEmpty());
      faults_given = true;
    } else if (name == "--log") {
      options.log_path = std::string(next());
    } else if (name == "--max-log-entries") {
      if (!absl::SimpleAtoi(ToAbsl(next()), &options.max_log_entries)) {
        Fail("--max-log-entries wants a non-negative integer");
      }
    } else if (name == "--threads") {
      if (!absl::SimpleAtoi(ToAbsl(next()), &options.threads) || options.threads < 1 ||
          options.threads > 1024) {
        Fail("--threads wants an integer in [1, 1024]");
      }
    } else {
      Fail(absl::StrCat("unknown flag `", ToAbsl(arg), "` (see --help)"));
    }
  }
  if (faults_given && !rate_given) Fail("--faults needs --fault-rate");
  for (const std::string& fault_name : fault_names) {
    auto fault = toolmesh::fakeapi::FaultFromName(fault_name);
    if (!fault.ok()) Fail(absl::StrCat("--faults: ", fault.status().message()));
    options.random_faults.push_back(*std::move(fault));
  }
  if (!scenario_path.empty()) {
    auto scenario = toolmesh::fakeapi::LoadScenarioFile(scenario_path);
    if (!scenario.ok()) {
      Fail(absl::StrCat("bad scenario: ", scenario.status().message()));
    }
    options.scenario = *std::move(scenario);
  }

  // Signals are taken by sigwait below; block them before any thread
  // starts so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A client that drops the connection must not kill the server.
  signal(SIGPIPE, SIG_IGN);

  const std::string host = options.host;
  FakeApiServer server(std::move(options));
  if (absl::Status status = server.Start(); !status.ok()) {
    Fail(status.message());
  }
  std::cout << "listening on " << host << ":" << server.port() << std::endl;

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  server.Stop();
  return 0;
}
