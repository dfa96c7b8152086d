// In-memory model transport for the fuzz targets (scripted_model_transport.h).
#include "tests/fuzz/services/scripted_model_transport.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace toolmesh::fuzzing {
namespace {

std::string Event(const std::string& type, const std::string& data) {
  return absl::StrCat("event: ", type, "\ndata: ", data, "\n\n");
}

std::string MessageStart() {
  return Event("message_start",
               R"({"type":"message_start","message":{"id":"msg_fuzz",)"
               R"("type":"message","role":"assistant","model":"m",)"
               R"("content":[],"stop_reason":null,"stop_sequence":null,)"
               R"("usage":{"input_tokens":3,"output_tokens":1}}})");
}

std::string MessageEnd(const std::string& stop_reason) {
  return absl::StrCat(
      Event("message_delta",
            absl::StrCat(R"({"type":"message_delta","delta":{"stop_reason":")",
                         stop_reason,
                         R"(","stop_sequence":null},"usage":{"output_tokens":4}})")),
      Event("message_stop", R"({"type":"message_stop"})"));
}

}  // namespace

std::string ToolUseReplySse(const std::string& tool_use_id) {
  return absl::StrCat(
      MessageStart(),
      Event("content_block_start",
            absl::StrCat(R"({"type":"content_block_start","index":0,)"
                         R"("content_block":{"type":"tool_use","id":")",
                         tool_use_id, R"(","name":"echo","input":{}}})")),
      Event("content_block_delta",
            R"({"type":"content_block_delta","index":0,"delta":)"
            R"({"type":"input_json_delta","partial_json":"{\"text\": \"hi\"}"}})"),
      Event("content_block_stop",
            R"({"type":"content_block_stop","index":0})"),
      MessageEnd("tool_use"));
}

std::string EndTurnReplySse() {
  return absl::StrCat(
      MessageStart(),
      Event("content_block_start",
            R"({"type":"content_block_start","index":0,)"
            R"("content_block":{"type":"text","text":""}})"),
      Event("content_block_delta",
            R"({"type":"content_block_delta","index":0,)"
            R"("delta":{"type":"text_delta","text":"done"}})"),
      Event("content_block_stop",
            R"({"type":"content_block_stop","index":0})"),
      MessageEnd("end_turn"));
}

absl::StatusOr<common::ModelStreamId> ScriptedModelTransport::Start(
    common::ModelRequest request,
    std::shared_ptr<common::ModelStreamHandler> handler) {
  absl::MutexLock lock(&mu_);
  Stream stream;
  stream.id = streams_.size() + 1;
  stream.body = std::move(request.body);
  stream.handler = std::move(handler);
  streams_.push_back(std::move(stream));
  return streams_.back().id;
}

void ScriptedModelTransport::Cancel(common::ModelStreamId id) {
  absl::MutexLock lock(&mu_);
  if (id >= 1 && id <= streams_.size()) streams_[id - 1].cancelled = true;
}

std::size_t ScriptedModelTransport::started() const {
  absl::MutexLock lock(&mu_);
  return streams_.size();
}

std::string ScriptedModelTransport::request_body(std::size_t index) const {
  absl::MutexLock lock(&mu_);
  return index < streams_.size() ? streams_[index].body : std::string();
}

void ScriptedModelTransport::Answer(std::size_t index, const std::string& sse) {
  std::shared_ptr<common::ModelStreamHandler> handler;
  bool cancelled = false;
  {
    absl::MutexLock lock(&mu_);
    if (index >= streams_.size() || streams_[index].finished) return;
    streams_[index].finished = true;
    handler = std::move(streams_[index].handler);
    cancelled = streams_[index].cancelled;
  }
  common::TransportResult result;
  if (cancelled) {
    result.kind = common::TransportResult::Kind::kCancelled;
    result.error = "cancelled";
    handler->OnFinished(result);
    return;
  }
  handler->OnResponseStarted(200, common::HttpHeaders());
  handler->OnData(sse);
  result.kind = common::TransportResult::Kind::kCompleted;
  result.http_status = 200;
  result.bytes_received = static_cast<std::int64_t>(sse.size());
  handler->OnFinished(result);
}

void ScriptedModelTransport::FinishAll() {
  std::vector<std::shared_ptr<common::ModelStreamHandler>> handlers;
  {
    absl::MutexLock lock(&mu_);
    for (Stream& stream : streams_) {
      if (stream.finished) continue;
      stream.finished = true;
      handlers.push_back(std::move(stream.handler));
    }
  }
  common::TransportResult result;
  result.kind = common::TransportResult::Kind::kCancelled;
  result.error = "the transport shut down";
  for (auto& handler : handlers) handler->OnFinished(result);
}

}  // namespace toolmesh::fuzzing
