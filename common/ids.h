// Strong identifier types: TaskId, ToolUseId, WorkerId.
//
// Each id is an opaque string wrapped in its own type, so that a worker id
// can never be passed where a tool_use_id is expected. Ids are never
// validated or parsed: the same API issues `toolu_...`, `toolu_vrtx_...` and
// `toolu_bdrk_...` for client tools depending on the platform, and
// `srvtoolu_...` / `mcptoolu_...` for server tools (PROTOCOL.md section b).
// Construction is explicit; ids compare, hash (absl::Hash, so they key
// absl::flat_hash_map) and print like the string they hold.
//
// Thread-safety: value types; const methods are safe to call concurrently.
#pragma once

#include <compare>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace toolmesh::common {

// An opaque string id whose type is distinguished by `Tag`. Use the aliases
// below rather than this template.
template <typename Tag>
class StrongId {
 public:
  // The empty id. Default-constructible so ids can live in containers and
  // structs; an empty id never matches a real one.
  StrongId() = default;
  explicit StrongId(std::string value) : value_(std::move(value)) {}
  explicit StrongId(std::string_view value) : value_(value) {}
  explicit StrongId(const char* value) : value_(value) {}

  // The raw string. Valid as long as this object is.
  const std::string& value() const { return value_; }
  bool empty() const { return value_.empty(); }

  friend bool operator==(const StrongId&, const StrongId&) = default;
  friend std::strong_ordering operator<=>(const StrongId& a,
                                          const StrongId& b) {
    return a.value_.compare(b.value_) <=> 0;
  }

  template <typename H>
  friend H AbslHashValue(H h, const StrongId& id) {
    return H::combine(std::move(h), id.value_);
  }

  friend std::ostream& operator<<(std::ostream& os, const StrongId& id) {
    return os << id.value_;
  }

 private:
  std::string value_;
};

struct TaskIdTag {};
struct ToolUseIdTag {};
struct WorkerIdTag {};

// A toolmesh task (one agent run over many model turns).
using TaskId = StrongId<TaskIdTag>;
// The `id` of a tool_use / server_tool_use / mcp_tool_use block, and the
// `tool_use_id` of its result.
using ToolUseId = StrongId<ToolUseIdTag>;
// A connected worker, as it named itself in WorkerService.Connect.
using WorkerId = StrongId<WorkerIdTag>;

}  // namespace toolmesh::common
