// Checks tool inputs against a tool's `input_schema` (JSON Schema, via
// valijson) before the tool runs.
//
// A violation is not an error of the worker: it becomes an is_error
// tool_result whose text names the offending field, so the model can
// correct its call. Messages look like
//   input.city: required property missing
//   input.count: expected integer, got string
//   input.unit: expected one of ["c","f"], got "k"
//   input.items[2].id: expected string, got number
// one per line, in the order they are found (at most 10 lines).
//
// Thread-safety: an InputValidator is immutable after Compile(); Validate()
// may be called concurrently from any thread. Copies share the compiled
// schema.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/json.h"

namespace toolmesh::worker {

class InputValidator {
 public:
  // Compiles `schema`. It must be a JSON object whose "type" is "object"
  // (the API's rule for input_schema). Returns kInvalidArgument naming the
  // problem when the schema is not an object, lacks "type":"object", or
  // valijson cannot load it (for example a "$ref" it cannot resolve or a
  // keyword with a value of the wrong type). Never throws.
  static absl::StatusOr<InputValidator> Compile(const common::Json& schema);

  // Validates `input`. Returns OK, or kInvalidArgument whose message lists
  // the violations as described above (at most 10 lines). A "pattern" the
  // regex engine rejects is reported as a violation of that field. Never
  // throws.
  absl::Status Validate(const common::Json& input) const;

  // The schema as given to Compile().
  const common::Json& schema() const { return *schema_json_; }

 private:
  struct Compiled;
  InputValidator(std::shared_ptr<const Compiled> compiled,
                 std::shared_ptr<const common::Json> schema_json)
      : compiled_(std::move(compiled)), schema_json_(std::move(schema_json)) {}

  std::shared_ptr<const Compiled> compiled_;
  std::shared_ptr<const common::Json> schema_json_;
};

}  // namespace toolmesh::worker
