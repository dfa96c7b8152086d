#include "tests/sim/sim_model.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/messages.h"
#include "common/request_validator.h"
#include "tests/testing/fakeapi/faults.h"
#include "tests/testing/fakeapi/rule_model.h"
#include "tests/testing/fakeapi/sse_writer.h"

namespace toolmesh::sim {
namespace {

using common::Json;
using Kind = common::TransportResult::Kind;


const Json* LastMessage(const Json& body) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty()) return nullptr;
  return &it->back();
}

bool HoldsToolResult(const Json* message) {
  if (message == nullptr || common::GetString(*message, "role") != "user") {
    return false;
  }
  auto content = message->find("content");
  if (content == message->end() || !content->is_array()) return false;
  for (const Json& block : *content) {
    if (common::GetString(block, "type") == "tool_result") return true;
  }
  return false;
}

int AssistantMessages(const Json& body) {
  int n = 0;
  if (auto it = body.find("messages"); it != body.end() && it->is_array()) {
    for (const Json& m : *it) n += common::GetString(m, "role") == "assistant";
  }
  return n;
}

}  // namespace

SimModelTransport::SimModelTransport(SimLoop& loop, SimModelOptions options)
    : loop_(loop), options_(std::move(options)) {}

SimModelTransport::~SimModelTransport() = default;

absl::StatusOr<common::ModelStreamId> SimModelTransport::Start(
    common::ModelRequest request,
    std::shared_ptr<common::ModelStreamHandler> handler) {
  // A dying engine's requests (their order is not the simulation's) go
  // nowhere, as the contract allows for a transport that shuts down.
  if (crashed_) {
    return absl::FailedPreconditionError("the orchestrator crashed");
  }
  const common::ModelStreamId id = next_id_++;
  ++requests_;
  Stream& stream = streams_[id];
  stream.handler = std::move(handler);
  const std::string& rid = request.request_id;
  const std::string task_id = rid.substr(0, rid.find('/'));

  absl::StatusOr<Json> body = common::ParseJson(request.body);
  std::vector<common::Violation> violations;
  if (!body.ok()) {
    common::Violation v;
    v.message = absl::StrCat("the body is not JSON: ", body.status().message());
    violations.push_back(std::move(v));
  } else {
    violations = common::ValidateRequest(*body);
    if (auto tools = body->find("tools"); tools != body->end()) {
      tools_by_task_[task_id] = *tools;
    } else {
      tools_by_task_[task_id] = Json::array();
    }
  }
  if (!violations.empty()) {
    ++rejected_;
    loop_.Violation(absl::StrCat("the model rejected request ", rid, ": ",
                                 violations.front().message));
    stream.http_status = 400;
    stream.headers = {{"content-type", "application/json"}};
    stream.chunks = {common::DumpJson(
        common::ApiErrorBody(violations.front(), "req_sim"))};
    stream.end = Kind::kHttpError;
  } else {
    Respond(*body, rid, stream);
  }
  loop_.Trace(absl::StrCat("model start #", id, " ", rid, " status=",
                           stream.http_status, " chunks=",
                           stream.chunks.size()));
  ScheduleDelivery(id, loop_.Between(absl::Milliseconds(1),
                                     absl::Milliseconds(200)));
  return id;
}

void SimModelTransport::Cancel(common::ModelStreamId id) {
  if (crashed_) return;
  auto it = streams_.find(id);
  if (it == streams_.end() || it->second.cancelled) return;
  it->second.cancelled = true;
  loop_.Trace(absl::StrCat("model cancel #", id));
  ScheduleDelivery(id, absl::ZeroDuration());
}

void SimModelTransport::Crashed() {
  crashed_ = true;
  streams_.clear();
}

std::string SimModelTransport::WebSearchName(const Json& body) {
  auto tools = body.find("tools");
  if (tools == body.end() || !tools->is_array()) return "";
  for (const Json& tool : *tools) {
    if (common::GetString(tool, "name") == "web_search" &&
        common::GetString(tool, "type").starts_with("web_search_")) {
      return "web_search";
    }
  }
  return "";
}

Json SimModelTransport::MoreToolCalls(const Json& body) {
  std::vector<const Json*> client;
  if (auto tools = body.find("tools"); tools != body.end() && tools->is_array()) {
    for (const Json& tool : *tools) {
      std::string_view type = common::GetString(tool, "type");
      if (type.empty() || type == "custom") client.push_back(&tool);
    }
  }
  Json blocks = Json::array();
  if (client.empty()) return blocks;
  fakeapi::IdSource ids(loop_.Next());
  if (auto thinking = body.find("thinking");
      thinking != body.end() && thinking->is_object() &&
      common::GetString(*thinking, "type") == "enabled") {
    // As the API does with thinking on: the reply opens with a signed block.
    blocks.push_back(Json{{"type", "thinking"},
                          {"thinking", "Another round of tools is needed."},
                          {"signature", ids.NextId("sig")}});
  }
  blocks.push_back(Json{{"type", "text"}, {"text", "One more round."}});
  const std::uint64_t n = 1 + loop_.Uniform(std::min<std::size_t>(3, client.size()));
  for (std::uint64_t i = 0; i < n; ++i) {
    const Json& tool = *client[loop_.Uniform(client.size())];
    Json input = fakeapi::GenerateFromSchema(
        tool.contains("input_schema") ? tool["input_schema"] : Json(), ids);
    if (!input.is_object()) input = Json::object();
    blocks.push_back(Json{{"type", "tool_use"},
                          {"id", ids.NextId("toolu_")},
                          {"name", common::GetString(tool, "name")},
                          {"input", std::move(input)}});
  }
  return blocks;
}

void SimModelTransport::Respond(const Json& body, const std::string& rid,
                                Stream& stream) {
  fakeapi::IdSource ids(loop_.Next());
  if (loop_.Chance(options_.http_error)) {
    static constexpr int kStatuses[] = {429, 500, 529};
    fakeapi::Fault fault;
    fault.kind = fakeapi::FaultKind::kHttp;
    fault.status = kStatuses[loop_.Uniform(3)];
    if (loop_.Chance(0.5)) {
      fault.retry_after_ms = std::to_string(10 + loop_.Uniform(3000));
    } else if (loop_.Chance(0.5)) {
      fault.retry_after = std::to_string(loop_.Uniform(3));
    }
    if (loop_.Chance(0.1)) fault.should_retry = "false";
    fakeapi::HttpReply reply = fakeapi::HttpFaultReply(fault, "req_sim");
    stream.http_status = reply.status;
    stream.headers = reply.headers;
    stream.chunks = {common::DumpJson(reply.body)};
    stream.end = Kind::kHttpError;
    loop_.Fault(absl::StrCat("http_", fault.status),
                absl::StrCat(rid, fault.should_retry ? " no-retry" : ""));
    return;
  }

  fakeapi::ModelReply reply = fakeapi::RuleModelRespond(body, loop_.Next());
  const Json* last = LastMessage(body);
  if (HoldsToolResult(last) && AssistantMessages(body) < 4 &&
      loop_.Chance(options_.more_tool_calls)) {
    Json more = MoreToolCalls(body);
    if (!more.empty()) {
      // Keep the results the rule model owes at the start.
      Json blocks = Json::array();
      for (const Json& block : reply.blocks) {
        if (common::ClassifyBlock(block) !=
            common::BlockKind::kServerToolResult) {
          break;
        }
        blocks.push_back(block);
      }
      for (Json& block : more) blocks.push_back(std::move(block));
      reply.blocks = std::move(blocks);
      reply.stop_reason = "tool_use";
    }
  }

  // Results owed from earlier responses open this one, as the API does.
  std::vector<std::string> call_ids;
  std::vector<std::string> result_ids;
  if (auto messages = body.find("messages"); messages != body.end()) {
    for (const Json& message : *messages) {
      auto content = message.find("content");
      if (content == message.end() || !content->is_array()) continue;
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
  Json content = Json::array();
  for (const std::string& id : call_ids) {
    auto it = owed_.find(id);
    if (it == owed_.end()) continue;
    const bool resolved = std::find(result_ids.begin(), result_ids.end(),
                                    id) != result_ids.end();
    if (resolved != it->second.repeat) continue;
    if (!fakeapi::HasServerResultFor(reply.blocks, id)) {
      content.push_back(std::move(it->second.result));
    }
    owed_.erase(it);
  }
  for (Json& block : reply.blocks) content.push_back(std::move(block));

  fakeapi::MessageSpec spec;
  spec.id = ids.NextId("msg_");
  spec.model = std::string(common::GetString(body, "model"));
  spec.stop_reason = reply.stop_reason;
  spec.input_tokens = 10 + static_cast<std::int64_t>(loop_.Uniform(1000));
  spec.padding_seed = loop_.Next();

  // At most one message fault. Server-call faults stay off with thinking
  // on: a late result opens the next assistant message, and ValidateRequest
  // then wants that message to open with thinking too (d.5 against d.6
  // case b), which no response can satisfy; see README.md.
  auto thinking = body.find("thinking");
  const bool thinking_on = thinking != body.end() && thinking->is_object() &&
                           common::GetString(*thinking, "type") == "enabled";
  const std::string server_tool = thinking_on ? "" : WebSearchName(body);
  const int trailing = fakeapi::TrailingToolUseStart(content);
  if (loop_.Chance(options_.max_tokens)) {
    spec.truncate = true;
    loop_.Fault("max_tokens", rid);
  } else if (!server_tool.empty() && loop_.Chance(options_.pause_turn)) {
    Json kept = Json::array();
    for (Json& block : content) {
      if (common::GetString(block, "type") != "tool_use") {
        kept.push_back(std::move(block));
      }
    }
    content = std::move(kept);
    content.push_back(Json{{"type", "text"}, {"text", "Let me look that up."}});
    std::string id = ids.NextId("srvtoolu_");
    content.push_back(Json{{"type", "server_tool_use"},
                           {"id", id},
                           {"name", server_tool},
                           {"input", {{"query", "sim pause"}}}});
    spec.stop_reason = "pause_turn";
    owed_[id] = Owed{fakeapi::FakeServerToolResult(server_tool, id), false};
    loop_.Fault("pause_turn", rid);
  } else if (!server_tool.empty() && trailing >= 0 &&
             loop_.Chance(options_.deferred_server_call +
                          options_.repeat_server_result)) {
    const bool repeat = loop_.Chance(
        options_.repeat_server_result /
        (options_.deferred_server_call + options_.repeat_server_result));
    std::string id = ids.NextId("srvtoolu_");
    Json result = fakeapi::FakeServerToolResult(server_tool, id);
    Json inserted = Json::array();
    inserted.push_back(Json{{"type", "server_tool_use"},
                            {"id", id},
                            {"name", server_tool},
                            {"input", {{"query", "sim deferred"}}}});
    if (repeat) inserted.push_back(result);
    content.insert(content.begin() + trailing, inserted.begin(),
                   inserted.end());
    spec.stop_reason = "tool_use";
    owed_[id] = Owed{std::move(result), repeat};
    loop_.Fault(repeat ? "repeat_server_result" : "deferred_server_call", rid);
  }
  spec.content = std::move(content);
  const std::vector<std::string> events = fakeapi::RenderMessageStream(spec);

  // At most one stream fault.
  std::optional<fakeapi::Fault> fault;
  const double roll = loop_.Uniform01();
  double edge = 0;
  auto pick = [&](double p, fakeapi::FaultKind kind, const char* name) {
    if (fault.has_value()) return;
    edge += p;
    if (roll >= edge) return;
    fault.emplace();
    fault->kind = kind;
    fault->name = name;
  };
  pick(options_.sse_error, fakeapi::FaultKind::kSseError, "sse_error");
  pick(options_.malformed, fakeapi::FaultKind::kMalformed, "malformed");
  pick(options_.splice, fakeapi::FaultKind::kSplice, "splice");
  pick(options_.cut, fakeapi::FaultKind::kCut, "cut");
  std::string bytes;
  if (fault.has_value()) {
    fault->after_events = static_cast<int>(loop_.Uniform(events.size() + 1));
    std::size_t total = 0;
    for (const std::string& e : events) total += e.size();
    fault->after_bytes = static_cast<std::int64_t>(loop_.Uniform(total));
    if (loop_.Chance(0.5)) {
      fault->error_type = loop_.Chance(0.5) ? "overloaded_error" : "api_error";
    }
    loop_.Fault(fault->name, rid);
  }
  fakeapi::WritePlan plan =
      fakeapi::PlanWrites(events, fault ? &*fault : nullptr, "req_sim");
  for (const fakeapi::Write& w : plan.writes) bytes += w.bytes;
  stream.http_status = 200;
  stream.headers = {{"content-type", "text/event-stream"},
                    {"request-id", "req_sim"}};
  stream.end = plan.abort_after ? Kind::kConnectionError : Kind::kCompleted;

  // Chunks of random size: a fault can fall on any byte.
  const std::size_t max_chunk = loop_.Chance(0.3) ? 8 : 700;
  for (std::size_t at = 0; at < bytes.size();) {
    const std::size_t n = 1 + loop_.Uniform(max_chunk);
    stream.chunks.push_back(bytes.substr(at, n));
    at += n;
  }
  if (loop_.Chance(options_.stall)) {
    stream.stall_after = loop_.Uniform(stream.chunks.size() + 1);
    loop_.Fault("stall", rid);
  }
  if (loop_.Chance(options_.slow_chunks)) {
    stream.slow = true;
    loop_.Fault("slow_stream", rid);
  }
}

void SimModelTransport::ScheduleDelivery(common::ModelStreamId id,
                                         absl::Duration delay) {
  loop_.After(delay, [this, id] { Deliver(id); });
}

void SimModelTransport::Deliver(common::ModelStreamId id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  Stream& s = it->second;
  if (s.cancelled) {
    common::TransportResult result;
    result.kind = Kind::kCancelled;
    result.http_status = s.started ? s.http_status : 0;
    result.error = "cancelled";
    result.bytes_received = s.bytes;
    Finish(id, std::move(result));
    return;
  }
  auto next_delay = [&] {
    return s.slow && loop_.Chance(0.3)
               ? loop_.Between(absl::Seconds(1), absl::Seconds(8))
               : loop_.Between(absl::ZeroDuration(), absl::Milliseconds(40));
  };
  if (s.stall_after.has_value() && s.next == *s.stall_after) {
    // No byte any more: the idle timeout ends it.
    s.stall_after.reset();
    s.next = s.chunks.size() + 1;  // nothing but the timeout follows
    loop_.After(options_.idle_timeout, [this, id] {
      auto stalled = streams_.find(id);
      if (stalled == streams_.end()) return;
      common::TransportResult result;
      result.kind = Kind::kTimeout;
      result.http_status = stalled->second.started ? stalled->second.http_status
                                                   : 0;
      result.error = "idle timeout";
      result.bytes_received = stalled->second.bytes;
      Finish(id, std::move(result));
    });
    return;
  }
  if (s.next > s.chunks.size()) return;  // stalled
  std::shared_ptr<common::ModelStreamHandler> handler = s.handler;
  if (!s.started) {
    s.started = true;
    handler->OnResponseStarted(s.http_status, s.headers);
    ScheduleDelivery(id, next_delay());
    return;
  }
  if (s.next < s.chunks.size()) {
    const std::string& chunk = s.chunks[s.next++];
    s.bytes += static_cast<std::int64_t>(chunk.size());
    handler->OnData(chunk);
    ScheduleDelivery(id, next_delay());
    return;
  }
  common::TransportResult result;
  result.kind = s.end;
  result.http_status = s.http_status;
  if (s.end == Kind::kConnectionError) result.error = "connection reset";
  result.bytes_received = s.bytes;
  Finish(id, std::move(result));
}

void SimModelTransport::Finish(common::ModelStreamId id,
                               common::TransportResult result) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  std::shared_ptr<common::ModelStreamHandler> handler =
      std::move(it->second.handler);
  streams_.erase(it);
  const std::string_view kind = common::TransportResultKindName(result.kind);
  loop_.Trace(absl::StrCat("model end #", id, " ",
                           absl::string_view(kind.data(), kind.size())));
  handler->OnFinished(result);
}

}  // namespace toolmesh::sim
