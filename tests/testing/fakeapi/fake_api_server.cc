#include "tests/testing/fakeapi/fake_api_server.h"

#include <httplib.h>

#include <algorithm>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/messages.h"
#include "common/request_validator.h"
#include "common/stream_accumulator.h"
#include "tests/testing/fakeapi/rule_model.h"

namespace toolmesh::fakeapi {
namespace {

// Compressible content types are compressed by httplib when the client
// accepts it; "text/event-stream" exactly is exempt, which keeps the stream
// byte-exact for the cut and drip faults.
constexpr char kSseContentType[] = "text/event-stream";
constexpr char kJsonContentType[] = "application/json";

int StatusForErrorType(std::string_view type) {
  if (type == "invalid_request_error") return 400;
  if (type == "authentication_error") return 401;
  if (type == "billing_error") return 402;
  if (type == "permission_error") return 403;
  if (type == "not_found_error") return 404;
  if (type == "request_too_large") return 413;
  if (type == "rate_limit_error") return 429;
  if (type == "timeout_error") return 504;
  if (type == "overloaded_error") return 529;
  return 500;
}

std::string_view IdPrefixFor(std::string_view type) {
  if (type == "server_tool_use") return "srvtoolu_";
  if (type == "mcp_tool_use") return "mcptoolu_";
  return "toolu_";
}

Json ServerCallInput(std::string_view tool) {
  if (tool == "web_fetch") return Json{{"url", "https://example.com/fake"}};
  if (tool == "web_search") return Json{{"query", "fake api search"}};
  return Json{{"code", "print('fake')"}};
}


// Decodes recorded events into the message they build, if they build one.
absl::StatusOr<Json> DecodeEvents(const std::vector<std::string>& events) {
  common::StreamAccumulator accumulator;
  for (const std::string& event : events) {
    absl::Status status = accumulator.Feed(event);
    if (!status.ok()) break;
  }
  (void)accumulator.Finish();
  return accumulator.FinalMessage();
}

}  // namespace

struct FakeApiServer::Choice {
  std::optional<HttpReply> http;  // answer with this instead of a message
  std::optional<Fault> fault;     // the fault applied, if any
  std::vector<std::string> events;
};

FakeApiServer::FakeApiServer(FakeApiOptions options)
    : options_(std::move(options)),
      ids_(options_.seed),
      fault_rng_(options_.seed ^ 0x6661756c74ULL) {
  absl::MutexLock lock(&mu_);
  if (options_.scenario) used_.assign(options_.scenario->responses.size(), false);
  absl::MutexLock log_lock(&log_mu_);
  stats_ = Json::object();
}

FakeApiServer::~FakeApiServer() {
  Stop();
  absl::MutexLock lock(&log_mu_);
  if (log_file_ != nullptr) std::fclose(log_file_);
}

std::string FakeApiServer::base_url() const {
  return absl::StrCat("http://", options_.host, ":", port_);
}

absl::Status FakeApiServer::Start() {
  if (started_) return absl::FailedPreconditionError("already started");
  if (!options_.log_path.empty()) {
    absl::MutexLock lock(&log_mu_);
    log_file_ = std::fopen(options_.log_path.c_str(), "a");
    if (log_file_ == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("cannot open log file ", options_.log_path));
    }
  }
  server_ = std::make_unique<httplib::Server>();
  const int threads = std::max(1, options_.threads);
  server_->new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<std::size_t>(threads));
  };
  server_->set_keep_alive_max_count(1u << 30);
  server_->set_keep_alive_timeout(2);
  server_->set_tcp_nodelay(true);
  server_->set_payload_max_length(32u << 20);
  server_->Post("/v1/messages",
                [this](const httplib::Request& req, httplib::Response& res) {
                  HandleMessages(req, res);
                });
  server_->Get("/_fake/requests",
               [this](const httplib::Request&, httplib::Response& res) {
                 res.set_content(common::DumpJson(RequestLog()),
                                 kJsonContentType);
               });
  server_->Get("/_fake/stats",
               [this](const httplib::Request&, httplib::Response& res) {
                 res.set_content(common::DumpJson(Stats()), kJsonContentType);
               });
  server_->Post("/_fake/reset",
                [this](const httplib::Request&, httplib::Response& res) {
                  {
                    absl::MutexLock lock(&mu_);
                    std::fill(used_.begin(), used_.end(), false);
                    names_.clear();
                    pending_.clear();
                    ids_ = IdSource(options_.seed);
                    fault_rng_ = IdSource(options_.seed ^ 0x6661756c74ULL);
                  }
                  {
                    absl::MutexLock lock(&log_mu_);
                    log_.clear();
                    stats_ = Json::object();
                  }
                  res.set_content("{}", kJsonContentType);
                });
  server_->set_error_handler([](const httplib::Request& req,
                                httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string_view type = ErrorTypeForStatus(res.status);
    std::string message = res.status == 404
                              ? absl::StrCat("Not found: ", req.path)
                              : std::string(type);
    res.set_content(common::DumpJson(ErrorBody(type, message, "")),
                    kJsonContentType);
  });
  int port = options_.port;
  if (port == 0) {
    port = server_->bind_to_any_port(options_.host);
  } else if (!server_->bind_to_port(options_.host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options_.host, ":", options_.port));
  }
  port_ = port;
  started_ = true;
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // cpp-httplib's stop() does nothing until the listen loop has marked the
  // server running, so a Stop() right after Start() would hang on join.
  // Start() returns only once the loop runs (it sets the flag first thing).
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (!server_->is_running()) {
    if (absl::Now() > give_up) {
      return absl::InternalError("the HTTP server thread did not start");
    }
    std::this_thread::yield();
  }
  return absl::OkStatus();
}

void FakeApiServer::Stop() {
  if (!started_) return;
  {
    absl::MutexLock lock(&stop_mu_);
    stopping_ = true;
  }
  server_->stop();
  if (thread_.joinable()) thread_.join();
  started_ = false;
}

bool FakeApiServer::Sleep(int ms) {
  absl::MutexLock lock(&stop_mu_);
  stop_mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(ms));
  return !stopping_;
}

Json FakeApiServer::RequestLog() const {
  absl::MutexLock lock(&log_mu_);
  Json out = Json::array();
  for (const Json& entry : log_) out.push_back(entry);
  return out;
}

Json FakeApiServer::Stats() const {
  absl::MutexLock lock(&log_mu_);
  Json out = Json::object();
  for (const char* key : {"requests", "rejected_400", "rejected_401",
                          "unmatched", "faults_injected"}) {
    out[key] = stats_.contains(key) ? stats_[key] : Json(0);
  }
  out["by_status"] =
      stats_.contains("by_status") ? stats_["by_status"] : Json::object();
  out["faults"] = stats_.contains("faults") ? stats_["faults"] : Json::object();
  return out;
}

void FakeApiServer::Record(Json entry, bool validation_reject) {
  absl::MutexLock lock(&log_mu_);
  auto bump = [](Json& object, const std::string& key) {
    if (!object.contains(key)) object[key] = 0;
    object[key] = object[key].get<std::int64_t>() + 1;
  };
  bump(stats_, "requests");
  if (!stats_.contains("by_status")) stats_["by_status"] = Json::object();
  if (!stats_.contains("faults")) stats_["faults"] = Json::object();
  const int status = entry["status"].get<int>();
  bump(stats_["by_status"], std::to_string(status));
  if (validation_reject && status == 400) bump(stats_, "rejected_400");
  if (status == 401) bump(stats_, "rejected_401");
  if (entry.contains("unmatched")) bump(stats_, "unmatched");
  if (entry["fault"].is_string()) {
    bump(stats_, "faults_injected");
    bump(stats_["faults"], entry["fault"].get<std::string>());
  }
  entry["seq"] = stats_["requests"];
  if (log_file_ != nullptr) {
    std::string line = common::DumpJson(entry);
    line.push_back('\n');
    std::fwrite(line.data(), 1, line.size(), log_file_);
    std::fflush(log_file_);
  }
  log_.push_back(std::move(entry));
  while (log_.size() > options_.max_log_entries) log_.pop_front();
}

std::string FakeApiServer::ResolveNameLocked(const std::string& name,
                                             std::string_view prefix) {
  auto [it, inserted] = names_.try_emplace(name);
  if (inserted) it->second = ids_.NextId(prefix);
  return it->second;
}

Json FakeApiServer::ResolveBlocksLocked(const Json& blocks) {
  Json out = Json::array();
  for (const Json& spec : blocks) {
    Json block = spec;
    std::string_view type = common::GetString(block, "type");
    if (common::StreamsToolInput(type)) {
      std::string id(common::GetString(block, "id"));
      if (id.empty()) {
        id = ids_.NextId(IdPrefixFor(type));
      } else if (id.front() == '$') {
        id = ResolveNameLocked(id, IdPrefixFor(type));
      }
      block["id"] = id;
      if (!block.contains("input")) block["input"] = Json::object();
    } else if (common::ClassifyBlockType(type) ==
               common::BlockKind::kServerToolResult) {
      std::string id(common::GetString(block, "tool_use_id"));
      if (!id.empty() && id.front() == '$') {
        block["tool_use_id"] = ResolveNameLocked(id, "srvtoolu_");
      }
    } else if (type == "thinking" && !block.contains("signature")) {
      block["signature"] = absl::StrCat("fakesig", ids_.NextId("").substr(2));
    }
    out.push_back(std::move(block));
  }
  return out;
}

void FakeApiServer::ApplyMessageFaultLocked(const Fault& fault,
                                            MessageSpec& spec,
                                            std::string& fault_note) {
  Json& content = spec.content;
  switch (fault.kind) {
    case FaultKind::kMaxTokens:
      spec.truncate = true;
      return;
    case FaultKind::kPauseTurn: {
      // A response that leaves a client tool waiting is never pause_turn.
      Json kept = Json::array();
      for (Json& block : content) {
        if (common::GetString(block, "type") != "tool_use") {
          kept.push_back(std::move(block));
        }
      }
      content = std::move(kept);
      bool has_text = false;
      for (const Json& block : content) {
        has_text |= common::GetString(block, "type") == "text";
      }
      if (!has_text) {
        content.push_back(
            Json{{"type", "text"}, {"text", "Let me look that up."}});
      }
      std::string id = ids_.NextId("srvtoolu_");
      content.push_back(Json{{"type", "server_tool_use"},
                             {"id", id},
                             {"name", fault.server_tool},
                             {"input", ServerCallInput(fault.server_tool)}});
      spec.stop_reason = "pause_turn";
      pending_[id] = Pending{FakeServerToolResult(fault.server_tool, id), false};
      return;
    }
    case FaultKind::kDeferredServerCall:
    case FaultKind::kRepeatServerResult: {
      int at = TrailingToolUseStart(content);
      if (at < 0) {
        fault_note = "not applied: the response has no client tool_use";
        return;
      }
      std::string id = ids_.NextId("srvtoolu_");
      Json result = FakeServerToolResult(fault.server_tool, id);
      Json inserted = Json::array();
      inserted.push_back(Json{{"type", "server_tool_use"},
                              {"id", id},
                              {"name", fault.server_tool},
                              {"input", ServerCallInput(fault.server_tool)}});
      const bool repeat = fault.kind == FaultKind::kRepeatServerResult;
      if (repeat) inserted.push_back(result);
      content.insert(content.begin() + at, inserted.begin(), inserted.end());
      spec.stop_reason = "tool_use";
      pending_[id] = Pending{std::move(result), repeat};
      return;
    }
    default:
      return;
  }
}

void FakeApiServer::Choose(const Json& body, bool stream,
                           const std::string& request_id, Choice& choice,
                           Json& entry) {
  absl::MutexLock lock(&mu_);
  const Scenario* scenario =
      options_.scenario ? &*options_.scenario : nullptr;
  const ScenarioResponse* picked = nullptr;
  if (scenario != nullptr) {
    auto resolve = [this](const std::string& name) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      auto it = names_.find(name);
      return it == names_.end() ? std::string() : it->second;
    };
    for (const ScenarioResponse& response : scenario->responses) {
      const auto i = static_cast<std::size_t>(response.index);
      if (used_[i] && !response.repeat) continue;
      if (!Matches(response.match, body, stream, resolve)) continue;
      picked = &response;
      used_[i] = true;
      break;
    }
    if (picked == nullptr && !scenario->fallback_to_model) {
      std::string message = absl::StrCat(
          "fake API: no scenario response left that matches this request "
          "(turn ",
          TurnOf(body), ")");
      choice.http = HttpReply{500, {}, ErrorBody("api_error", message,
                                                 request_id)};
      entry["response"] = nullptr;
      entry["unmatched"] = true;
      return;
    }
  }
  if (picked != nullptr) {
    Json response = {{"source", "scenario"}, {"index", picked->index}};
    if (!picked->name.empty()) response["name"] = picked->name;
    entry["response"] = std::move(response);
  } else {
    entry["response"] = {{"source", "model"}};
  }

  std::optional<Fault> fault;
  if (picked != nullptr && picked->fault) {
    fault = picked->fault;
  } else if (options_.fault_rate > 0 && !options_.random_faults.empty() &&
             fault_rng_.UniformDouble() < options_.fault_rate) {
    fault = options_.random_faults[fault_rng_.Uniform(
        options_.random_faults.size())];
  }
  if (fault && fault->is_http()) {
    choice.http = HttpFaultReply(*fault, request_id);
    choice.fault = fault;
    return;
  }

  MessageSpec spec;
  spec.id = ids_.NextId("msg_");
  spec.model = std::string(common::GetString(body, "model"));
  // About four bytes a token, counted over what the model reads (so the
  // same conversation costs the same streamed or not).
  std::size_t prompt_bytes = 0;
  for (const char* key : {"system", "messages", "tools"}) {
    if (auto it = body.find(key); it != body.end()) {
      prompt_bytes += common::DumpJson(*it).size();
    }
  }
  spec.input_tokens = std::max<std::int64_t>(
      1, static_cast<std::int64_t>(prompt_bytes / 4));
  spec.padding_seed = ids_.Next();
  bool have_spec = true;
  std::vector<std::string> recorded;
  if (picked != nullptr &&
      picked->source == ScenarioResponse::Source::kSseFile) {
    recorded = SplitSseEvents(picked->sse_bytes);
    have_spec = false;
  } else if (picked != nullptr &&
             picked->source == ScenarioResponse::Source::kBlocks) {
    spec.content = ResolveBlocksLocked(picked->blocks);
    spec.stop_reason = picked->stop_reason;
    spec.stop_details = picked->stop_details;
    spec.usage = picked->usage;
  } else {
    ModelReply reply = RuleModelRespond(body, options_.seed);
    spec.content = ResolveBlocksLocked(reply.blocks);
    spec.stop_reason = reply.stop_reason;
  }

  // Results owed from earlier responses open this one, as the API does.
  std::vector<std::string> call_ids;
  std::vector<std::string> result_ids;
  if (auto messages = body.find("messages");
      messages != body.end() && messages->is_array()) {
    for (const Json& message : *messages) {
      auto content = message.is_object() ? message.find("content")
                                         : message.end();
      if (!message.is_object() || content == message.end() ||
          !content->is_array()) {
        continue;
      }
      for (const Json& block : *content) {
        switch (common::ClassifyBlock(block)) {
          case common::BlockKind::kServerToolCall:
            call_ids.emplace_back(common::GetString(block, "id"));
            break;
          case common::BlockKind::kServerToolResult:
            result_ids.emplace_back(common::GetString(block, "tool_use_id"));
            break;
          default:
            break;
        }
      }
    }
  }
  Json owed = Json::array();
  for (const std::string& id : call_ids) {
    auto it = pending_.find(id);
    if (it == pending_.end()) continue;
    const bool resolved =
        std::find(result_ids.begin(), result_ids.end(), id) != result_ids.end();
    if (resolved != it->second.repeat) continue;
    owed.push_back(std::move(it->second.result));
    pending_.erase(it);
  }

  std::string fault_note;
  const bool message_fault = fault && fault->is_message_fault();
  if (!have_spec && (!owed.empty() || message_fault)) {
    // Re-render the recorded message so it can be changed.
    auto message = DecodeEvents(recorded);
    if (message.ok()) {
      spec.id = std::string(common::GetString(*message, "id"));
      spec.model = std::string(common::GetString(*message, "model"));
      spec.content = (*message)["content"];
      spec.stop_reason = std::string(common::GetString(*message, "stop_reason"));
      if (message->contains("stop_details")) {
        spec.stop_details = (*message)["stop_details"];
      }
      if (message->contains("usage")) spec.usage = (*message)["usage"];
      have_spec = true;
    } else {
      fault_note = "not applied: the recorded stream does not complete";
    }
  }
  if (have_spec) {
    Json content = Json::array();
    for (Json& result : owed) {
      if (!HasServerResultFor(spec.content,
                        common::GetString(result, "tool_use_id"))) {
        content.push_back(std::move(result));
      }
    }
    for (Json& block : spec.content) content.push_back(std::move(block));
    spec.content = std::move(content);
    if (message_fault) ApplyMessageFaultLocked(*fault, spec, fault_note);
    choice.events = RenderMessageStream(spec);
  } else {
    choice.events = std::move(recorded);
  }
  if (fault) choice.fault = fault;
  if (!fault_note.empty()) entry["fault_note"] = fault_note;
}

void FakeApiServer::HandleMessages(const httplib::Request& req,
                                   httplib::Response& res) {
  std::string request_id;
  {
    absl::MutexLock lock(&mu_);
    request_id = ids_.NextId("req_");
    ++request_count_;
  }
  Json entry = Json::object();
  entry["request_id"] = request_id;
  entry["method"] = req.method;
  entry["path"] = req.path;
  Json headers = Json::object();
  for (const char* name : {"anthropic-version", "anthropic-beta",
                           "content-type", "x-stainless-retry-count"}) {
    if (req.has_header(name)) headers[name] = req.get_header_value(name);
  }
  headers["x-api-key-present"] = !req.get_header_value("x-api-key").empty();
  headers["authorization-present"] =
      !req.get_header_value("authorization").empty();
  entry["headers"] = std::move(headers);
  entry["stream"] = false;
  entry["fault"] = nullptr;
  res.set_header("request-id", request_id);

  auto reply_json = [&](int status, const Json& json) {
    res.status = status;
    res.set_content(common::DumpJson(json), kJsonContentType);
    entry["status"] = status;
    if (json.contains("error")) entry["error"] = json["error"];
  };

  // The API takes the key as `x-api-key` or as a bearer token (the
  // TypeScript SDK 1.12 sends `authorization: Bearer KEY`).
  std::string api_key = req.get_header_value("x-api-key");
  if (api_key.empty()) {
    const std::string authorization = req.get_header_value("authorization");
    if (authorization.rfind("Bearer ", 0) == 0) api_key = authorization.substr(7);
  }
  if (api_key.empty() ||
      (!options_.api_key.empty() && api_key != options_.api_key)) {
    entry["body"] = nullptr;
    reply_json(401, ErrorBody("authentication_error",
                              api_key.empty() ? "x-api-key header is required"
                                              : "invalid x-api-key",
                              request_id));
    Record(std::move(entry), true);
    return;
  }
  auto parsed = common::ParseJson(req.body);
  entry["body"] = parsed.ok() ? *parsed : Json(req.body);
  if (!req.has_header("anthropic-version")) {
    reply_json(400, ErrorBody("invalid_request_error",
                              "anthropic-version: header is required",
                              request_id));
    Record(std::move(entry), true);
    return;
  }
  if (!parsed.ok()) {
    reply_json(400, ErrorBody("invalid_request_error",
                              absl::StrCat("There was an error parsing the "
                                           "body of your request: ",
                                           parsed.status().message()),
                              request_id));
    Record(std::move(entry), true);
    return;
  }
  const Json& body = *parsed;
  std::vector<common::Violation> violations = common::ValidateRequest(body);
  if (violations.empty() && body.is_object()) {
    // Top-level fields the conversation validator leaves to us.
    common::Violation v;
    v.rule = common::Rule::kFieldRequired;
    auto model = body.find("model");
    auto max_tokens = body.find("max_tokens");
    if (model == body.end()) {
      v.path = "model";
      v.message = "model: Field required";
    } else if (!model->is_string()) {
      v.path = "model";
      v.message = "model: Input should be a valid string";
    } else if (max_tokens == body.end()) {
      v.path = "max_tokens";
      v.message = "max_tokens: Field required";
    } else if (!max_tokens->is_number_integer() ||
               max_tokens->get<std::int64_t>() < 1) {
      v.path = "max_tokens";
      v.message = "max_tokens: Input should be a valid integer greater than 0";
    }
    if (!v.path.empty()) violations.push_back(std::move(v));
  }
  if (!violations.empty()) {
    reply_json(400, common::ApiErrorBody(violations.front(), request_id));
    Record(std::move(entry), true);
    return;
  }
  const bool stream = body.contains("stream") && body["stream"] == true;
  entry["stream"] = stream;

  Choice choice;
  Choose(body, stream, request_id, choice, entry);
  if (choice.fault) entry["fault"] = choice.fault->name;
  if (choice.http) {
    for (const auto& [name, value] : choice.http->headers) {
      res.set_header(name, value);
    }
    reply_json(choice.http->status, choice.http->body);
    Record(std::move(entry), false);
    return;
  }
  const Fault* stream_fault =
      choice.fault && choice.fault->is_stream_fault() ? &*choice.fault
                                                      : nullptr;

  if (stream) {
    entry["status"] = 200;
    auto plan = std::make_shared<WritePlan>(
        PlanWrites(choice.events, stream_fault, request_id));
    res.status = 200;
    res.set_header("cache-control", "no-cache");
    res.set_chunked_content_provider(
        kSseContentType, [this, plan](std::size_t, httplib::DataSink& sink) {
          for (const Write& write : plan->writes) {
            if (write.delay_ms_before > 0 && !Sleep(write.delay_ms_before)) {
              return false;
            }
            if (!sink.write(write.bytes.data(), write.bytes.size())) {
              return false;
            }
          }
          if (plan->abort_after) return false;
          sink.done();
          return true;
        });
    Record(std::move(entry), false);
    return;
  }

  // Non-streaming: the message the stream would have built.
  if (stream_fault != nullptr && stream_fault->kind == FaultKind::kSseError) {
    std::string type = stream_fault->error_type.empty()
                           ? "overloaded_error"
                           : stream_fault->error_type;
    reply_json(StatusForErrorType(type),
               ErrorBody(type,
                         stream_fault->error_message.empty()
                             ? "Overloaded"
                             : stream_fault->error_message,
                         request_id));
    Record(std::move(entry), false);
    return;
  }
  common::StreamAccumulator accumulator;
  for (const std::string& event : choice.events) {
    if (!accumulator.Feed(event).ok()) break;
  }
  (void)accumulator.Finish();
  absl::StatusOr<Json> message = accumulator.FinalMessage();
  if (!message.ok()) {
    const auto& error = accumulator.error();
    if (error && error->api_error) {
      std::string type = error->api_error->type.empty()
                             ? "api_error"
                             : error->api_error->type;
      reply_json(StatusForErrorType(type),
                 ErrorBody(type, error->api_error->message, request_id));
    } else {
      reply_json(500, ErrorBody("api_error",
                                absl::StrCat("fake API: the response stream "
                                             "does not complete: ",
                                             message.status().message()),
                                request_id));
    }
    Record(std::move(entry), false);
    return;
  }
  std::string text = common::DumpJson(*message);
  entry["status"] = 200;
  res.status = 200;
  if (stream_fault != nullptr && stream_fault->kind == FaultKind::kCut) {
    const std::size_t n =
        stream_fault->after_bytes < 0
            ? text.size() / 2
            : std::min<std::size_t>(
                  static_cast<std::size_t>(stream_fault->after_bytes),
                  text.size());
    auto shared = std::make_shared<std::string>(std::move(text));
    res.set_content_provider(
        shared->size(), kJsonContentType,
        [shared, n](std::size_t offset, std::size_t, httplib::DataSink& sink) {
          if (offset < n) sink.write(shared->data() + offset, n - offset);
          return false;
        });
    Record(std::move(entry), false);
    return;
  }
  if (stream_fault != nullptr && stream_fault->kind == FaultKind::kDrip) {
    Sleep(stream_fault->delay_ms);
  }
  if (stream_fault != nullptr && stream_fault->kind == FaultKind::kMalformed) {
    text.resize(text.size() / 2);
  }
  if (stream_fault != nullptr && stream_fault->kind == FaultKind::kSplice) {
    entry["fault_note"] = "not applied: a non-streaming response";
  }
  res.set_content(text, kJsonContentType);
  Record(std::move(entry), false);
}

}  // namespace toolmesh::fakeapi
