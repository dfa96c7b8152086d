// toolmesh-orchestrator: the orchestrator daemon. Flags and wiring only:
// the Engine (orchestrator/engine/engine.h) owns tasks and workers, the
// gRPC services (orchestrator/grpc/) translate RPCs for it, and a small
// HTTP server answers /metrics, /healthz and /readyz.
//
// Threads: main() parses flags, starts everything, prints the bound
// addresses and then waits in sigwait() for SIGTERM or SIGINT (blocked in
// every thread). Shutdown order: gRPC health NOT_SERVING, engine.Shutdown()
// (watchers and worker streams end with UNAVAILABLE), the gRPC server
// (5 s grace), the HTTP server; exit 0. Bad flags: one line on stderr,
// exit 2; a start-up failure: one line, exit 1.
#include <fcntl.h>
#include <sys/file.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <httplib.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/random.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "orchestrator/daemon/security_flags.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/store/memory_store.h"
#include "orchestrator/store/sqlite_store.h"
#include "orchestrator/engine/real_clock.h"
#include "orchestrator/grpc/auth.h"
#include "orchestrator/grpc/task_service.h"
#include "orchestrator/grpc/worker_service.h"
#include "orchestrator/model/curl_model_transport.h"

namespace {

using toolmesh::orchestrator::Authenticator;
using toolmesh::orchestrator::Engine;
using toolmesh::orchestrator::EngineOptions;
using toolmesh::orchestrator::RealClock;
using toolmesh::orchestrator::TaskServiceImpl;
using toolmesh::orchestrator::WorkerServiceImpl;

constexpr char kUsage[] =
    "usage: toolmesh-orchestrator [flags]\n"
    "The toolmesh orchestrator: runs agent tasks on the Anthropic Messages\n"
    "API and dispatches their client tools to connected workers.\n"
    "\n"
    "  --listen HOST:PORT            gRPC address (TaskService, WorkerService,\n"
    "                                health, reflection); default\n"
    "                                127.0.0.1:7070; port 0 picks a free port\n"
    "  --http-listen HOST:PORT       HTTP address for /metrics, /healthz and\n"
    "                                /readyz; default 127.0.0.1:7071\n"
    "  --data-dir DIR                directory that holds the orchestrator's\n"
    "                                store (SQLite); created if missing;\n"
    "                                default ./toolmesh-data\n"
    "  --anthropic-base-url URL      Messages API base URL; default\n"
    "                                https://api.anthropic.com\n"
    "  --anthropic-beta LIST         comma-separated anthropic-beta values\n"
    "  --max-turns N                 model turns per task when the task does\n"
    "                                not say (default 32)\n"
    "  --max-turns-limit N           the most turns a task may ask for;\n"
    "                                more is INVALID_ARGUMENT (default 0:\n"
    "                                no limit)\n"
    "  --default-task-timeout D      deadline of a task that sets none; it\n"
    "                                then fails with deadline_exceeded\n"
    "                                (default 1h; 0: no deadline)\n"
    "  --max-tasks-per-client N      unfinished tasks per client token;\n"
    "                                more is RESOURCE_EXHAUSTED (default\n"
    "                                1000; 0: no limit)\n"
    "  --max-queue-depth N           tool calls waiting for a worker, per\n"
    "                                tool; a call beyond ends with an\n"
    "                                is_error result the model sees, and\n"
    "                                SubmitTask naming that tool in\n"
    "                                client_tools is RESOURCE_EXHAUSTED\n"
    "                                (default 10000; 0: no limit)\n"
    "  --max-tool-input-bytes N      largest client tool input sent to a\n"
    "                                worker; a larger one ends the call\n"
    "                                with invalid_input, which the model\n"
    "                                sees (default 1048576; 0: no limit)\n"
    "  --heartbeat-interval D        worker heartbeat interval (default 2s)\n"
    "  --lease-duration D            tool call lease without a heartbeat\n"
    "                                (default 10s)\n"
    "  --schedule-to-start-timeout D how long a tool call may wait for a\n"
    "                                worker (default 30s)\n"
    "  --tool-timeout D              start-to-close limit of one tool call\n"
    "                                (default 5m)\n"
    "  --retention D                 finished tasks are deleted from the\n"
    "                                store this long after they ended\n"
    "                                (default 168h)\n"
    "  --retention-count N           at most this many finished tasks are\n"
    "                                kept (default 100000)\n"
    "  --store sqlite|memory         sqlite (default): durable under\n"
    "                                --data-dir; memory: nothing survives a\n"
    "                                restart (tests, benchmarks)\n"
    "  --store-sync full|normal      sqlite fsync policy: full (default)\n"
    "                                syncs every commit and survives power\n"
    "                                loss; normal syncs at checkpoints and\n"
    "                                survives process crashes only\n"
    "  --client-token-file F         file of client tokens (TaskService),\n"
    "                                one per line as NAME:TOKEN or TOKEN;\n"
    "                                # comments and blank lines skipped;\n"
    "                                wins over TOOLMESH_CLIENT_TOKEN\n"
    "  --worker-token-file F         file of worker tokens (WorkerService),\n"
    "                                same format; wins over\n"
    "                                TOOLMESH_WORKER_TOKEN\n"
    "  --insecure-no-auth            serve a service that has no token\n"
    "                                without authentication (logs a\n"
    "                                warning); without this flag a missing\n"
    "                                token stops the start\n"
    "  --tls-cert F --tls-key F      serve gRPC and the HTTP endpoint over\n"
    "                                TLS with this PEM certificate chain\n"
    "                                and private key\n"
    "  --tls-client-ca F             require gRPC client certificates\n"
    "                                signed by this CA (mTLS); applies to\n"
    "                                workers and clients alike (one port);\n"
    "                                the HTTP endpoint does not ask for one\n"
    "  --max-message-bytes N         largest gRPC message accepted; larger\n"
    "                                ones fail with RESOURCE_EXHAUSTED\n"
    "                                (default 4194304)\n"
    "  --help                        this text\n"
    "\n"
    "Durations look like 500ms, 10s, 1m30s.\n"
    "Environment: ANTHROPIC_API_KEY (required); TOOLMESH_CLIENT_TOKEN and\n"
    "TOOLMESH_WORKER_TOKEN (bearer tokens that clients resp. workers must\n"
    "present). A service without a token needs --insecure-no-auth.\n"
    "Prints `grpc listening on HOST:PORT` and `http listening on HOST:PORT`\n"
    "once it serves. SIGTERM or SIGINT shut it down.\n";

[[noreturn]] void Fail(absl::string_view message, int exit_code = 2) {
  std::cerr << "toolmesh-orchestrator: " << message << std::endl;
  std::exit(exit_code);
}

absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

struct HostPort {
  std::string host;  // as given, e.g. "127.0.0.1", "[::1]", "0.0.0.0"
  int port = 0;
  // The host without IPv6 brackets, for bind().
  std::string BareHost() const {
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      return host.substr(1, host.size() - 2);
    }
    return host;
  }
};

HostPort ParseHostPort(std::string_view flag, std::string_view value) {
  const std::size_t colon = value.rfind(':');
  HostPort out;
  if (colon == std::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(ToAbsl(value.substr(colon + 1)), &out.port) ||
      out.port < 0 || out.port > 65535) {
    Fail(absl::StrCat(ToAbsl(flag), " wants HOST:PORT, got `", ToAbsl(value),
                      "`"));
  }
  out.host = std::string(value.substr(0, colon));
  return out;
}

// A duration >= 0 ("0" allowed: the feature is off).
absl::Duration ParseDurationOrZero(std::string_view flag,
                                   std::string_view value) {
  absl::Duration duration;
  if (!absl::ParseDuration(ToAbsl(value), &duration) ||
      duration < absl::ZeroDuration() || duration == absl::InfiniteDuration()) {
    Fail(absl::StrCat(ToAbsl(flag),
                      " wants a duration such as 30m or 1h, or 0, got `",
                      ToAbsl(value), "`"));
  }
  return duration;
}

// A non-negative int ("0": no limit).
int ParseLimit(std::string_view flag, std::string_view value) {
  int n = 0;
  if (!absl::SimpleAtoi(ToAbsl(value), &n) || n < 0) {
    Fail(absl::StrCat(ToAbsl(flag), " wants a non-negative integer, got `",
                      ToAbsl(value), "`"));
  }
  return n;
}

absl::Duration ParsePositiveDuration(std::string_view flag,
                                     std::string_view value) {
  absl::Duration duration;
  if (!absl::ParseDuration(ToAbsl(value), &duration) ||
      duration <= absl::ZeroDuration() || duration == absl::InfiniteDuration()) {
    Fail(absl::StrCat(ToAbsl(flag),
                      " wants a positive duration such as 500ms or 10s, got `",
                      ToAbsl(value), "`"));
  }
  return duration;
}

struct Flags {
  bool memory_store = false;
  toolmesh::orchestrator::SqliteSynchronous store_sync =
      toolmesh::orchestrator::SqliteSynchronous::kFull;
  HostPort listen{"127.0.0.1", 7070};
  HostPort http_listen{"127.0.0.1", 7071};
  std::string data_dir = "toolmesh-data";
  std::string anthropic_base_url = "https://api.anthropic.com";
  std::vector<std::string> anthropic_beta;
  EngineOptions engine;
  toolmesh::orchestrator::SecurityFlags security;
};

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  // The daemon's defaults for the limits (EngineOptions' own defaults are
  // off, for in-process users).
  flags.engine.default_task_timeout = absl::Hours(1);
  flags.engine.max_tasks_per_client = 1000;
  flags.engine.dispatch.max_queue_depth = 10000;
  bool max_turns_given = false;
  std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    std::string_view name = arg;
    std::string_view inline_value;
    bool has_inline_value = false;
    if (const std::size_t eq = arg.find('=');
        arg.substr(0, 2) == "--" && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
      has_inline_value = true;
    }
    if (name == "--help" || name == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    auto next = [&]() -> std::string_view {
      if (has_inline_value) return inline_value;
      if (i + 1 >= args.size()) {
        Fail(absl::StrCat(ToAbsl(name), " needs a value"));
      }
      return args[++i];
    };
    bool security_takes_value = false;
    if (toolmesh::orchestrator::IsSecurityFlag(name, &security_takes_value)) {
      if (!security_takes_value && has_inline_value) {
        Fail(absl::StrCat(ToAbsl(name), " takes no value"));
      }
      const absl::Status applied = toolmesh::orchestrator::ApplySecurityFlag(
          name, security_takes_value ? next() : std::string_view(),
          flags.security);
      if (!applied.ok()) Fail(applied.message());
    } else if (name == "--listen") {
      flags.listen = ParseHostPort(name, next());
    } else if (name == "--http-listen") {
      flags.http_listen = ParseHostPort(name, next());
    } else if (name == "--data-dir") {
      flags.data_dir = std::string(next());
      if (flags.data_dir.empty()) Fail("--data-dir must not be empty");
    } else if (name == "--anthropic-base-url") {
      flags.anthropic_base_url = std::string(next());
    } else if (name == "--anthropic-beta") {
      flags.anthropic_beta =
          absl::StrSplit(ToAbsl(next()), ',', absl::SkipWhitespace());
    } else if (name == "--max-turns") {
      std::uint32_t turns = 0;
      if (!absl::SimpleAtoi(ToAbsl(next()), &turns) || turns == 0) {
        Fail("--max-turns wants a positive integer");
      }
      flags.engine.default_max_turns = turns;
      max_turns_given = true;
    } else if (name == "--max-turns-limit") {
      flags.engine.max_turns_limit =
          static_cast<std::uint32_t>(ParseLimit(name, next()));
    } else if (name == "--default-task-timeout") {
      flags.engine.default_task_timeout = ParseDurationOrZero(name, next());
    } else if (name == "--max-tasks-per-client") {
      flags.engine.max_tasks_per_client = ParseLimit(name, next());
    } else if (name == "--max-queue-depth") {
      flags.engine.dispatch.max_queue_depth = ParseLimit(name, next());
    } else if (name == "--max-tool-input-bytes") {
      flags.engine.max_tool_input_bytes =
          static_cast<std::size_t>(ParseLimit(name, next()));
    } else if (name == "--heartbeat-interval") {
      flags.engine.dispatch.heartbeat_interval =
          ParsePositiveDuration(name, next());
    } else if (name == "--lease-duration") {
      flags.engine.dispatch.lease_duration =
          ParsePositiveDuration(name, next());
    } else if (name == "--schedule-to-start-timeout") {
      flags.engine.dispatch.schedule_to_start_timeout =
          ParsePositiveDuration(name, next());
    } else if (name == "--retention") {
      flags.engine.retention = ParsePositiveDuration(name, next());
    } else if (name == "--store") {
      const std::string_view kind = next();
      if (kind != "sqlite" && kind != "memory") {
        Fail("--store wants sqlite or memory");
      }
      flags.memory_store = kind == "memory";
    } else if (name == "--store-sync") {
      const std::string_view sync = next();
      if (sync == "full") {
        flags.store_sync = toolmesh::orchestrator::SqliteSynchronous::kFull;
      } else if (sync == "normal") {
        flags.store_sync = toolmesh::orchestrator::SqliteSynchronous::kNormal;
      } else {
        Fail("--store-sync wants full or normal");
      }
    } else if (name == "--retention-count") {
      std::uint64_t count = 0;
      if (!absl::SimpleAtoi(ToAbsl(next()), &count)) {
        Fail("--retention-count wants a non-negative integer");
      }
      flags.engine.retention_count = count;
    } else if (name == "--tool-timeout") {
      flags.engine.dispatch.start_to_close_timeout =
          ParsePositiveDuration(name, next());
    } else {
      Fail(absl::StrCat("unknown flag `", ToAbsl(arg), "` (see --help)"));
    }
  }
  if (flags.engine.dispatch.lease_duration <=
      flags.engine.dispatch.heartbeat_interval) {
    Fail("--lease-duration must be longer than --heartbeat-interval");
  }
  if (flags.engine.max_turns_limit > 0 &&
      flags.engine.default_max_turns > flags.engine.max_turns_limit) {
    if (max_turns_given) {
      Fail("--max-turns must not be more than --max-turns-limit");
    }
    flags.engine.default_max_turns = flags.engine.max_turns_limit;
  }
  return flags;
}

// Engine::Metrics() for an HTTP handler thread: waits (bounded) for the
// engine's answer. The answer may arrive after the wait gave up, or never
// (the engine stopped); the state is shared so that either is harmless.
struct MetricsWait {
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::StatusOr<std::string> text ABSL_GUARDED_BY(mu);
};

absl::StatusOr<std::string> EngineMetrics(Engine& engine,
                                          absl::Duration timeout) {
  auto wait = std::make_shared<MetricsWait>();
  engine.Metrics([wait](absl::StatusOr<std::string> text) {
    absl::MutexLock lock(&wait->mu);
    wait->text = std::move(text);
    wait->done = true;
  });
  absl::MutexLock lock(&wait->mu);
  if (!wait->mu.AwaitWithTimeout(absl::Condition(&wait->done), timeout)) {
    return absl::DeadlineExceededError("the engine did not answer in time");
  }
  return wait->text;
}

// Runs the HTTP side until Stop(). cpp-httplib 0.11's stop() does nothing
// before listen() has marked the server running, so Start() binds, starts
// the loop on a thread and returns once it runs. With TLS files (Debian's
// cpp-httplib is built with CPPHTTPLIB_OPENSSL_SUPPORT) it serves HTTPS
// with the gRPC certificate; it never asks for a client certificate, so
// Prometheus and probes need only the CA.
class HttpServer {
 public:
  HttpServer(Engine& engine,
             const toolmesh::orchestrator::ServerTlsOptions& tls)
      : engine_(engine), server_(MakeServer(tls)) {
    httplib::Server& server = *server_;
    server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok\n", "text/plain");
    });
    server.Get("/readyz", [this](const httplib::Request&,
                                  httplib::Response& res) {
      if (engine_.Ready()) {
        res.set_content("ready\n", "text/plain");
      } else {
        res.status = 503;
        res.set_content("not ready\n", "text/plain");
      }
    });
    server.Get("/metrics", [this](const httplib::Request&,
                                   httplib::Response& res) {
      absl::StatusOr<std::string> text =
          EngineMetrics(engine_, absl::Seconds(5));
      if (!text.ok()) {
        res.status = 503;
        res.set_content(absl::StrCat(text.status().message(), "\n"),
                        "text/plain");
        return;
      }
      const double uptime = absl::ToDoubleSeconds(absl::Now() - started_);
      std::string body = *std::move(text);
      if (!body.empty() && body.back() != '\n') body.push_back('\n');
      absl::StrAppend(
          &body,
          "# HELP toolmesh_process_uptime_seconds Seconds since the "
          "orchestrator started.\n"
          "# TYPE toolmesh_process_uptime_seconds gauge\n",
          absl::StrFormat("toolmesh_process_uptime_seconds %.3f\n", uptime));
      res.set_content(body, "text/plain; version=0.0.4");
    });
  }

  ~HttpServer() { Stop(); }

  // The bound port, or an error.
  absl::StatusOr<int> Start(const HostPort& address) {
    if (!server_->is_valid()) {
      return absl::InvalidArgumentError(
          "cannot serve HTTPS with --tls-cert and --tls-key (the certificate "
          "or the key is not usable)");
    }
    int port = address.port;
    const std::string host = address.BareHost();
    if (port == 0) {
      port = server_->bind_to_any_port(host);
    } else if (!server_->bind_to_port(host, port)) {
      port = -1;
    }
    if (port <= 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot listen on ", address.host, ":", address.port, " (HTTP)"));
    }
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (!server_->is_running()) {
      if (absl::Now() > give_up) {
        return absl::InternalError("the HTTP server thread did not start");
      }
      std::this_thread::yield();
    }
    return port;
  }

  void Stop() {
    server_->stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  static std::unique_ptr<httplib::Server> MakeServer(
      const toolmesh::orchestrator::ServerTlsOptions& tls) {
    if (!tls.enabled()) return std::make_unique<httplib::Server>();
    return std::make_unique<httplib::SSLServer>(tls.cert_path.c_str(),
                                                tls.key_path.c_str());
  }

  Engine& engine_;
  const absl::Time started_ = absl::Now();
  const std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

std::uint64_t SeedFromEntropy() {
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device() ^
         static_cast<std::uint64_t>(absl::ToUnixNanos(absl::Now()));
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);

  // Tokens and TLS files are read once, here; a bad one is a usage error.
  absl::StatusOr<toolmesh::orchestrator::ServerSecurity> security =
      toolmesh::orchestrator::ResolveServerSecurity(
          flags.security, [](const char* name) { return std::getenv(name); });
  if (!security.ok()) Fail(security.status().message());
  for (const std::string& warning : security->warnings) {
    std::cerr << "toolmesh-orchestrator: " << warning << std::endl;
  }
  for (const std::string& notice : security->notices) {
    std::cerr << "toolmesh-orchestrator: " << notice << std::endl;
  }

  const char* api_key = std::getenv("ANTHROPIC_API_KEY");
  if (api_key == nullptr || api_key[0] == '\0') {
    Fail("ANTHROPIC_API_KEY is not set (the Messages API key is required)");
  }

  std::error_code mkdir_error;
  std::filesystem::create_directories(flags.data_dir, mkdir_error);
  if (mkdir_error) {
    Fail(absl::StrCat("--data-dir: cannot create ", flags.data_dir, ": ",
                      mkdir_error.message()),
         1);
  }

  // Signals are taken by sigwait below; block them before any thread starts
  // so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  toolmesh::model::CurlModelTransportOptions transport_options;
  transport_options.base_url = flags.anthropic_base_url;
  transport_options.api_key = api_key;
  transport_options.anthropic_beta = flags.anthropic_beta;
  absl::StatusOr<std::unique_ptr<toolmesh::model::CurlModelTransport>>
      transport = toolmesh::model::CurlModelTransport::Create(
          std::move(transport_options));
  if (!transport.ok()) {
    const bool bad_flag =
        transport.status().code() == absl::StatusCode::kInvalidArgument;
    Fail(absl::StrCat(bad_flag ? "--anthropic-base-url: " : "",
                      transport.status().message()),
         bad_flag ? 2 : 1);
  }

  // One orchestrator per data dir: a second one would resume the same
  // unfinished tasks. The lock is released when the process exits.
  const std::string lock_path = flags.data_dir + "/LOCK";
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC,
                           0600);
  if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    Fail(absl::StrCat("--data-dir ", flags.data_dir,
                      " is in use by another toolmesh-orchestrator (",
                      lock_path, " is locked)"),
         1);
  }

  // The store: a damaged or foreign database stops the start with a clear
  // line; the orchestrator never starts empty over it.
  absl::StatusOr<std::unique_ptr<toolmesh::orchestrator::Store>> store;
  if (flags.memory_store) {
    store = std::make_unique<toolmesh::orchestrator::MemoryStore>();
  } else {
    toolmesh::orchestrator::SqliteStoreOptions store_options;
    store_options.synchronous = flags.store_sync;
    store = toolmesh::orchestrator::OpenSqliteStore(flags.data_dir,
                                                    store_options);
  }
  if (!store.ok()) {
    Fail(absl::StrCat("cannot open the store in ", flags.data_dir, ": ",
                      store.status().message()),
         1);
  }

  RealClock clock;
  toolmesh::common::SeededRandomSource random(SeedFromEntropy());
  auto engine =
      std::make_unique<Engine>(flags.engine, clock, **transport, random,
                               **store);

  const Authenticator auth = security->MakeAuthenticator();
  TaskServiceImpl task_service(*engine, auth);
  WorkerServiceImpl worker_service(*engine, auth);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // Reflection describes what the generated descriptor pool holds; grpc++
  // serves the health service without descriptors, so the standard schema
  // compiled in toolmesh_proto is linked in and loaded here.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(
      absl::StrCat(flags.listen.host, ":", flags.listen.port),
      security->credentials, &grpc_port);
  toolmesh::orchestrator::SetServerMaxMessageBytes(security->max_message_bytes,
                                                   builder);
  builder.RegisterService(&task_service);
  builder.RegisterService(&worker_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    std::cerr << "toolmesh-orchestrator: cannot listen on " << flags.listen.host
              << ":" << flags.listen.port << " (gRPC)"
              << (security->tls ? "; check that --tls-key is the key of "
                                  "--tls-cert and both are PEM"
                                : "")
              << std::endl;
    if (server != nullptr) server->Shutdown();
    engine->Shutdown();
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health != nullptr) health->SetServingStatus(true);
  std::cout << "grpc listening on " << flags.listen.host << ":" << grpc_port
            << std::endl;

  HttpServer http(*engine, flags.security.tls);
  absl::StatusOr<int> http_port = http.Start(flags.http_listen);
  if (!http_port.ok()) {
    std::cerr << "toolmesh-orchestrator: " << http_port.status().message()
              << std::endl;
    if (health != nullptr) health->SetServingStatus(false);
    engine->Shutdown();
    server->Shutdown(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    server->Wait();
    return 1;
  }
  std::cout << "http listening on " << flags.http_listen.host << ":"
            << *http_port << std::endl;

  int signal_number = 0;
  sigwait(&signals, &signal_number);

  if (health != nullptr) health->SetServingStatus(false);
  engine->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  http.Stop();
  // The services' calls are over; the engine may go before the clock, the
  // transport and the random source it borrows.
  server.reset();
  engine.reset();
  return 0;
}
