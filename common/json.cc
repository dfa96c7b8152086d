#include "common/json.h"

#include "absl/strings/str_cat.h"

namespace toolmesh::common {
namespace {

// Whether arrays and objects in `text` nest deeper than `limit`, counting
// only brackets outside strings. Exact for valid JSON; for invalid text any
// answer is fine, since the parse fails either way.
bool NestingExceeds(std::string_view text, std::size_t limit) {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<Json> ParseJson(std::string_view text) {
  if (NestingExceeds(text, kMaxJsonDepth)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid JSON: nesting deeper than ", kMaxJsonDepth, " levels"));
  }
  // The callback-free, exception-free form: errors surface as a discarded
  // value, and we re-run with a sax parser only to get a message.
  Json value = Json::parse(text.begin(), text.end(), nullptr,
                           /*allow_exceptions=*/false);
  if (!value.is_discarded()) return value;
  struct ErrorSax : nlohmann::json_sax<Json> {
    std::string message;
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return true; }
    bool key(string_t&) override { return true; }
    bool end_object() override { return true; }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t, const std::string&,
                     const nlohmann::detail::exception& ex) override {
      message = ex.what();
      return false;
    }
  } sax;
  Json::sax_parse(text.begin(), text.end(), &sax,
                  nlohmann::detail::input_format_t::json, /*strict=*/true);
  return absl::InvalidArgumentError(
      absl::StrCat("invalid JSON: ", sax.message.empty() ? "unknown error"
                                                         : sax.message));
}

std::string DumpJson(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string DumpJsonPretty(const Json& value, int indent) {
  return value.dump(indent, ' ', false, Json::error_handler_t::replace);
}

std::string_view GetString(const Json& value, std::string_view key) {
  if (!value.is_object()) return {};
  auto it = value.find(key);
  if (it == value.end() || !it->is_string()) return {};
  return it->get_ref<const std::string&>();
}

}  // namespace toolmesh::common
