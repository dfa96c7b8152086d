// Incremental JSON parser for tool inputs that stream in fragments
// (`input_json_delta.partial_json`).
//
// Append() consumes each fragment once, so the total cost is linear in the
// input. In live mode the parser also maintains, after every fragment, the
// value as parsed so far (`Partial()`), updated in place at a cost
// proportional to the fragment, never by re-parsing the buffer (the official
// TypeScript SDK re-parses the whole buffer on every delta when observed
// live, which is quadratic).
//
// The partial value follows the SDKs' partial-parse conventions: complete
// members are present; a string still being received is present with the
// characters seen so far (escapes decoded); an object key still being
// received, or a key whose value has not begun, is absent; a number is
// present once at least one digit is known, with the value of the digits so
// far; `true`/`false`/`null` appear once complete. When the input completes,
// Partial() equals the final value. (A pending number longer than 64
// characters is re-shown only each time its length doubles, to keep
// observation linear; its final value is exact.)
//
// Strict JSON (RFC 8259) is enforced: an invalid escape such as `\H`, a raw
// control character in a string, a trailing comma or text after the value is
// an error (fine-grained tool streaming can produce such input). After an
// error the parser stays failed; the raw text is always kept.
//
// Nesting depth is limited (Options::max_depth) so hostile input cannot
// exhaust the stack or memory beyond its own size.
//
// Thread-compatible.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/json.h"

namespace toolmesh::common {

class PartialJsonParser {
 public:
  struct Options {
    // Maintain Partial() after every fragment.
    bool live = false;
    std::size_t max_depth = 512;
  };

  PartialJsonParser();
  explicit PartialJsonParser(Options options);

  PartialJsonParser(const PartialJsonParser&) = delete;
  PartialJsonParser& operator=(const PartialJsonParser&) = delete;
  PartialJsonParser(PartialJsonParser&&) noexcept;
  PartialJsonParser& operator=(PartialJsonParser&&) noexcept;
  ~PartialJsonParser();

  // Consumes `fragment` (copied; it need not outlive the call). Returns
  // kInvalidArgument (with the byte offset and reason) on the first syntax
  // error; the same error afterwards. In plain mode the text is only buffered
  // and syntax errors are reported by Finish(). After Finish() returns
  // kFailedPrecondition and ignores the fragment.
  absl::Status Append(std::string_view fragment);

  // The value parsed so far (live mode only; in plain mode it stays null).
  // Empty input so far gives null. Once complete() it equals the value
  // Finish() will return; Finish() moves the value out, and Partial() is
  // null afterwards. The reference is valid until the next non-const call.
  const Json& Partial() const;

  // True when one complete top-level value has been read.
  bool complete() const;

  // Ends the input and returns the value, moved out of the parser (so
  // Partial() is null afterwards). Empty or whitespace-only input gives `{}`
  // (a tool with no arguments streams a single "" fragment). Returns
  // kInvalidArgument if the input is malformed ("invalid JSON at byte N: ...")
  // or incomplete ("unexpected end of input at byte N ..."). Calling it again
  // returns the same error, or kFailedPrecondition after a success.
  absl::StatusOr<Json> Finish();

  // Instrumentation: the number of input bytes the scanner has advanced over
  // so far. Each byte is scanned once, so after any sequence of Append() calls
  // in live mode this equals raw().size() (and in plain mode it is 0 until
  // Finish()), never more: no fragment triggers a re-scan.
  std::size_t bytes_scanned() const;

  // All fragments so far, concatenated (the raw input text).
  const std::string& raw() const { return raw_; }

  // The first error, or OK.
  const absl::Status& status() const { return status_; }

 private:
  struct Impl;

  Options options_;
  std::string raw_;
  absl::Status status_;
  std::unique_ptr<Impl> impl_;  // scanner state (see partial_json.cc)
};

}  // namespace toolmesh::common
