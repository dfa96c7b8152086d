// Fuzz target for PartialJsonParser: differential against nlohmann's strict
// parser. The input is the JSON text; how it is cut into fragments is derived
// from the input itself. Properties (abort on violation):
//  - nlohmann accepts <=> we accept, in plain and in live mode, except
//    that we may reject nesting deeper than max_depth, that empty or
//    whitespace-only input is `{}` for us, and that nlohmann stops at a NUL
//    byte outside strings (ignoring the rest) where we reject it;
//  - accepted values are equal, with equal nlohmann number types;
//  - live mode: the scanner has advanced over exactly raw().size() bytes
//    after every fragment, the first error is sticky, and Partial() equals
//    the final value at the end;
//  - both modes agree.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "common/partial_json.h"

namespace {

using ::toolmesh::common::Json;
using ::toolmesh::common::ParseJson;
using ::toolmesh::common::PartialJsonParser;

void Check(bool condition) {
  if (!condition) std::abort();
}

bool SameJson(const Json& a, const Json& b) {
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!SameJson(a[i], b[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) {
      if (ia.key() != ib.key() || !SameJson(ia.value(), ib.value())) {
        return false;
      }
    }
    return true;
  }
  return a == b;
}

std::size_t Depth(const Json& value) {
  std::size_t deepest = 0;
  if (value.is_structured()) {
    for (const auto& child : value) {
      const std::size_t d = Depth(child);
      if (d > deepest) deepest = d;
    }
    return deepest + 1;
  }
  return 0;
}

bool BlankText(std::string_view text) {
  if (text.substr(0, 3) == "\xef\xbb\xbf") text.remove_prefix(3);
  return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// Fragment lengths 0..16 from a small generator seeded by the input, so the
// fuzzer explores cut points along with content.
std::vector<std::string_view> Cut(std::string_view text) {
  std::uint32_t seed = 2166136261u;
  for (unsigned char c : text.substr(0, 8)) seed = (seed ^ c) * 16777619u;
  std::vector<std::string_view> pieces;
  std::size_t at = 0;
  while (at < text.size()) {
    seed = seed * 1103515245u + 12345u;
    const std::size_t n = (seed >> 16) % 17;
    pieces.push_back(text.substr(at, n));
    at += n;
  }
  return pieces;
}

absl::StatusOr<Json> Run(std::string_view text, bool live) {
  PartialJsonParser parser(PartialJsonParser::Options{.live = live});
  absl::Status first_error;
  for (std::string_view piece : Cut(text)) {
    const absl::Status status = parser.Append(piece);
    if (!first_error.ok()) {
      Check(status == first_error);  // sticky
    } else if (!status.ok()) {
      Check(live);  // plain mode only buffers
      Check(status.code() == absl::StatusCode::kInvalidArgument);
      first_error = status;
    } else if (live) {
      Check(parser.bytes_scanned() == parser.raw().size());
    }
    Check(parser.raw() == text.substr(0, parser.raw().size()));
  }
  Check(parser.raw() == text);
  const bool was_complete = parser.complete();
  const Json before_finish = parser.Partial();
  absl::StatusOr<Json> result = parser.Finish();
  if (!first_error.ok()) Check(result.status() == first_error);
  if (result.ok()) {
    Check(parser.complete());
    Check(parser.Partial().is_null());  // the value was moved out
    if (live && was_complete) Check(SameJson(before_finish, *result));
    if (!live) Check(before_finish.is_null());
    Check(parser.bytes_scanned() == text.size());
  } else {
    Check(result.status().code() == absl::StatusCode::kInvalidArgument);
  }
  return result;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<Json> expected = ParseJson(text);
  const absl::StatusOr<Json> plain = Run(text, /*live=*/false);
  const absl::StatusOr<Json> live = Run(text, /*live=*/true);

  Check(plain.ok() == live.ok());
  if (plain.ok()) Check(SameJson(*plain, *live));

  if (BlankText(text)) {
    Check(plain.ok() && plain->is_object() && plain->empty());
    return 0;
  }
  if (expected.ok() && !plain.ok()) {
    const std::string message(plain.status().message());
    // nlohmann's lexer takes a NUL byte outside strings as the end of input
    // and ignores what follows; RFC 8259 (and we) reject it.
    const std::size_t nul = text.find('\0');
    if (nul != std::string_view::npos &&
        message.find(absl::StrCat("at byte ", nul, ": unexpected byte 0x00")) !=
            std::string_view::npos) {
      const absl::StatusOr<Json> before_nul = ParseJson(text.substr(0, nul));
      Check(before_nul.ok() && SameJson(*before_nul, *expected));
      return 0;
    }
    // The other allowed difference: our nesting limit.
    Check(message.find("nesting too deep") != std::string_view::npos);
    Check(Depth(*expected) > PartialJsonParser::Options().max_depth);
    return 0;
  }
  Check(expected.ok() == plain.ok());
  if (expected.ok()) Check(SameJson(*expected, *plain));
  return 0;
}
