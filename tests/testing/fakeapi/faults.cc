#include "tests/testing/fakeapi/faults.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/testing/fakeapi/sse_writer.h"

namespace toolmesh::fakeapi {
namespace {

constexpr std::size_t kMaxWrite = 64 << 10;

struct NamedKind {
  std::string_view name;
  FaultKind kind;
};
constexpr NamedKind kKinds[] = {
    {"http", FaultKind::kHttp},
    {"sse_error", FaultKind::kSseError},
    {"cut", FaultKind::kCut},
    {"drip", FaultKind::kDrip},
    {"malformed", FaultKind::kMalformed},
    {"splice", FaultKind::kSplice},
    {"max_tokens", FaultKind::kMaxTokens},
    {"pause_turn", FaultKind::kPauseTurn},
    {"deferred_server_call", FaultKind::kDeferredServerCall},
    {"repeat_server_result", FaultKind::kRepeatServerResult},
};

void SetHttpDefaults(Fault& fault) {
  switch (fault.status) {
    case 429:
      fault.retry_after = "1";
      fault.retry_after_ms = "20";
      fault.should_retry = "true";
      break;
    case 529:
      fault.retry_after_ms = "20";
      fault.should_retry = "true";
      break;
    default:
      fault.retry_after.reset();
      fault.retry_after_ms.reset();
      fault.should_retry.reset();
      break;
  }
}

std::string_view DefaultMessage(int status) {
  switch (status) {
    case 400: return "Invalid request (injected by the fake API)";
    case 401: return "invalid x-api-key";
    case 403: return "Your API key does not have permission to use the "
                     "specified resource.";
    case 404: return "Not found";
    case 408: return "Request timed out";
    case 409: return "Conflict";
    case 413: return "Request exceeds the maximum allowed number of bytes.";
    case 429: return "Number of request tokens has exceeded your per-minute "
                     "rate limit (injected by the fake API)";
    case 504: return "Request timed out";
    case 529: return "Overloaded";
    default: return "Internal server error";
  }
}

// Reads an optional header field: absent keeps the default, null removes
// it, a string or number sets it.
absl::Status ReadHeaderField(const Json& spec, const char* key,
                             std::optional<std::string>& out) {
  auto it = spec.find(key);
  if (it == spec.end()) return absl::OkStatus();
  if (it->is_null()) {
    out.reset();
  } else if (it->is_string()) {
    out = it->get<std::string>();
  } else if (it->is_number() || it->is_boolean()) {
    out = common::DumpJson(*it);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("fault field `", key, "` must be a string or number"));
  }
  return absl::OkStatus();
}

absl::Status ReadInt(const Json& spec, const char* key, std::int64_t lo,
                     std::int64_t hi, std::int64_t& out) {
  auto it = spec.find(key);
  if (it == spec.end()) return absl::OkStatus();
  if (!it->is_number_integer() || it->get<std::int64_t>() < lo ||
      it->get<std::int64_t>() > hi) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fault field `", key, "` must be an integer in [", lo, ", ", hi, "]"));
  }
  out = it->get<std::int64_t>();
  return absl::OkStatus();
}

absl::Status ReadString(const Json& spec, const char* key, std::string& out) {
  auto it = spec.find(key);
  if (it == spec.end()) return absl::OkStatus();
  if (!it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("fault field `", key, "` must be a string"));
  }
  out = it->get<std::string>();
  return absl::OkStatus();
}

std::size_t EventsBefore(const Fault& fault, std::size_t total) {
  if (fault.after_events < 0) return total / 2;
  return std::min<std::size_t>(static_cast<std::size_t>(fault.after_events),
                               total);
}

void AppendCoalesced(std::string_view bytes, WritePlan& plan) {
  if (plan.writes.empty() ||
      plan.writes.back().bytes.size() + bytes.size() > kMaxWrite) {
    plan.writes.push_back(Write{});
  }
  plan.writes.back().bytes.append(bytes);
}

// A copy of `events` that reads as a different generation: message_start
// gets another id.
std::vector<std::string> SecondGeneration(
    const std::vector<std::string>& events) {
  std::vector<std::string> copy = events;
  for (std::string& event : copy) {
    auto data = common::ParseJson(EventData(event));
    if (!data.ok() || !data->is_object() ||
        common::GetString(*data, "type") != "message_start") {
      continue;
    }
    auto message = data->find("message");
    if (message != data->end() && message->is_object()) {
      (*message)["id"] =
          absl::StrCat(ToAbsl(common::GetString(*message, "id")), "_spliced");
    }
    event = RenderSseEvent("message_start", *data);
    break;
  }
  return copy;
}

}  // namespace

std::string_view KnownFaultNames() {
  return "http_429, http_500, http_529, sse_error, cut, drip, malformed, "
         "splice, max_tokens, pause_turn, deferred_server_call, "
         "repeat_server_result";
}

absl::StatusOr<Fault> FaultFromName(std::string_view name) {
  Fault fault;
  fault.name = std::string(name);
  if (name == "http_429" || name == "http_500" || name == "http_529") {
    fault.kind = FaultKind::kHttp;
    fault.status = name == "http_429" ? 429 : name == "http_500" ? 500 : 529;
    SetHttpDefaults(fault);
    return fault;
  }
  for (const NamedKind& kind : kKinds) {
    if (kind.name == name && kind.kind != FaultKind::kHttp) {
      fault.kind = kind.kind;
      return fault;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown fault `", ToAbsl(name), "` (known: ",
      ToAbsl(KnownFaultNames()), ")"));
}

absl::StatusOr<Fault> ParseFault(const Json& spec) {
  if (spec.is_string()) return FaultFromName(spec.get<std::string>());
  if (!spec.is_object()) {
    return absl::InvalidArgumentError(
        "a fault must be a name or an object with a `type`");
  }
  std::string_view type = common::GetString(spec, "type");
  if (type.empty()) {
    return absl::InvalidArgumentError("a fault object needs a string `type`");
  }
  Fault fault;
  if (type == "http") {
    std::int64_t status = 500;
    if (spec.find("status") == spec.end()) {
      return absl::InvalidArgumentError("fault `http` needs a `status`");
    }
    if (auto s = ReadInt(spec, "status", 400, 599, status); !s.ok()) return s;
    fault.kind = FaultKind::kHttp;
    fault.name = absl::StrCat("http_", status);
    fault.status = static_cast<int>(status);
    SetHttpDefaults(fault);
  } else {
    auto named = FaultFromName(type);
    if (!named.ok()) return named.status();
    fault = *std::move(named);
  }
  static constexpr std::string_view kFields[] = {
      "type",         "status",      "retry_after", "retry_after_ms",
      "should_retry", "error_type",  "message",     "after_events",
      "after_bytes",  "delay_ms",    "server_tool"};
  for (auto it = spec.begin(); it != spec.end(); ++it) {
    if (std::find(std::begin(kFields), std::end(kFields), it.key()) ==
        std::end(kFields)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown fault field `", it.key(), "`"));
    }
  }
  if (fault.is_http()) {
    if (auto s = ReadHeaderField(spec, "retry_after", fault.retry_after);
        !s.ok())
      return s;
    if (auto s = ReadHeaderField(spec, "retry_after_ms", fault.retry_after_ms);
        !s.ok())
      return s;
    if (auto s = ReadHeaderField(spec, "should_retry", fault.should_retry);
        !s.ok())
      return s;
  }
  if (auto s = ReadString(spec, "error_type", fault.error_type); !s.ok())
    return s;
  if (auto s = ReadString(spec, "message", fault.error_message); !s.ok())
    return s;
  std::int64_t value = fault.after_events;
  if (auto s = ReadInt(spec, "after_events", 0, 1 << 30, value); !s.ok())
    return s;
  fault.after_events = static_cast<int>(value);
  if (auto s = ReadInt(spec, "after_bytes", 0, std::int64_t{1} << 40,
                       fault.after_bytes);
      !s.ok())
    return s;
  value = fault.delay_ms;
  if (auto s = ReadInt(spec, "delay_ms", 0, 60000, value); !s.ok()) return s;
  fault.delay_ms = static_cast<int>(value);
  if (auto s = ReadString(spec, "server_tool", fault.server_tool); !s.ok())
    return s;
  return fault;
}

std::string_view ErrorTypeForStatus(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 408: return "timeout_error";
    case 409: return "conflict_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 504: return "timeout_error";
    case 529: return "overloaded_error";
    default: return "api_error";
  }
}

Json ErrorBody(std::string_view type, std::string_view message,
               std::string_view request_id) {
  Json body = Json::object();
  body["type"] = "error";
  body["error"] = {{"type", std::string(type)},
                   {"message", std::string(message)}};
  body["request_id"] = std::string(request_id);
  return body;
}

HttpReply HttpFaultReply(const Fault& fault, std::string_view request_id) {
  HttpReply reply;
  reply.status = fault.status;
  if (fault.retry_after) reply.headers.emplace_back("retry-after", *fault.retry_after);
  if (fault.retry_after_ms) {
    reply.headers.emplace_back("retry-after-ms", *fault.retry_after_ms);
  }
  if (fault.should_retry) {
    reply.headers.emplace_back("x-should-retry", *fault.should_retry);
  }
  std::string_view type = fault.error_type.empty()
                              ? ErrorTypeForStatus(fault.status)
                              : std::string_view(fault.error_type);
  std::string_view message = fault.error_message.empty()
                                 ? DefaultMessage(fault.status)
                                 : std::string_view(fault.error_message);
  reply.body = ErrorBody(type, message, request_id);
  return reply;
}

WritePlan PlanWrites(const std::vector<std::string>& events,
                     const Fault* fault, std::string_view request_id) {
  WritePlan plan;
  if (fault == nullptr || !fault->is_stream_fault()) {
    for (const std::string& event : events) AppendCoalesced(event, plan);
    return plan;
  }
  switch (fault->kind) {
    case FaultKind::kSseError: {
      std::size_t n = EventsBefore(*fault, events.size());
      for (std::size_t i = 0; i < n; ++i) AppendCoalesced(events[i], plan);
      AppendCoalesced(
          RenderErrorEvent(fault->error_type.empty() ? "overloaded_error"
                                                     : fault->error_type,
                           fault->error_message.empty() ? "Overloaded"
                                                        : fault->error_message,
                           request_id),
          plan);
      break;
    }
    case FaultKind::kCut: {
      std::string all;
      for (const std::string& event : events) all += event;
      std::size_t n = fault->after_bytes < 0
                          ? all.size() / 2
                          : std::min<std::size_t>(
                                static_cast<std::size_t>(fault->after_bytes),
                                all.size());
      for (std::size_t pos = 0; pos < n; pos += kMaxWrite) {
        plan.writes.push_back(
            Write{all.substr(pos, std::min(kMaxWrite, n - pos)), 0});
      }
      plan.abort_after = true;
      break;
    }
    case FaultKind::kDrip:
      for (std::size_t i = 0; i < events.size(); ++i) {
        plan.writes.push_back(Write{events[i], i == 0 ? 0 : fault->delay_ms});
      }
      break;
    case FaultKind::kMalformed: {
      std::size_t n = EventsBefore(*fault, events.size());
      for (std::size_t i = 0; i < events.size(); ++i) {
        if (i == n) {
          AppendCoalesced(
              "event: content_block_delta\ndata: {\"type\":"
              "\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
              "\"text_delta\",\"text\":\"unterminated\n\n",
              plan);
        }
        AppendCoalesced(events[i], plan);
      }
      if (n >= events.size()) {
        AppendCoalesced("event: message_delta\ndata: {\"type\":\n\n", plan);
      }
      break;
    }
    case FaultKind::kSplice: {
      std::size_t n = EventsBefore(*fault, events.size());
      for (std::size_t i = 0; i < n; ++i) AppendCoalesced(events[i], plan);
      for (const std::string& event : SecondGeneration(events)) {
        AppendCoalesced(event, plan);
      }
      break;
    }
    default:
      for (const std::string& event : events) AppendCoalesced(event, plan);
      break;
  }
  return plan;
}

}  // namespace toolmesh::fakeapi
