#include "orchestrator/cli/remote_commands.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/backoff.h"
#include "common/json.h"
#include "common/random.h"
#include "grpcpp/grpcpp.h"
#include "orchestrator/cli/event_json.h"
#include "orchestrator/cli/offline_commands.h"
#include "orchestrator/grpc/transport_security.h"
#include "toolmesh/v1/task_service.grpc.pb.h"

namespace toolmesh::cli {
namespace {

using common::Json;

// gRPC's generated client class of TaskService.
using TaskServiceClient = v1::TaskService::Stub;

constexpr std::string_view kDefaultModel = "claude-sonnet-4-5";
constexpr uint32_t kDefaultMaxTokens = 4096;
constexpr uint32_t kDefaultListLimit = 50;
constexpr uint32_t kMaxPageSize = 1000;
// How much of a tool's input `--watch` shows on one line.
constexpr std::size_t kMaxInputPreview = 200;

absl::string_view AbslView(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// Text from a server or a user, made fit for a one-line diagnostic.
std::string OneLine(absl::string_view text) {
  std::string line(text);
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::replace(line.begin(), line.end(), '\r', ' ');
  return line;
}

// ---------------------------------------------------------------------------
// Flags.

struct FlagSpec {
  std::string_view name;  // with the leading "--"
  bool takes_value;
  bool repeatable;
};

constexpr FlagSpec kGlobalFlags[] = {
    {"--orchestrator", true, false},
    {"--token", true, false},
    {"--token-file", true, false},
    {"--tls-ca", true, false},
    {"--tls-cert", true, false},
    {"--tls-key", true, false},
    {"--max-message-bytes", true, false},
};

struct ParsedFlags {
  std::map<std::string, std::vector<std::string>, std::less<>> values;
  std::vector<std::string> positional;

  bool Has(std::string_view name) const { return values.contains(name); }
  // The flag's value, or `fallback` when it was not given.
  std::string Get(std::string_view name, std::string_view fallback = "") const {
    auto it = values.find(name);
    return it == values.end() ? std::string(fallback) : it->second.back();
  }
  std::vector<std::string> All(std::string_view name) const {
    auto it = values.find(name);
    return it == values.end() ? std::vector<std::string>() : it->second;
  }
};

// Parses `args` against the verb's `specs` plus the global flags. A flag's
// value is the next argument (whatever it looks like) or follows "=".
// "--" ends the flags; "-" alone is a positional argument (stdin).
absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<std::string>& args,
                                       const std::vector<FlagSpec>& specs) {
  ParsedFlags parsed;
  bool flags_done = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      parsed.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    std::string name = arg;
    std::optional<std::string> inline_value;
    if (std::size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    const FlagSpec* spec = nullptr;
    for (const FlagSpec& s : specs) {
      if (s.name == name) spec = &s;
    }
    for (const FlagSpec& s : kGlobalFlags) {
      if (s.name == name) spec = &s;
    }
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", name));
    }
    std::string value;
    if (spec->takes_value) {
      if (inline_value.has_value()) {
        value = *std::move(inline_value);
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("flag ", name, " needs a value"));
      }
    } else if (inline_value.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag ", name, " takes no value"));
    }
    std::vector<std::string>& values = parsed.values[name];
    if (!values.empty() && !spec->repeatable) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag ", name, " given more than once"));
    }
    values.push_back(std::move(value));
  }
  return parsed;
}

// Exactly one positional argument, the task id.
absl::StatusOr<std::string> TaskIdArgument(const ParsedFlags& flags) {
  if (flags.positional.empty()) {
    return absl::InvalidArgumentError("missing task ID");
  }
  if (flags.positional.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument ", flags.positional[1]));
  }
  if (flags.positional[0].empty()) {
    return absl::InvalidArgumentError("the task ID is empty");
  }
  return flags.positional[0];
}

absl::Status NoPositional(const ParsedFlags& flags) {
  if (flags.positional.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("unexpected argument ", flags.positional[0]));
}

absl::StatusOr<uint32_t> ParseUint32(std::string_view flag,
                                     const std::string& text, bool positive) {
  uint32_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || (positive && value == 0) ||
      text.empty() || text[0] == '+' || text[0] == '-') {
    return absl::InvalidArgumentError(
        absl::StrCat("flag ", AbslView(flag), " expects ",
                     positive ? "a positive integer" : "a non-negative integer",
                     ", got '", text, "'"));
  }
  return value;
}

// `k=v` of --label.
absl::StatusOr<std::pair<std::string, std::string>> ParseLabel(
    const std::string& text) {
  std::size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --label expects KEY=VALUE, got '", text, "'"));
  }
  return std::make_pair(text.substr(0, eq), text.substr(eq + 1));
}

absl::StatusOr<std::map<std::string, std::string>> ParseLabels(
    const ParsedFlags& flags) {
  std::map<std::string, std::string> labels;
  for (const std::string& text : flags.All("--label")) {
    absl::StatusOr<std::pair<std::string, std::string>> label =
        ParseLabel(text);
    if (!label.ok()) return label.status();
    labels[label->first] = label->second;
  }
  return labels;
}

// A flag whose value must be the JSON text of an object.
absl::Status CheckJsonObject(std::string_view flag, const std::string& text) {
  absl::StatusOr<Json> value = common::ParseJson(text);
  if (!value.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag ", AbslView(flag), ": ", value.status().message()));
  }
  if (!value->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag ", AbslView(flag), " expects a JSON object"));
  }
  return absl::OkStatus();
}

// Prints a usage error as one line and returns kExitUsage.
int UsageError(std::string_view verb, const absl::Status& status,
               std::ostream& err) {
  err << "toolmesh " << verb << ": " << OneLine(status.message())
      << " (see toolmesh --help)\n";
  return kExitUsage;
}

// ---------------------------------------------------------------------------
// Connection and RPC errors.

class Connection {
 public:
  Connection(std::string address, std::string token,
             const std::shared_ptr<grpc::Channel>& channel,
             const RemoteContext& context)
      : address_(std::move(address)),
        token_(std::move(token)),
        context_(context),
        client_(v1::TaskService::NewStub(channel)) {}

  // A context for one unary call: token, deadline, no waiting for the
  // channel to connect.
  std::unique_ptr<grpc::ClientContext> Unary() const {
    auto ctx = Stream();
    ctx->set_deadline(std::chrono::system_clock::now() +
                      absl::ToChronoMilliseconds(context_.rpc_timeout));
    return ctx;
  }

  // A context for a WatchTask stream: like Unary() without a deadline (a
  // task may run for hours).
  std::unique_ptr<grpc::ClientContext> Stream() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_wait_for_ready(false);
    if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
    return ctx;
  }

  // Calls the unary RPC `method` with a context from Unary(). Blocks.
  template <typename Request, typename Response>
  grpc::Status Call(grpc::Status (TaskServiceClient::*method)(
                        grpc::ClientContext*, const Request&, Response*),
                    const Request& request, Response* response) {
    std::unique_ptr<grpc::ClientContext> ctx = Unary();
    return (client_.get()->*method)(ctx.get(), request, response);
  }

  // Opens a WatchTask stream on `ctx` (from Stream()).
  std::unique_ptr<grpc::ClientReader<v1::TaskEvent>> Watch(
      grpc::ClientContext* ctx, const v1::WatchTaskRequest& request) {
    return client_->WatchTask(ctx, request);
  }
  const std::string& address() const { return address_; }
  const RemoteContext& context() const { return context_; }

 private:
  std::string address_;
  std::string token_;
  const RemoteContext& context_;
  std::unique_ptr<TaskServiceClient> client_;
};

absl::StatusOr<std::unique_ptr<Connection>> Connect(
    const ParsedFlags& flags, const RemoteContext& context) {
  std::string address = flags.Get("--orchestrator", context.orchestrator);
  if (address.empty() || address.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flag --orchestrator expects HOST:PORT, got '", address, "'"));
  }
  std::string token = context.token;
  if (flags.Has("--token") && flags.Has("--token-file")) {
    return absl::InvalidArgumentError(
        "flags --token and --token-file exclude each other");
  }
  if (flags.Has("--token")) {
    token = flags.Get("--token");
  } else if (flags.Has("--token-file")) {
    absl::StatusOr<std::string> from_file =
        orchestrator::ReadTokenFile(flags.Get("--token-file"));
    if (!from_file.ok()) return from_file.status();
    token = *std::move(from_file);
  }
  orchestrator::ClientTlsOptions tls;
  tls.ca_path = flags.Get("--tls-ca", context.tls_ca);
  tls.cert_path = flags.Get("--tls-cert");
  tls.key_path = flags.Get("--tls-key");
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      orchestrator::MakeChannelCredentials(tls);
  if (!credentials.ok()) return credentials.status();
  int max_message_bytes = context.max_message_bytes;
  if (flags.Has("--max-message-bytes")) {
    absl::StatusOr<int> bytes = orchestrator::ParseMaxMessageBytes(
        "flag --max-message-bytes", flags.Get("--max-message-bytes"));
    if (!bytes.ok()) return bytes.status();
    max_message_bytes = *bytes;
  }
  grpc::ChannelArguments args;
  orchestrator::SetChannelMaxMessageBytes(max_message_bytes, args);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(address, *credentials, args);
  return std::make_unique<Connection>(std::move(address), std::move(token),
                                      channel, context);
}

// Prints one line for a failed RPC and returns the exit status. `what`
// names the operation ("submit", "cancel task_x"); `task_id` is the task
// the call was about, if any.
int RpcError(const grpc::Status& status, std::string_view what,
             std::string_view task_id, const Connection& connection,
             std::ostream& err) {
  const std::string message = OneLine(status.error_message());
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      err << "toolmesh: cannot reach orchestrator at " << connection.address()
          << ": " << message << "\n";
      return kExitFailed;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      err << "toolmesh: orchestrator at " << connection.address()
          << " did not answer " << what << " within "
          << absl::FormatDuration(connection.context().rpc_timeout) << "\n";
      return kExitFailed;
    case grpc::StatusCode::NOT_FOUND:
      if (!task_id.empty()) {
        err << "toolmesh: task " << task_id << " not found\n";
      } else {
        err << "toolmesh: " << what << ": not found: " << message << "\n";
      }
      return kExitFailed;
    case grpc::StatusCode::UNAUTHENTICATED:
      err << "toolmesh: orchestrator at " << connection.address()
          << " requires a client token (--token or TOOLMESH_CLIENT_TOKEN): "
          << message << "\n";
      return kExitFailed;
    case grpc::StatusCode::PERMISSION_DENIED:
      err << "toolmesh: orchestrator at " << connection.address()
          << " rejected the token: " << message << "\n";
      return kExitFailed;
    case grpc::StatusCode::INVALID_ARGUMENT:
      err << "toolmesh: " << what << ": invalid argument: " << message << "\n";
      return kExitUsage;
    default:
      err << "toolmesh: " << what << " failed: "
          << absl::StatusCodeToString(
                 static_cast<absl::StatusCode>(status.error_code()))
          << ": " << message << "\n";
      return kExitFailed;
  }
}

int ExitStatusOf(v1::TaskState state) {
  switch (state) {
    case v1::TASK_STATE_COMPLETED:
      return kExitOk;
    case v1::TASK_STATE_CANCELLED:
      return kExitCancelled;
    default:
      return kExitFailed;
  }
}

// ---------------------------------------------------------------------------
// Watching.

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void OnEvent(const v1::TaskEvent& event) = 0;
};

// --json: one object per event and line.
class JsonSink final : public EventSink {
 public:
  explicit JsonSink(std::ostream& out) : out_(out) {}
  void OnEvent(const v1::TaskEvent& event) override {
    out_ << common::DumpJson(EventToJson(event)) << "\n" << std::flush;
  }

 private:
  std::ostream& out_;
};

std::string Seconds(const google::protobuf::Duration& duration) {
  return absl::StrFormat("%.1fs",
                         static_cast<double>(DurationMillis(duration)) / 1000);
}

// "input_tokens=10 output_tokens=20" from a usage object's numbers.
std::string UsageSummary(const std::string& usage_json) {
  if (usage_json.empty()) return "";
  absl::StatusOr<Json> usage = common::ParseJson(usage_json);
  if (!usage.ok() || !usage->is_object()) return "";
  std::vector<std::string> parts;
  for (const auto& [key, value] : usage->items()) {
    if (value.is_number()) {
      parts.push_back(absl::StrCat(key, "=", common::DumpJson(value)));
    }
  }
  return absl::StrJoin(parts, " ");
}

std::string ErrorSummary(const v1::TaskError& error) {
  std::string text = error.type().empty() ? "error" : error.type();
  if (error.http_status() != 0) {
    absl::StrAppend(&text, " (HTTP ", error.http_status(), ")");
  }
  if (!error.message().empty()) {
    absl::StrAppend(&text, ": ", OneLine(error.message()));
  }
  return text;
}

// --watch: streamed text as it comes, one bracketed line per other event.
class RenderSink final : public EventSink {
 public:
  explicit RenderSink(std::ostream& out) : out_(out) {}

  void OnEvent(const v1::TaskEvent& event) override {
    switch (event.event_case()) {
      case v1::TaskEvent::kStateChanged: {
        const v1::TaskStateChanged& e = event.state_changed();
        // Terminal states are announced by the terminal event itself.
        if (e.state() == v1::TASK_STATE_COMPLETED ||
            e.state() == v1::TASK_STATE_FAILED ||
            e.state() == v1::TASK_STATE_CANCELLED) {
          break;
        }
        Line(absl::StrCat("[state] ", TaskStateName(e.state())));
        break;
      }
      case v1::TaskEvent::kTurnStarted: {
        const v1::TurnStarted& e = event.turn_started();
        Line(e.attempt() > 1 ? absl::StrCat("[turn ", e.turn(), " attempt ",
                                            e.attempt(), "]")
                             : absl::StrCat("[turn ", e.turn(), "]"));
        break;
      }
      case v1::TaskEvent::kTurnRetrying: {
        const v1::TurnRetrying& e = event.turn_retrying();
        std::string detail;
        if (e.http_status() != 0) {
          detail = absl::StrCat(" (HTTP ", e.http_status(),
                                e.message().empty() ? "" : ": ",
                                OneLine(e.message()), ")");
        } else if (!e.message().empty()) {
          detail = absl::StrCat(" (", OneLine(e.message()), ")");
        }
        Line(absl::StrCat("[retry] turn ", e.turn(), " attempt ", e.attempt(),
                          " failed: ", e.reason(), detail, "; retrying in ",
                          Seconds(e.delay()),
                          "; the output of that attempt above is void"));
        break;
      }
      case v1::TaskEvent::kTurnCompleted: {
        const v1::TurnCompleted& e = event.turn_completed();
        std::string usage = UsageSummary(e.usage_json());
        Line(absl::StrCat("[turn ", e.turn(), "] ", e.stop_reason(),
                          usage.empty() ? "" : " (", usage,
                          usage.empty() ? "" : ")"));
        break;
      }
      case v1::TaskEvent::kTextDelta: {
        const v1::TextDelta& e = event.text_delta();
        Delta({e.turn(), e.attempt(), e.block_index(), false}, e.text());
        break;
      }
      case v1::TaskEvent::kThinkingDelta: {
        const v1::ThinkingDelta& e = event.thinking_delta();
        Delta({e.turn(), e.attempt(), e.block_index(), true}, e.thinking());
        break;
      }
      case v1::TaskEvent::kToolTransition:
        Tool(event.tool_transition());
        break;
      case v1::TaskEvent::kTerminal:
        Terminal(event.terminal());
        break;
      case v1::TaskEvent::EVENT_NOT_SET:
        break;
    }
    out_ << std::flush;
  }

 private:
  struct Block {
    uint32_t turn;
    uint32_t attempt;
    uint32_t index;
    bool thinking;
    bool operator==(const Block&) const = default;
  };

  void Delta(const Block& block, const std::string& text) {
    if (text.empty()) return;
    if (!block_.has_value() || !(*block_ == block)) {
      EndLine();
      if (block.thinking) Write("[thinking] ");
      block_ = block;
    }
    Write(text);
  }

  void Tool(const v1::ToolTransition& e) {
    std::string line = absl::StrCat("[tool] ", e.name(), " ", e.tool_use_id(),
                                    " ", ToolCallStateName(e.state()));
    switch (e.state()) {
      case v1::TOOL_CALL_STATE_PENDING:
        if (e.kind() == v1::TOOL_KIND_SERVER) line += " (server tool)";
        break;
      case v1::TOOL_CALL_STATE_RUNNING:
        if (!e.worker_id().empty())
          absl::StrAppend(&line, " on ", e.worker_id());
        if (e.attempt() > 1)
          absl::StrAppend(&line, " (attempt ", e.attempt(), ")");
        break;
      case v1::TOOL_CALL_STATE_DONE:
        if (!e.result_json().empty()) {
          absl::StatusOr<Json> result = common::ParseJson(e.result_json());
          if (result.ok() && result->is_object()) {
            auto is_error = result->find("is_error");
            if (is_error != result->end() && is_error->is_boolean() &&
                is_error->get<bool>()) {
              line += " (the tool reported an error)";
            }
          }
        }
        break;
      case v1::TOOL_CALL_STATE_ERROR:
        absl::StrAppend(&line, " ", ToolErrorReasonName(e.reason()));
        if (!e.message().empty())
          absl::StrAppend(&line, ": ", OneLine(e.message()));
        break;
      default:
        break;
    }
    if (!e.input_json().empty()) {
      std::string input = e.input_json();
      absl::StatusOr<Json> parsed = common::ParseJson(input);
      if (parsed.ok()) input = common::DumpJson(*parsed);
      if (input.size() > kMaxInputPreview) {
        input = absl::StrCat(input.substr(0, kMaxInputPreview), "...");
      }
      absl::StrAppend(&line, " input ", OneLine(input));
    }
    Line(line);
  }

  void Terminal(const v1::TaskTerminal& e) {
    std::string line;
    switch (e.state()) {
      case v1::TASK_STATE_COMPLETED:
        line = absl::StrCat("[completed] stop_reason ",
                            e.stop_reason().empty() ? "-" : e.stop_reason());
        break;
      case v1::TASK_STATE_FAILED:
        line = absl::StrCat("[failed] ", e.has_error() ? ErrorSummary(e.error())
                                                       : std::string("error"));
        break;
      case v1::TASK_STATE_CANCELLED:
        line = "[cancelled]";
        if (e.has_error() && !e.error().message().empty()) {
          absl::StrAppend(&line, " ", OneLine(e.error().message()));
        }
        break;
      default:
        line = absl::StrCat("[ended] ", TaskStateName(e.state()));
        break;
    }
    std::string usage = UsageSummary(e.usage_json());
    if (!usage.empty()) absl::StrAppend(&line, "; usage ", usage);
    Line(line);
  }

  // Ends streamed text with a newline before a line of our own.
  void EndLine() {
    if (line_open_) Write("\n");
    block_.reset();
  }

  void Line(const std::string& line) {
    EndLine();
    Write(line);
    Write("\n");
  }

  void Write(const std::string& text) {
    if (text.empty()) return;
    out_ << text;
    line_open_ = text.back() != '\n';
  }

  std::ostream& out_;
  bool line_open_ = false;
  std::optional<Block> block_;
};

// Reads the task's events from after `after_seq` until its terminal event,
// resuming broken streams. `reached`: the orchestrator already answered in
// this run, so an UNAVAILABLE first attempt is a hiccup worth retrying
// rather than an unreachable address. Returns the exit status.
int WatchUntilTerminal(Connection& connection, const std::string& task_id,
                       uint64_t after_seq, bool reached, EventSink& sink,
                       std::ostream& err) {
  const RemoteContext& context = connection.context();
  common::SeededRandomSource random(
      static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())));
  common::BackoffOptions options;
  options.initial_delay = context.resume_initial_delay;
  options.max_delay =
      std::max(context.resume_max_delay, context.resume_initial_delay);
  absl::StatusOr<common::ExponentialBackoff> backoff =
      common::ExponentialBackoff::Create(options, random);
  if (!backoff.ok()) backoff = common::ExponentialBackoff(random);

  uint64_t last_seq = after_seq;
  int failures = 0;  // consecutive attempts without a new event
  while (true) {
    v1::WatchTaskRequest request;
    request.set_task_id(task_id);
    request.set_after_seq(last_seq);
    std::unique_ptr<grpc::ClientContext> ctx = connection.Stream();
    std::unique_ptr<grpc::ClientReader<v1::TaskEvent>> reader =
        connection.Watch(ctx.get(), request);
    v1::TaskEvent event;
    bool progress = false;
    std::optional<v1::TaskState> outcome;
    while (reader->Read(&event)) {
      // The contract promises no duplicates; a server that replays anyway
      // must not make us print an event twice.
      if (event.seq() <= last_seq) continue;
      last_seq = event.seq();
      progress = true;
      reached = true;
      sink.OnEvent(event);
      if (event.has_terminal()) {
        outcome = event.terminal().state();
        ctx->TryCancel();
        break;
      }
    }
    grpc::Status status = reader->Finish();
    if (outcome.has_value()) return ExitStatusOf(*outcome);

    const bool resumable =
        status.ok() || status.error_code() == grpc::StatusCode::UNAVAILABLE ||
        status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    if (!resumable || !reached) {
      if (status.ok()) {
        err << "toolmesh: the event stream of task " << task_id
            << " ended before the task did\n";
        return kExitFailed;
      }
      return RpcError(status, absl::StrCat("watch ", task_id), task_id,
                      connection, err);
    }
    failures = progress ? 1 : failures + 1;
    const std::string why =
        status.ok()
            ? std::string("the stream ended early")
            : absl::StrCat(
                  absl::StatusCodeToString(
                      static_cast<absl::StatusCode>(status.error_code())),
                  ": ", OneLine(status.error_message()));
    if (failures > context.max_watch_resumes) {
      err << "toolmesh: lost the event stream of task " << task_id << " ("
          << why << "); gave up after " << context.max_watch_resumes
          << " attempts to resume after seq " << last_seq << "\n";
      return kExitFailed;
    }
    absl::Duration delay = backoff->Delay(failures - 1);
    err << "toolmesh: event stream of task " << task_id << " broke (" << why
        << "); resuming after seq " << last_seq << " in "
        << absl::FormatDuration(delay) << "\n";
    absl::SleepFor(delay);
  }
}

// ---------------------------------------------------------------------------
// Verbs.

absl::StatusOr<std::string> ReadMessagesFile(const std::string& file,
                                             std::istream& in) {
  std::ostringstream buffer;
  if (file == "-") {
    buffer << in.rdbuf();
  } else {
    std::ifstream stream(file, std::ios::binary);
    if (!stream) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --messages: cannot open ", file));
    }
    buffer << stream.rdbuf();
    if (stream.bad()) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --messages: cannot read ", file));
    }
  }
  std::string text = buffer.str();
  absl::StatusOr<Json> value = common::ParseJson(text);
  if (!value.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flag --messages: ", file, ": ", value.status().message()));
  }
  if (!value->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flag --messages: ", file, " must hold a JSON array of messages"));
  }
  return text;
}

absl::StatusOr<v1::TaskSpec> BuildSpec(const ParsedFlags& flags,
                                       std::istream& in) {
  if (absl::Status s = NoPositional(flags); !s.ok()) return s;
  v1::TaskSpec spec;
  const bool has_prompt = flags.Has("--prompt");
  const bool has_messages = flags.Has("--messages");
  if (has_prompt == has_messages) {
    return absl::InvalidArgumentError(
        "give exactly one of --prompt TEXT and --messages FILE");
  }
  if (has_prompt) {
    spec.set_prompt(flags.Get("--prompt"));
  } else {
    absl::StatusOr<std::string> messages =
        ReadMessagesFile(flags.Get("--messages"), in);
    if (!messages.ok()) return messages.status();
    spec.set_messages_json(*std::move(messages));
  }
  spec.set_model(flags.Get("--model", kDefaultModel));
  if (spec.model().empty()) {
    return absl::InvalidArgumentError("flag --model expects a model id");
  }
  spec.set_max_tokens(kDefaultMaxTokens);
  if (flags.Has("--max-tokens")) {
    absl::StatusOr<uint32_t> n =
        ParseUint32("--max-tokens", flags.Get("--max-tokens"), true);
    if (!n.ok()) return n.status();
    spec.set_max_tokens(*n);
  }
  if (flags.Has("--max-turns")) {
    absl::StatusOr<uint32_t> n =
        ParseUint32("--max-turns", flags.Get("--max-turns"), false);
    if (!n.ok()) return n.status();
    spec.set_max_turns(*n);
  }
  if (flags.Has("--system")) spec.set_system_text(flags.Get("--system"));
  for (const std::string& name : flags.All("--tool")) {
    if (name.empty()) {
      return absl::InvalidArgumentError("flag --tool expects a tool name");
    }
    spec.add_client_tools(name);
  }
  spec.set_all_worker_tools(spec.client_tools().empty());
  for (const std::string& tool : flags.All("--server-tool")) {
    if (absl::Status s = CheckJsonObject("--server-tool", tool); !s.ok()) {
      return s;
    }
    spec.add_server_tools_json(tool);
  }
  if (flags.Has("--tool-choice")) {
    const std::string text = flags.Get("--tool-choice");
    if (absl::Status s = CheckJsonObject("--tool-choice", text); !s.ok()) {
      return s;
    }
    spec.set_tool_choice_json(text);
  }
  if (flags.Has("--thinking")) {
    const std::string text = flags.Get("--thinking");
    if (absl::Status s = CheckJsonObject("--thinking", text); !s.ok()) return s;
    spec.set_thinking_json(text);
  }
  if (flags.Has("--timeout")) {
    const std::string text = flags.Get("--timeout");
    absl::Duration timeout;
    if (!absl::ParseDuration(text, &timeout) ||
        timeout <= absl::ZeroDuration() ||
        timeout == absl::InfiniteDuration()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "flag --timeout expects a positive duration such as 90s or 1h30m, "
          "got '",
          text, "'"));
    }
    const int64_t seconds =
        absl::IDivDuration(timeout, absl::Seconds(1), &timeout);
    spec.mutable_timeout()->set_seconds(seconds);
    spec.mutable_timeout()->set_nanos(
        static_cast<int32_t>(absl::ToInt64Nanoseconds(timeout)));
  }
  spec.set_idempotency_key(flags.Get("--idempotency-key"));
  absl::StatusOr<std::map<std::string, std::string>> labels =
      ParseLabels(flags);
  if (!labels.ok()) return labels.status();
  for (const auto& [key, value] : *labels)
    (*spec.mutable_labels())[key] = value;
  return spec;
}

int Submit(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err, const RemoteContext& context) {
  constexpr std::string_view kVerb = "submit";
  absl::StatusOr<ParsedFlags> flags =
      ParseFlags(args, {{"--prompt", true, false},
                        {"--messages", true, false},
                        {"--tool", true, true},
                        {"--server-tool", true, true},
                        {"--model", true, false},
                        {"--max-tokens", true, false},
                        {"--max-turns", true, false},
                        {"--system", true, false},
                        {"--timeout", true, false},
                        {"--idempotency-key", true, false},
                        {"--label", true, true},
                        {"--tool-choice", true, false},
                        {"--thinking", true, false},
                        {"--watch", false, false},
                        {"--json", false, false}});
  if (!flags.ok()) return UsageError(kVerb, flags.status(), err);
  absl::StatusOr<v1::TaskSpec> spec = BuildSpec(*flags, *context.in);
  if (!spec.ok()) return UsageError(kVerb, spec.status(), err);
  absl::StatusOr<std::unique_ptr<Connection>> connection =
      Connect(*flags, context);
  if (!connection.ok()) return UsageError(kVerb, connection.status(), err);

  v1::SubmitTaskRequest request;
  *request.mutable_spec() = *std::move(spec);
  v1::SubmitTaskResponse response;
  grpc::Status status =
      (*connection)->Call(&TaskServiceClient::SubmitTask, request, &response);
  if (!status.ok()) return RpcError(status, kVerb, "", **connection, err);
  if (!response.created()) {
    err << "toolmesh: the idempotency key matched task " << response.task_id()
        << "; no new task was created\n";
  }
  if (flags->Has("--json")) {
    JsonSink sink(out);
    return WatchUntilTerminal(**connection, response.task_id(), 0,
                              /*reached=*/true, sink, err);
  }
  if (flags->Has("--watch")) {
    out << "[task] " << response.task_id() << "\n" << std::flush;
    RenderSink sink(out);
    return WatchUntilTerminal(**connection, response.task_id(), 0,
                              /*reached=*/true, sink, err);
  }
  out << response.task_id() << "\n";
  return kExitOk;
}

int Watch(const std::vector<std::string>& args, std::ostream& out,
          std::ostream& err, const RemoteContext& context) {
  constexpr std::string_view kVerb = "watch";
  absl::StatusOr<ParsedFlags> flags =
      ParseFlags(args, {{"--after", true, false}, {"--json", false, false}});
  if (!flags.ok()) return UsageError(kVerb, flags.status(), err);
  absl::StatusOr<std::string> task_id = TaskIdArgument(*flags);
  if (!task_id.ok()) return UsageError(kVerb, task_id.status(), err);
  uint64_t after = 0;
  if (flags->Has("--after")) {
    const std::string text = flags->Get("--after");
    if (!absl::SimpleAtoi(text, &after) || text.empty() || text[0] == '+' ||
        text[0] == '-') {
      return UsageError(
          kVerb,
          absl::InvalidArgumentError(absl::StrCat(
              "flag --after expects a sequence number, got '", text, "'")),
          err);
    }
  }
  absl::StatusOr<std::unique_ptr<Connection>> connection =
      Connect(*flags, context);
  if (!connection.ok()) return UsageError(kVerb, connection.status(), err);
  if (flags->Has("--json")) {
    JsonSink sink(out);
    return WatchUntilTerminal(**connection, *task_id, after,
                              /*reached=*/false, sink, err);
  }
  RenderSink sink(out);
  return WatchUntilTerminal(**connection, *task_id, after, /*reached=*/false,
                            sink, err);
}

// The text blocks of a Message JSON text, joined by newlines.
std::string MessageText(const std::string& message_json) {
  if (message_json.empty()) return "";
  absl::StatusOr<Json> message = common::ParseJson(message_json);
  if (!message.ok() || !message->is_object()) return "";
  auto content = message->find("content");
  if (content == message->end() || !content->is_array()) return "";
  std::vector<std::string> texts;
  for (const Json& block : *content) {
    if (block.is_object() && common::GetString(block, "type") == "text") {
      texts.emplace_back(common::GetString(block, "text"));
    }
  }
  return absl::StrJoin(texts, "\n");
}

// Prints `rows` (the first one the header) with left-aligned columns.
void PrintTable(const std::vector<std::vector<std::string>>& rows,
                std::ostream& out) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (std::size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

int Get(const std::vector<std::string>& args, std::ostream& out,
        std::ostream& err, const RemoteContext& context) {
  constexpr std::string_view kVerb = "get";
  absl::StatusOr<ParsedFlags> flags =
      ParseFlags(args, {{"--json", false, false}});
  if (!flags.ok()) return UsageError(kVerb, flags.status(), err);
  absl::StatusOr<std::string> task_id = TaskIdArgument(*flags);
  if (!task_id.ok()) return UsageError(kVerb, task_id.status(), err);
  absl::StatusOr<std::unique_ptr<Connection>> connection =
      Connect(*flags, context);
  if (!connection.ok()) return UsageError(kVerb, connection.status(), err);

  v1::GetTaskRequest request;
  request.set_task_id(*task_id);
  v1::GetTaskResponse response;
  grpc::Status status =
      (*connection)->Call(&TaskServiceClient::GetTask, request, &response);
  if (!status.ok()) {
    return RpcError(status, absl::StrCat("get ", *task_id), *task_id,
                    **connection, err);
  }
  const v1::Task& task = response.task();
  if (flags->Has("--json")) {
    out << common::DumpJsonPretty(TaskToJson(task)) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"task", task.task_id()},
      {"state", TaskStateName(task.state())},
      {"model", task.spec().model()},
      {"turns", absl::StrCat(task.turns())},
      {"stop_reason", task.stop_reason().empty() ? "-" : task.stop_reason()},
  };
  if (task.has_created_at())
    rows.push_back({"created", Rfc3339(task.created_at())});
  if (task.has_finished_at()) {
    rows.push_back({"finished", Rfc3339(task.finished_at())});
  }
  if (task.has_error()) rows.push_back({"error", ErrorSummary(task.error())});
  std::string usage = UsageSummary(task.usage_json());
  if (!usage.empty()) rows.push_back({"usage", usage});
  if (!task.spec().labels().empty()) {
    std::map<std::string, std::string> labels(task.spec().labels().begin(),
                                              task.spec().labels().end());
    rows.push_back(
        {"labels", absl::StrJoin(labels, " ", absl::PairFormatter("="))});
  }
  PrintTable(rows, out);
  std::string text = MessageText(task.final_message_json());
  if (!text.empty()) out << "\n" << text << "\n";
  return kExitOk;
}

int Cancel(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err, const RemoteContext& context) {
  constexpr std::string_view kVerb = "cancel";
  absl::StatusOr<ParsedFlags> flags =
      ParseFlags(args, {{"--reason", true, false}});
  if (!flags.ok()) return UsageError(kVerb, flags.status(), err);
  absl::StatusOr<std::string> task_id = TaskIdArgument(*flags);
  if (!task_id.ok()) return UsageError(kVerb, task_id.status(), err);
  absl::StatusOr<std::unique_ptr<Connection>> connection =
      Connect(*flags, context);
  if (!connection.ok()) return UsageError(kVerb, connection.status(), err);

  v1::CancelTaskRequest request;
  request.set_task_id(*task_id);
  request.set_reason(flags->Get("--reason"));
  v1::CancelTaskResponse response;
  grpc::Status status =
      (*connection)->Call(&TaskServiceClient::CancelTask, request, &response);
  if (!status.ok()) {
    return RpcError(status, absl::StrCat("cancel ", *task_id), *task_id,
                    **connection, err);
  }
  out << (response.task().task_id().empty() ? *task_id
                                            : response.task().task_id())
      << " " << TaskStateName(response.task().state()) << "\n";
  return kExitOk;
}

absl::StatusOr<v1::TaskState> ParseState(std::string_view text) {
  const std::string name = absl::AsciiStrToLower(AbslView(text));
  for (v1::TaskState state :
       {v1::TASK_STATE_QUEUED, v1::TASK_STATE_RUNNING,
        v1::TASK_STATE_CANCELLING, v1::TASK_STATE_COMPLETED,
        v1::TASK_STATE_FAILED, v1::TASK_STATE_CANCELLED}) {
    if (TaskStateName(state) == name) return state;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "flag --state expects one of queued, running, cancelling, completed, "
      "failed, cancelled, got '",
      AbslView(text), "'"));
}

int List(const std::vector<std::string>& args, std::ostream& out,
         std::ostream& err, const RemoteContext& context) {
  constexpr std::string_view kVerb = "list";
  absl::StatusOr<ParsedFlags> flags =
      ParseFlags(args, {{"--state", true, true},
                        {"--label", true, true},
                        {"--limit", true, false},
                        {"--json", false, false}});
  if (!flags.ok()) return UsageError(kVerb, flags.status(), err);
  if (absl::Status s = NoPositional(*flags); !s.ok()) {
    return UsageError(kVerb, s, err);
  }
  v1::ListTasksRequest request;
  for (const std::string& value : flags->All("--state")) {
    for (absl::string_view part :
         absl::StrSplit(value, ',', absl::SkipEmpty())) {
      absl::StatusOr<v1::TaskState> state =
          ParseState(std::string_view(part.data(), part.size()));
      if (!state.ok()) return UsageError(kVerb, state.status(), err);
      request.add_states(*state);
    }
  }
  absl::StatusOr<std::map<std::string, std::string>> labels =
      ParseLabels(*flags);
  if (!labels.ok()) return UsageError(kVerb, labels.status(), err);
  for (const auto& [key, value] : *labels) {
    (*request.mutable_label_selector())[key] = value;
  }
  uint32_t limit = kDefaultListLimit;
  if (flags->Has("--limit")) {
    absl::StatusOr<uint32_t> n =
        ParseUint32("--limit", flags->Get("--limit"), true);
    if (!n.ok()) return UsageError(kVerb, n.status(), err);
    limit = *n;
  }
  absl::StatusOr<std::unique_ptr<Connection>> connection =
      Connect(*flags, context);
  if (!connection.ok()) return UsageError(kVerb, connection.status(), err);

  std::vector<v1::Task> tasks;
  while (tasks.size() < limit) {
    request.set_page_size(std::min<uint32_t>(
        kMaxPageSize, limit - static_cast<uint32_t>(tasks.size())));
    v1::ListTasksResponse response;
    grpc::Status status =
        (*connection)->Call(&TaskServiceClient::ListTasks, request, &response);
    if (!status.ok()) return RpcError(status, kVerb, "", **connection, err);
    for (const v1::Task& task : response.tasks()) {
      if (tasks.size() < limit) tasks.push_back(task);
    }
    // An empty page with a token would otherwise loop for ever.
    if (response.next_page_token().empty() || response.tasks().empty()) break;
    request.set_page_token(response.next_page_token());
  }
  if (flags->Has("--json")) {
    Json array = Json::array();
    for (const v1::Task& task : tasks) array.push_back(TaskToJson(task));
    out << common::DumpJsonPretty(array) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATE", "TURNS", "STOP_REASON", "CREATED"}};
  for (const v1::Task& task : tasks) {
    rows.push_back({task.task_id(), TaskStateName(task.state()),
                    absl::StrCat(task.turns()),
                    task.stop_reason().empty() ? "-" : task.stop_reason(),
                    task.has_created_at() ? Rfc3339(task.created_at()) : "-"});
  }
  PrintTable(rows, out);
  return kExitOk;
}

int Workers(const std::vector<std::string>& args, std::ostream& out,
            std::ostream& err, const RemoteContext& context) {
  constexpr std::string_view kVerb = "workers";
  absl::StatusOr<ParsedFlags> flags =
      ParseFlags(args, {{"--json", false, false}});
  if (!flags.ok()) return UsageError(kVerb, flags.status(), err);
  if (absl::Status s = NoPositional(*flags); !s.ok()) {
    return UsageError(kVerb, s, err);
  }
  absl::StatusOr<std::unique_ptr<Connection>> connection =
      Connect(*flags, context);
  if (!connection.ok()) return UsageError(kVerb, connection.status(), err);

  v1::ListWorkersResponse response;
  grpc::Status status = (*connection)
                            ->Call(&TaskServiceClient::ListWorkers,
                                   v1::ListWorkersRequest(), &response);
  if (!status.ok()) return RpcError(status, kVerb, "", **connection, err);
  if (flags->Has("--json")) {
    Json array = Json::array();
    for (const v1::WorkerInfo& worker : response.workers()) {
      array.push_back(WorkerToJson(worker));
    }
    out << common::DumpJsonPretty(array) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "TOOLS", "SLOTS", "RUNNING", "DRAINING", "LAST_HEARTBEAT"}};
  for (const v1::WorkerInfo& worker : response.workers()) {
    rows.push_back(
        {worker.worker_id(),
         worker.tools().empty() ? "-" : absl::StrJoin(worker.tools(), ","),
         absl::StrCat(worker.slots()), absl::StrCat(worker.running_calls()),
         worker.draining() ? "yes" : "no",
         worker.has_last_heartbeat_at() ? Rfc3339(worker.last_heartbeat_at())
                                        : "-"});
  }
  PrintTable(rows, out);
  return kExitOk;
}

bool IsGlobalFlag(const std::string& arg, bool* takes_next) {
  for (const FlagSpec& spec : kGlobalFlags) {
    if (arg == spec.name) {
      *takes_next = true;
      return true;
    }
    if (arg.size() > spec.name.size() &&
        arg.compare(0, spec.name.size(), spec.name) == 0 &&
        arg[spec.name.size()] == '=') {
      *takes_next = false;
      return true;
    }
  }
  return false;
}

}  // namespace

RemoteContext RemoteContext::FromEnvironment() {
  return FromLookup([](const char* name) { return std::getenv(name); });
}

RemoteContext RemoteContext::FromLookup(
    absl::FunctionRef<const char*(const char*)> getenv) {
  RemoteContext context;
  if (const char* value = getenv("TOOLMESH_ORCHESTRATOR");
      value != nullptr && *value != '\0') {
    context.orchestrator = value;
  }
  if (const char* value = getenv("TOOLMESH_CLIENT_TOKEN");
      value != nullptr && *value != '\0') {
    context.token = value;
  }
  if (const char* value = getenv("TOOLMESH_TLS_CA");
      value != nullptr && *value != '\0') {
    context.tls_ca = value;
  }
  return context;
}

bool IsRemoteVerb(std::string_view verb) {
  return verb == "submit" || verb == "watch" || verb == "get" ||
         verb == "cancel" || verb == "list" || verb == "workers";
}

absl::StatusOr<std::vector<std::string>> HoistGlobalFlags(
    const std::vector<std::string>& argv, std::size_t* moved) {
  std::vector<std::string> globals;
  std::size_t i = 0;
  bool takes_next = false;
  while (i < argv.size() && IsGlobalFlag(argv[i], &takes_next)) {
    globals.push_back(argv[i]);
    if (takes_next) {
      if (i + 1 >= argv.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag ", argv[i], " needs a value"));
      }
      globals.push_back(argv[i + 1]);
      ++i;
    }
    ++i;
  }
  if (i >= argv.size()) return absl::InvalidArgumentError("missing COMMAND");
  if (moved != nullptr) *moved = globals.size();
  std::vector<std::string> result = {argv[i]};
  result.insert(result.end(), globals.begin(), globals.end());
  result.insert(result.end(), argv.begin() + static_cast<long>(i) + 1,
                argv.end());
  return result;
}

int RunRemoteCommand(std::string_view verb,
                     const std::vector<std::string>& args, std::ostream& out,
                     std::ostream& err, const RemoteContext& context) {
  if (verb == "submit") return RunSubmit(args, out, err, context);
  if (verb == "watch") return RunWatch(args, out, err, context);
  if (verb == "get") return RunGet(args, out, err, context);
  if (verb == "cancel") return RunCancel(args, out, err, context);
  if (verb == "list") return RunList(args, out, err, context);
  if (verb == "workers") return RunWorkers(args, out, err, context);
  err << "toolmesh: unknown command '" << verb << "' (see toolmesh --help)\n";
  return kExitUsage;
}

int RunSubmit(const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err, const RemoteContext& context) {
  return Submit(args, out, err, context);
}

int RunWatch(const std::vector<std::string>& args, std::ostream& out,
             std::ostream& err, const RemoteContext& context) {
  return Watch(args, out, err, context);
}

int RunGet(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err, const RemoteContext& context) {
  return Get(args, out, err, context);
}

int RunCancel(const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err, const RemoteContext& context) {
  return Cancel(args, out, err, context);
}

int RunList(const std::vector<std::string>& args, std::ostream& out,
            std::ostream& err, const RemoteContext& context) {
  return List(args, out, err, context);
}

int RunWorkers(const std::vector<std::string>& args, std::ostream& out,
               std::ostream& err, const RemoteContext& context) {
  return Workers(args, out, err, context);
}

}  // namespace toolmesh::cli
