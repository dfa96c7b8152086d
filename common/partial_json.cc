// Implementation of PartialJsonParser: one resumable, byte-at-a-time state
// machine that builds the DOM in place.
//
// The same scanner serves both modes. In live mode every fragment is fed to
// it as it arrives; in plain mode Append() only buffers and Finish() feeds the
// whole buffer once. Either way each byte is examined once and the value is
// built directly (no token list, no second pass), so the cost is linear.
//
// In-place DOM: only the last child of each open container can itself be
// open, so the parser keeps raw pointers to the open arrays/objects (a stack)
// and to the string being received. A pointer is taken right after the child
// is inserted; the parent cannot reallocate while that child is open because
// nothing else is inserted into it until the child closes.
//
// Object members are looked up linearly while an object is small and through
// a hash index once it grows, so hostile inputs with many keys stay linear
// (nlohmann's ordered_map alone would make them quadratic).
//
// Thread-compatible, like the class.
#include "common/partial_json.h"

#include <array>
#include <charconv>
#include <clocale>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace toolmesh::common {
namespace {

enum class State : std::uint8_t {
  kValue,               // a value must start (top level, after ':' or ',')
  kArrayFirst,          // after '[': a value or ']'
  kObjectFirst,         // after '{': a key or '}'
  kObjectKey,           // after ',' in an object: a key
  kColon,               // after a key: ':'
  kAfterValue,          // inside a container after a member: ',' or closer
  kDone,                // the top-level value is complete: whitespace only
  kString,              // inside a string (a value or a key)
  kEscape,              // after '\' in a string
  kUnicode,             // inside the four hex digits of \uXXXX
  kSurrogateBackslash,  // after a high surrogate: '\' must follow
  kSurrogateU,          // after a high surrogate and '\': 'u' must follow
  kUtf8,                // inside a multi-byte UTF-8 sequence
  kNumber,              // inside a number
  kLiteral,             // inside true / false / null
  kBom,                 // inside a leading UTF-8 byte order mark
  kFailed,              // a syntax error was reported
};

// Positions in the RFC 8259 number grammar.
enum class NumState : std::uint8_t {
  kStart,      // nothing yet
  kMinus,      // "-"
  kZero,       // "0" or "-0" (complete)
  kInt,        // integer digits (complete)
  kDot,        // "."
  kFrac,       // fraction digits (complete)
  kExpMark,    // "e" / "E"
  kExpSign,    // "e+" / "e-"
  kExpDigits,  // exponent digits (complete)
};

enum class Literal : std::uint8_t { kTrue, kFalse, kNull };

constexpr std::string_view LiteralText(Literal literal) {
  switch (literal) {
    case Literal::kTrue:
      return "true";
    case Literal::kFalse:
      return "false";
    case Literal::kNull:
      return "null";
  }
  return "";
}

// Objects switch from linear key search to a hash index at this size.
constexpr std::size_t kIndexThreshold = 16;

// Plain mode reserves string values longer than this up front.
constexpr std::size_t kReserveThreshold = 256;

// Pending numbers longer than this are re-shown in Partial() only when their
// valid prefix has doubled, so a pathological multi-megabyte number stays
// linear to observe live.
constexpr std::size_t kSmallNumber = 64;

// Bytes that may be copied verbatim inside a string: printable ASCII other
// than '"' and '\'.
constexpr std::array<bool, 256> MakePlainTable() {
  std::array<bool, 256> table{};
  for (int c = 0x20; c < 0x80; ++c) table[c] = true;
  table['"'] = false;
  table['\\'] = false;
  return table;
}
constexpr std::array<bool, 256> kPlain = MakePlainTable();

constexpr bool IsWhitespace(unsigned char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

constexpr bool IsDigit(unsigned char c) { return c >= '0' && c <= '9'; }

int HexValue(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Checks the UTF-8 sequence starting at `p` (whose first byte is >= 0x80)
// with the ranges of RFC 3629 (no overlongs, no encoded surrogates, nothing
// above U+10FFFF), as nlohmann's lexer does. Returns its length when complete
// and valid, 0 when it is valid so far but runs past `end`, or -1 when
// invalid, setting `*bad` to the offending byte.
int CheckUtf8(const unsigned char* p, const unsigned char* end,
              const unsigned char** bad) {
  const unsigned char lead = p[0];
  int length;
  unsigned char low = 0x80;
  unsigned char high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    *bad = p;
    return -1;
  }
  for (int i = 1; i < length; ++i) {
    if (p + i >= end) return 0;
    const unsigned char c = p[i];
    if (c < low || c > high) {
      *bad = p + i;
      return -1;
    }
    low = 0x80;
    high = 0xBF;
  }
  return length;
}

void AppendUtf8(std::uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string DescribeByte(unsigned char c) {
  if (c >= 0x21 && c < 0x7F) return absl::StrFormat("'%c'", c);
  return absl::StrFormat("byte 0x%02X", c);
}

// Converts a complete number token with nlohmann's rules: an integer without
// '-' is number_unsigned if it fits uint64, one with '-' is number_integer if
// it fits int64; anything else (fraction, exponent, overflow) is
// number_float via strtod (so 1e400 is +inf, as nlohmann gives).
Json ConvertNumber(std::string_view token, bool is_float) {
  const char* first = token.data();
  const char* last = token.data() + token.size();
  if (!is_float) {
    if (token[0] != '-') {
      Json::number_unsigned_t value = 0;
      const auto [ptr, ec] = std::from_chars(first, last, value);
      if (ec == std::errc() && ptr == last) return Json(value);
    } else {
      Json::number_integer_t value = 0;
      const auto [ptr, ec] = std::from_chars(first, last, value);
      if (ec == std::errc() && ptr == last) return Json(value);
    }
  }
  std::string text(token);
  // strtod honours LC_NUMERIC; nlohmann substitutes the locale's decimal
  // point the same way.
  const std::lconv* conv = std::localeconv();
  const char point = (conv == nullptr || conv->decimal_point == nullptr)
                         ? '.'
                         : conv->decimal_point[0];
  if (point != '.') {
    for (char& c : text) {
      if (c == '.') c = point;
    }
  }
  return Json(
      static_cast<Json::number_float_t>(std::strtod(text.c_str(), nullptr)));
}

}  // namespace

struct PartialJsonParser::Impl {
  // One open container. Exactly one of `array` / `object` is set.
  struct Frame {
    Json::array_t* array = nullptr;
    Json::object_t* object = nullptr;
    // Key -> position in `object`, built once the object grows past
    // kIndexThreshold members.
    std::unique_ptr<absl::flat_hash_map<std::string, std::size_t>> index;
  };

  explicit Impl(const Options& options)
      : live(options.live), max_depth(options.max_depth) {}

  // Scans `size` more bytes of input. Returns kInvalidArgument on the first
  // syntax error (and stays failed).
  absl::Status Feed(const char* data, std::size_t size);

  // Ends the input: completes a pending top-level number and checks that one
  // whole value was read (whitespace-only input becomes `{}`).
  absl::Status End();

  // Inserts `value` where the next value goes (the root, the end of the open
  // array, or the open object under `key`) and returns its stable address.
  Json* Materialize(Json&& value);

  // A value has ended: back to the enclosing container, or done.
  void ValueDone() {
    state = stack.empty() ? State::kDone : State::kAfterValue;
  }

  // Shows the pending number's valid prefix in the DOM (live mode).
  void ShowPendingNumber();

  // Plain mode, at the start of a string value whose text is [p, end...):
  // reserves room for the whole decoded string so that long strings are
  // written once instead of being regrown.
  void ReserveString(const unsigned char* p, const unsigned char* end);

  // The pending number is complete: stores its value. A float that
  // overflows to infinity is an error, as in nlohmann's parser.
  absl::Status EndNumber();

  absl::Status Fail(std::size_t offset, std::string_view what) {
    state = State::kFailed;
    return absl::InvalidArgumentError(
        absl::StrFormat("invalid JSON at byte %d: %s", offset, what));
  }

  // Constant after construction.
  const bool live;
  const std::size_t max_depth;

  Json root;
  std::vector<Frame> stack;
  State state = State::kValue;

  // Strings: `str` is where decoded characters go (a string in the DOM, or
  // `key` while an object key is being read).
  std::string* str = nullptr;
  bool in_key = false;
  std::string key;
  std::uint32_t code_unit = 0;
  int hex_digits = 0;
  std::uint32_t high_surrogate = 0;
  bool want_low_surrogate = false;
  std::array<unsigned char, 4> utf8{};
  int utf8_size = 0;

  // Numbers: the token so far, its grammar position, the length of its
  // longest complete prefix and whether that prefix is a float, the DOM slot
  // (set once a digit is known) and the prefix length last shown there.
  std::string number;
  NumState num_state = NumState::kStart;
  std::size_t num_valid = 0;
  bool num_valid_float = false;
  Json* num_slot = nullptr;
  std::size_t num_shown = 0;
  std::size_t num_start = 0;  // offset of the number's first byte

  // Literals.
  Literal literal = Literal::kNull;
  std::size_t literal_pos = 0;

  int bom_pos = 0;

  // Bytes consumed so far (the offset of the next byte).
  std::size_t consumed = 0;
  // Instrumentation: bytes the scanner's cursor has advanced over.
  std::size_t bytes_scanned = 0;
  bool finished = false;
};

Json* PartialJsonParser::Impl::Materialize(Json&& value) {
  if (stack.empty()) {
    root = std::move(value);
    return &root;
  }
  Frame& frame = stack.back();
  if (frame.array != nullptr) {
    frame.array->push_back(std::move(value));
    return &frame.array->back();
  }
  // ordered_map's own insertion searches linearly; go to the underlying
  // vector and keep our own index instead. Duplicate keys: the last value
  // wins in the first key's position, as nlohmann's parser does.
  auto& members = static_cast<Json::object_t::Container&>(*frame.object);
  if (frame.index != nullptr) {
    const auto [it, inserted] = frame.index->try_emplace(key, members.size());
    if (!inserted) {
      Json& slot = members[it->second].second;
      slot = std::move(value);
      return &slot;
    }
  } else {
    for (auto& member : members) {
      if (member.first == key) {
        member.second = std::move(value);
        return &member.second;
      }
    }
    if (members.size() >= kIndexThreshold) {
      frame.index =
          std::make_unique<absl::flat_hash_map<std::string, std::size_t>>();
      frame.index->reserve(members.size() * 2);
      for (std::size_t i = 0; i < members.size(); ++i) {
        frame.index->try_emplace(members[i].first, i);
      }
      frame.index->try_emplace(key, members.size());
    }
  }
  members.emplace_back(std::move(key), std::move(value));
  return &members.back().second;
}

void PartialJsonParser::Impl::ShowPendingNumber() {
  if (num_slot == nullptr || num_valid == num_shown) return;
  if (num_valid > kSmallNumber && num_valid < 2 * num_shown) return;
  Json value = ConvertNumber(std::string_view(number).substr(0, num_valid),
                             num_valid_float);
  num_shown = num_valid;
  // An overflowing prefix (1e400) will fail at the end; keep what was shown.
  if (value.is_number_float() &&
      !std::isfinite(value.get<Json::number_float_t>())) {
    return;
  }
  *num_slot = std::move(value);
}

void PartialJsonParser::Impl::ReserveString(const unsigned char* p,
                                            const unsigned char* end) {
  // Find the closing quote: the first '"' preceded by an even number of
  // backslashes. Each backslash run is looked at once, for the quote after
  // it, so this is linear and (memchr) much faster than decoding.
  const unsigned char* q = p;
  for (;;) {
    const void* hit = std::memchr(q, '"', static_cast<std::size_t>(end - q));
    if (hit == nullptr) {
      q = end;
      break;
    }
    q = static_cast<const unsigned char*>(hit);
    const unsigned char* run = q;
    while (run > p && run[-1] == '\\') --run;
    if ((q - run) % 2 == 0) break;
    ++q;
  }
  // Escapes only shrink text, so the encoded length bounds the decoded one.
  const auto bound = static_cast<std::size_t>(q - p);
  if (bound > kReserveThreshold) str->reserve(bound);
}

absl::Status PartialJsonParser::Impl::EndNumber() {
  Json value = ConvertNumber(number, num_valid_float);
  if (value.is_number_float() &&
      !std::isfinite(value.get<Json::number_float_t>())) {
    return Fail(
        num_start,
        absl::StrFormat("number overflow parsing '%s'",
                        number.size() <= 40
                            ? number
                            : absl::StrCat(number.substr(0, 40), "...")));
  }
  *num_slot = std::move(value);
  num_slot = nullptr;
  ValueDone();
  return absl::OkStatus();
}

absl::Status PartialJsonParser::Impl::Feed(const char* data, std::size_t size) {
  const auto* const begin = reinterpret_cast<const unsigned char*>(data);
  const auto* const end = begin + size;
  const auto* p = begin;
  auto offset = [&](const unsigned char* at) {
    return consumed + static_cast<std::size_t>(at - begin);
  };
  auto skip_whitespace = [&] {
    while (p < end && IsWhitespace(*p)) ++p;
    return p < end;
  };
  auto fail = [&](const unsigned char* at, std::string_view what) {
    bytes_scanned += static_cast<std::size_t>(at - begin);
    return Fail(offset(at), what);
  };

  while (p < end) {
    switch (state) {
      case State::kString: {
        const unsigned char* run = p;
        for (;;) {
          while (p < end && kPlain[*p]) ++p;
          if (p == end) {
            str->append(reinterpret_cast<const char*>(run),
                        static_cast<std::size_t>(p - run));
            break;
          }
          const unsigned char c = *p;
          if (c >= 0x80) {
            const unsigned char* bad = nullptr;
            const int length = CheckUtf8(p, end, &bad);
            if (length > 0) {
              p += length;
              continue;
            }
            if (length < 0) return fail(bad, "invalid UTF-8 in string");
            // The sequence continues in the next fragment; hold its bytes
            // back so the DOM never shows half a character.
            str->append(reinterpret_cast<const char*>(run),
                        static_cast<std::size_t>(p - run));
            utf8_size = static_cast<int>(end - p);
            std::memcpy(utf8.data(), p, static_cast<std::size_t>(utf8_size));
            p = end;
            state = State::kUtf8;
            break;
          }
          str->append(reinterpret_cast<const char*>(run),
                      static_cast<std::size_t>(p - run));
          if (c == '"') {
            ++p;
            if (in_key) {
              state = State::kColon;
            } else {
              ValueDone();
            }
          } else if (c == '\\') {
            ++p;
            state = State::kEscape;
          } else {
            return fail(p, absl::StrFormat("control character %s in string",
                                           DescribeByte(c)));
          }
          break;
        }
        break;
      }

      case State::kUtf8: {
        utf8[static_cast<std::size_t>(utf8_size++)] = *p;
        const unsigned char* bad = nullptr;
        const int length =
            CheckUtf8(utf8.data(), utf8.data() + utf8_size, &bad);
        if (length < 0) return fail(p, "invalid UTF-8 in string");
        ++p;
        if (length > 0) {
          str->append(reinterpret_cast<const char*>(utf8.data()),
                      static_cast<std::size_t>(length));
          state = State::kString;
        }
        break;
      }

      case State::kEscape: {
        const unsigned char c = *p;
        char decoded;
        switch (c) {
          case '"':
            decoded = '"';
            break;
          case '\\':
            decoded = '\\';
            break;
          case '/':
            decoded = '/';
            break;
          case 'b':
            decoded = '\b';
            break;
          case 'f':
            decoded = '\f';
            break;
          case 'n':
            decoded = '\n';
            break;
          case 'r':
            decoded = '\r';
            break;
          case 't':
            decoded = '\t';
            break;
          case 'u':
            ++p;
            code_unit = 0;
            hex_digits = 0;
            want_low_surrogate = false;
            state = State::kUnicode;
            continue;
          default:
            return fail(p, absl::StrFormat("invalid escape '\\' followed by %s",
                                           DescribeByte(c)));
        }
        str->push_back(decoded);
        ++p;
        state = State::kString;
        break;
      }

      case State::kUnicode: {
        const int digit = HexValue(*p);
        if (digit < 0) {
          return fail(p, absl::StrFormat("expected a hex digit in \\u escape, "
                                         "got %s",
                                         DescribeByte(*p)));
        }
        code_unit = code_unit * 16 + static_cast<std::uint32_t>(digit);
        if (++hex_digits < 4) {
          ++p;
          break;
        }
        if (want_low_surrogate) {
          if (code_unit < 0xDC00 || code_unit > 0xDFFF) {
            return fail(p,
                        "a high surrogate must be followed by a low "
                        "surrogate (U+DC00..U+DFFF)");
          }
          AppendUtf8(0x10000 + ((high_surrogate - 0xD800) << 10) +
                         (code_unit - 0xDC00),
                     str);
          state = State::kString;
        } else if (code_unit >= 0xD800 && code_unit <= 0xDBFF) {
          high_surrogate = code_unit;
          state = State::kSurrogateBackslash;
        } else if (code_unit >= 0xDC00 && code_unit <= 0xDFFF) {
          return fail(p,
                      "a low surrogate must follow a high surrogate "
                      "(U+D800..U+DBFF)");
        } else {
          AppendUtf8(code_unit, str);
          state = State::kString;
        }
        ++p;
        break;
      }

      case State::kSurrogateBackslash:
      case State::kSurrogateU: {
        const bool backslash = state == State::kSurrogateBackslash;
        if (*p != (backslash ? '\\' : 'u')) {
          return fail(p,
                      "a high surrogate must be followed by a low "
                      "surrogate (U+DC00..U+DFFF)");
        }
        ++p;
        if (backslash) {
          state = State::kSurrogateU;
        } else {
          code_unit = 0;
          hex_digits = 0;
          want_low_surrogate = true;
          state = State::kUnicode;
        }
        break;
      }

      case State::kNumber: {
        bool ended = false;
        const unsigned char* run = p;
        while (p < end && !ended) {
          const unsigned char c = *p;
          switch (num_state) {
            case NumState::kStart:
              if (c == '-') {
                num_state = NumState::kMinus;
                break;
              }
              [[fallthrough]];
            case NumState::kMinus:
              if (!IsDigit(c)) {
                return fail(p, absl::StrFormat("expected a digit after '-', "
                                               "got %s",
                                               DescribeByte(c)));
              }
              num_state = c == '0' ? NumState::kZero : NumState::kInt;
              break;
            case NumState::kZero:
              if (IsDigit(c)) {
                return fail(p, "leading zeros are not allowed in numbers");
              }
              [[fallthrough]];
            case NumState::kInt:
              if (IsDigit(c)) {
                num_state = NumState::kInt;
              } else if (c == '.') {
                num_state = NumState::kDot;
              } else if (c == 'e' || c == 'E') {
                num_state = NumState::kExpMark;
              } else {
                ended = true;
              }
              break;
            case NumState::kDot:
              if (!IsDigit(c)) {
                return fail(p, absl::StrFormat("expected a digit after '.', "
                                               "got %s",
                                               DescribeByte(c)));
              }
              num_state = NumState::kFrac;
              break;
            case NumState::kFrac:
              if (c == 'e' || c == 'E') {
                num_state = NumState::kExpMark;
              } else if (!IsDigit(c)) {
                ended = true;
              }
              break;
            case NumState::kExpMark:
              if (c == '+' || c == '-') {
                num_state = NumState::kExpSign;
                break;
              }
              [[fallthrough]];
            case NumState::kExpSign:
              if (!IsDigit(c)) {
                return fail(p, absl::StrFormat("expected a digit in the "
                                               "exponent, got %s",
                                               DescribeByte(c)));
              }
              num_state = NumState::kExpDigits;
              break;
            case NumState::kExpDigits:
              if (!IsDigit(c)) ended = true;
              break;
          }
          if (ended) break;
          ++p;
          if (IsDigit(c)) {
            // Every digit completes a valid prefix.
            num_valid = number.size() + static_cast<std::size_t>(p - run);
            num_valid_float =
                num_state != NumState::kInt && num_state != NumState::kZero;
            if (num_slot == nullptr) num_slot = Materialize(Json());
          }
        }
        number.append(reinterpret_cast<const char*>(run),
                      static_cast<std::size_t>(p - run));
        if (ended) {
          // `*p` ends the number and is scanned again in the next state.
          if (absl::Status status = EndNumber(); !status.ok()) {
            bytes_scanned += static_cast<std::size_t>(p - begin);
            return status;
          }
        }
        break;
      }

      case State::kLiteral: {
        const std::string_view text = LiteralText(literal);
        while (p < end && literal_pos < text.size()) {
          if (*p != static_cast<unsigned char>(text[literal_pos])) {
            return fail(
                p, absl::StrFormat("invalid literal (expected '%s')", text));
          }
          ++p;
          ++literal_pos;
        }
        if (literal_pos == text.size()) {
          switch (literal) {
            case Literal::kTrue:
              Materialize(Json(true));
              break;
            case Literal::kFalse:
              Materialize(Json(false));
              break;
            case Literal::kNull:
              Materialize(Json(nullptr));
              break;
          }
          ValueDone();
        }
        break;
      }

      case State::kObjectFirst:
      case State::kObjectKey: {
        if (!skip_whitespace()) break;
        const unsigned char c = *p;
        if (c == '}' && state == State::kObjectFirst) {
          ++p;
          stack.pop_back();
          ValueDone();
          break;
        }
        if (c != '"') {
          return fail(p, absl::StrCat(state == State::kObjectFirst
                                          ? "expected a key or '}', got "
                                          : "expected a key, got ",
                                      DescribeByte(c)));
        }
        ++p;
        key.clear();
        str = &key;
        in_key = true;
        state = State::kString;
        break;
      }

      case State::kColon: {
        if (!skip_whitespace()) break;
        if (*p != ':') {
          return fail(
              p, absl::StrFormat("expected ':', got %s", DescribeByte(*p)));
        }
        ++p;
        state = State::kValue;
        break;
      }

      case State::kAfterValue: {
        if (!skip_whitespace()) break;
        const unsigned char c = *p;
        const bool in_object = stack.back().object != nullptr;
        if (c == ',') {
          ++p;
          state = in_object ? State::kObjectKey : State::kValue;
        } else if (c == (in_object ? '}' : ']')) {
          ++p;
          stack.pop_back();
          ValueDone();
        } else {
          return fail(p, absl::StrCat(in_object ? "expected ',' or '}', got "
                                                : "expected ',' or ']', got ",
                                      DescribeByte(c)));
        }
        break;
      }

      case State::kDone: {
        if (!skip_whitespace()) break;
        return fail(p, absl::StrFormat("unexpected %s after the top-level "
                                       "value",
                                       DescribeByte(*p)));
      }

      case State::kBom: {
        static constexpr unsigned char kBomBytes[] = {0xEF, 0xBB, 0xBF};
        if (*p != kBomBytes[bom_pos]) {
          return fail(p, "invalid byte order mark");
        }
        ++p;
        if (++bom_pos == 3) state = State::kValue;
        break;
      }

      case State::kValue:
      case State::kArrayFirst: {
        if (!skip_whitespace()) break;
        const unsigned char c = *p;
        if (c == ']' && state == State::kArrayFirst) {
          ++p;
          stack.pop_back();
          ValueDone();
          break;
        }
        switch (c) {
          case '"':
            str = Materialize(Json(Json::value_t::string))
                      ->get_ptr<Json::string_t*>();
            in_key = false;
            state = State::kString;
            if (!live) ReserveString(p + 1, end);
            break;
          case '{':
          case '[': {
            if (stack.size() >= max_depth) {
              return fail(p, absl::StrFormat("nesting too deep (max_depth %d)",
                                             max_depth));
            }
            Frame frame;
            if (c == '{') {
              frame.object = Materialize(Json(Json::value_t::object))
                                 ->get_ptr<Json::object_t*>();
              state = State::kObjectFirst;
            } else {
              frame.array = Materialize(Json(Json::value_t::array))
                                ->get_ptr<Json::array_t*>();
              state = State::kArrayFirst;
            }
            stack.push_back(std::move(frame));
            break;
          }
          case 't':
          case 'f':
          case 'n':
            literal = c == 't'   ? Literal::kTrue
                      : c == 'f' ? Literal::kFalse
                                 : Literal::kNull;
            literal_pos = 0;
            state = State::kLiteral;
            continue;
          default:
            if (c == '-' || IsDigit(c)) {
              // The number state consumes this byte too.
              number.clear();
              num_state = NumState::kStart;
              num_start = offset(p);
              num_valid = 0;
              num_shown = 0;
              num_slot = nullptr;
              state = State::kNumber;
              continue;
            }
            if (c == 0xEF && offset(p) == 0) {
              // nlohmann skips a UTF-8 byte order mark at the very start.
              bom_pos = 0;
              state = State::kBom;
              continue;
            }
            return fail(p, absl::StrFormat("unexpected %s, expected a value",
                                           DescribeByte(c)));
        }
        ++p;
        break;
      }

      case State::kFailed:
        return fail(p, "parser already failed");
    }
  }
  if (live && state == State::kNumber) ShowPendingNumber();
  consumed += size;
  bytes_scanned += size;
  return absl::OkStatus();
}

absl::Status PartialJsonParser::Impl::End() {
  if (state == State::kNumber &&
      (num_state == NumState::kZero || num_state == NumState::kInt ||
       num_state == NumState::kFrac || num_state == NumState::kExpDigits)) {
    TOOLMESH_RETURN_IF_ERROR(EndNumber());
  }
  if (state == State::kDone) return absl::OkStatus();
  if (state == State::kValue && stack.empty()) {
    // Nothing but whitespace (and perhaps a byte order mark): a tool without
    // arguments.
    root = Json::object();
    state = State::kDone;
    return absl::OkStatus();
  }
  std::string_view where;
  switch (state) {
    case State::kString:
    case State::kUtf8:
    case State::kEscape:
    case State::kUnicode:
    case State::kSurrogateBackslash:
    case State::kSurrogateU:
      where = in_key ? "inside an object key" : "inside a string";
      break;
    case State::kNumber:
      where = "inside a number";
      break;
    case State::kLiteral:
      where = "inside a literal";
      break;
    case State::kBom:
      where = "inside the byte order mark";
      break;
    case State::kColon:
      where = "expected ':'";
      break;
    default:
      where = stack.empty()                    ? "expected a value"
              : stack.back().object != nullptr ? "inside an object"
                                               : "inside an array";
      break;
  }
  state = State::kFailed;
  return absl::InvalidArgumentError(absl::StrFormat(
      "unexpected end of input at byte %d (%s)", consumed, where));
}

PartialJsonParser::PartialJsonParser() : PartialJsonParser(Options()) {}

PartialJsonParser::PartialJsonParser(Options options)
    : options_(options), impl_(std::make_unique<Impl>(options)) {}

PartialJsonParser::PartialJsonParser(PartialJsonParser&&) noexcept = default;
PartialJsonParser& PartialJsonParser::operator=(PartialJsonParser&&) noexcept =
    default;
PartialJsonParser::~PartialJsonParser() = default;

absl::Status PartialJsonParser::Append(std::string_view fragment) {
  if (impl_ == nullptr) {
    return absl::FailedPreconditionError("PartialJsonParser was moved from");
  }
  if (impl_->finished) {
    return absl::FailedPreconditionError("Append() after Finish()");
  }
  raw_.append(fragment);
  if (!status_.ok()) return status_;
  if (options_.live) status_ = impl_->Feed(fragment.data(), fragment.size());
  return status_;
}

const Json& PartialJsonParser::Partial() const {
  static const Json* const kNull = new Json();
  return impl_ == nullptr ? *kNull : impl_->root;
}

bool PartialJsonParser::complete() const {
  return impl_ != nullptr && impl_->state == State::kDone;
}

std::size_t PartialJsonParser::bytes_scanned() const {
  return impl_ == nullptr ? 0 : impl_->bytes_scanned;
}

absl::StatusOr<Json> PartialJsonParser::Finish() {
  if (impl_ == nullptr) {
    return absl::FailedPreconditionError("PartialJsonParser was moved from");
  }
  if (impl_->finished) {
    if (!status_.ok()) return status_;
    return absl::FailedPreconditionError("Finish() already returned the value");
  }
  impl_->finished = true;
  if (status_.ok() && !options_.live) {
    status_ = impl_->Feed(raw_.data(), raw_.size());
  }
  if (status_.ok()) status_ = impl_->End();
  if (!status_.ok()) return status_;
  // Moved, not copied: a tool input can be megabytes, and copying it here
  // would double the peak memory and the time spent in the allocator.
  Json value = std::move(impl_->root);
  impl_->root = Json();
  return value;
}

}  // namespace toolmesh::common
