// Tests for PartialJsonParser: differential against nlohmann's parser under
// every fragmentation, live snapshots, strictness, limits, linearity, and the
// recorded streams' real tool inputs.
#include "common/partial_json.h"

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::common {
namespace {

using ::testing::HasSubstr;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

// Equal values of equal nlohmann types (1 vs 1.0 vs -1 as stored), keys in
// the same order.
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
    auto ia = a.begin();
    auto ib = b.begin();
    for (; ia != a.end(); ++ia, ++ib) {
      if (ia.key() != ib.key() || !SameJson(ia.value(), ib.value())) {
        return false;
      }
    }
    return true;
  }
  return a == b;
}

MATCHER_P(SameJsonAs, expected, DumpJson(expected)) {
  *result_listener << "which is " << DumpJson(arg);
  return SameJson(arg, expected);
}

std::vector<std::string> SplitEvery(std::string_view text, std::size_t n) {
  std::vector<std::string> pieces;
  for (std::size_t i = 0; i < text.size(); i += n) {
    pieces.emplace_back(text.substr(i, n));
  }
  return pieces;
}

// Feeds `pieces` and returns Finish()'s result. In live mode also checks that
// Partial() after the last fragment equals the final value when the value
// was complete by then.
absl::StatusOr<Json> Feed(const std::vector<std::string>& pieces, bool live) {
  PartialJsonParser parser(PartialJsonParser::Options{.live = live});
  for (const auto& piece : pieces) {
    if (!parser.Append(piece).ok()) break;
  }
  Json before_finish = parser.Partial();
  bool was_complete = parser.complete();
  absl::StatusOr<Json> result = parser.Finish();
  if (result.ok()) {
    EXPECT_TRUE(parser.Partial().is_null());  // moved out
    EXPECT_TRUE(parser.complete());
    // Live: what was shown after the last fragment is the final value (a
    // top-level number is shown before Finish() makes it complete).
    if (live && (was_complete || !before_finish.is_null())) {
      EXPECT_THAT(before_finish, SameJsonAs(*result));
    }
  }
  return result;
}

// All the fragmentations the differential tests use: whole, then every
// fragment size 1..16.
std::vector<std::vector<std::string>> Fragmentations(std::string_view text) {
  std::vector<std::vector<std::string>> all;
  all.push_back({std::string(text)});
  for (std::size_t n = 1; n <= 16; ++n) all.push_back(SplitEvery(text, n));
  return all;
}

const char* const kValidDocuments[] = {
    R"({})",
    R"([])",
    R"({"a":1})",
    R"(  {"path": "src/main.cc", "content": "line 1\nline \"2\"\n\\tab\t"}  )",
    R"({"a": [1, -2, 3.5, -0, 0, -0.0, 1e3, 1E+3, 2e-3, 12.5e10], "b": {}})",
    R"([true, false, null, "", [], {}, [[[]]], {"x": {"y": {"z": null}}}])",
    R"("just a string")",
    R"(42)",
    R"(-7)",
    R"(0)",
    R"(3.25)",
    R"(true)",
    R"(null)",
    R"(18446744073709551615)",
    R"(18446744073709551616)",
    R"(-9223372036854775808)",
    R"(-9223372036854775809)",
    R"(9223372036854775807)",
    R"([1e-400, 1.7976931348623157e308, 123456789012345678901234567890])",
    R"("\u00e9\u00E9 \u20ac \ud83d\ude00 \uD834\uDD1E \u0000 \u001f \/")",
    "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xed\x9f\xbf \xef\xbf\xbf\"",
    R"({"a": 1, "b": 2, "a": 3})",
    R"({"k": "v", "k": {"nested": [1]}, "other": true, "k": "last"})",
    R"(["\b\f\n\r\t\"\\\/"])",
    " \t\r\n[ 1 , 2 ]\n",
    "\xef\xbb\xbf{\"bom\": true}",
    R"({"":""})",
    R"({"deep": [[[[[[[[[[1]]]]]]]]]]})",
    R"({"keys with \"escapes\"\n": "and \\u: \\u1234"})",
    "\"DEL \x7f is allowed raw\"",
};

const char* const kInvalidDocuments[] = {
    R"({"ns": "App\Http"})",
    R"("\d")",
    R"("\x41")",
    R"("\u12G4")",
    R"("\ud83d")",
    R"("\ud83d x")",
    R"("\ud83d\u0041")",
    R"("\ude00")",
    "\"raw\ttab\"",
    "\"raw\nnewline\"",
    R"(01)",
    R"(-01)",
    R"(1.)",
    R"(1.e5)",
    R"(.5)",
    R"(-)",
    R"(-a)",
    R"(+1)",
    R"(1e)",
    R"(1e+)",
    R"(0x10)",
    R"(1e400)",
    R"([-1e400])",
    R"({"n": 1e309})",
    R"([1,])",
    R"({"a":1,})",
    R"([,1])",
    R"({,})",
    R"({'a': 1})",
    R"(['a'])",
    R"(NaN)",
    R"(Infinity)",
    R"([1] // comment)",
    R"(/* c */ [1])",
    R"({} {})",
    R"(1 2)",
    R"([1] x)",
    R"({"a" 1})",
    R"({"a": 1 "b": 2})",
    R"({1: 2})",
    R"([1}])",
    R"({"a": 1])",
    R"(tru)",
    R"(trUe)",
    R"(nul)",
    R"(falsey)",
    R"({"a": )",
    R"({"a")",
    R"({)",
    R"([)",
    R"("unterminated)",
    R"("abc\)",
    R"("\u00)",
    "\"\xc3\x28\"",
    "\"\xc0\xaf\"",
    "\"\xe0\x80\xaf\"",
    "\"\xed\xa0\x80\"",
    "\"\xf4\x90\x80\x80\"",
    "\"\xff\"",
    "\"\x80\"",
    "\"\xe2\x82\"",
    "\xef\xbb{}",
    "\xef{}",
    "{}\xef\xbb\xbf",
    "\x7f",
};

TEST(PartialJsonParserTest, ValidDocumentsMatchNlohmannUnderEverySplit) {
  for (const char* doc : kValidDocuments) {
    SCOPED_TRACE(doc);
    absl::StatusOr<Json> expected = ParseJson(doc);
    for (bool live : {false, true}) {
      SCOPED_TRACE(live ? "live" : "plain");
      for (const auto& pieces : Fragmentations(doc)) {
        SCOPED_TRACE(absl::StrCat("fragment size ", pieces.front().size()));
        absl::StatusOr<Json> actual = Feed(pieces, live);
        ASSERT_EQ(actual.ok(), expected.ok()) << actual.status();
        if (expected.ok()) {
          EXPECT_THAT(*actual, SameJsonAs(*expected));
        }
      }
    }
  }
}

TEST(PartialJsonParserTest, InvalidDocumentsAreRejectedUnderEverySplit) {
  for (const char* doc : kInvalidDocuments) {
    SCOPED_TRACE(doc);
    // The list only holds what a strict parser rejects.
    ASSERT_FALSE(ParseJson(doc).ok());
    for (bool live : {false, true}) {
      SCOPED_TRACE(live ? "live" : "plain");
      for (const auto& pieces : Fragmentations(doc)) {
        SCOPED_TRACE(absl::StrCat("fragment size ", pieces.front().size()));
        EXPECT_THAT(Feed(pieces, live),
                    StatusIs(absl::StatusCode::kInvalidArgument));
      }
    }
  }
}

TEST(PartialJsonParserTest, NumbersGetNlohmannsTypes) {
  struct Case {
    const char* text;
    Json::value_t type;
  };
  const Case cases[] = {
      {"0", Json::value_t::number_unsigned},
      {"5", Json::value_t::number_unsigned},
      {"-0", Json::value_t::number_integer},
      {"-5", Json::value_t::number_integer},
      {"1.0", Json::value_t::number_float},
      {"1e2", Json::value_t::number_float},
      {"18446744073709551615", Json::value_t::number_unsigned},
      {"18446744073709551616", Json::value_t::number_float},
      {"-9223372036854775808", Json::value_t::number_integer},
      {"-9223372036854775809", Json::value_t::number_float},
  };
  for (const Case& c : cases) {
    for (bool live : {false, true}) {
      PartialJsonParser parser(PartialJsonParser::Options{.live = live});
      ASSERT_THAT(parser.Append(c.text), IsOk());
      absl::StatusOr<Json> value = parser.Finish();
      ASSERT_THAT(value, IsOk());
      EXPECT_EQ(value->type(), c.type) << c.text;
      EXPECT_EQ(DumpJson(*value), DumpJson(*ParseJson(c.text))) << c.text;
    }
  }
}

TEST(PartialJsonParserTest, PartialShowsWhatHasArrivedSoFar) {
  struct Snapshot {
    const char* prefix;
    const char* partial;  // as JSON; "" for null
  };
  const Snapshot snapshots[] = {
      {"", ""},
      {"  ", ""},
      {"{", "{}"},
      {R"({"pa)", "{}"},
      {R"({"path")", "{}"},
      {R"({"path":)", "{}"},
      {R"({"path": )", "{}"},
      {R"({"path": ")", R"({"path":""})"},
      {R"({"path": "a.t)", R"({"path":"a.t"})"},
      {R"({"path": "a.txt", "content": "hel)",
       R"({"path":"a.txt","content":"hel"})"},
      {R"({"path": "a.txt", "con)", R"({"path":"a.txt"})"},
      {R"({"s": "ab\)", R"({"s":"ab"})"},
      {R"({"s": "ab\n)", R"({"s":"ab\n"})"},
      {R"({"s": "ab\u00)", R"({"s":"ab"})"},
      {R"({"s": "ab\u00e9)", "{\"s\":\"ab\xc3\xa9\"}"},
      {R"({"s": "\ud83d)", R"({"s":""})"},
      {R"({"s": "\ud83d\ude00)", "{\"s\":\"\xf0\x9f\x98\x80\"}"},
      {"{\"s\": \"caf\xc3", R"({"s":"caf"})"},
      {R"({"a": [[1, 2], [3)", R"({"a":[[1,2],[3]]})"},
      {R"({"a": [[1, 2], [)", R"({"a":[[1,2],[]]})"},
      {R"({"a": [[1, 2], )", R"({"a":[[1,2]]})"},
      {R"({"a": {"b": {"c": "d)", R"({"a":{"b":{"c":"d"}}})"},
      {R"({"a": tr)", "{}"},
      {R"({"a": true)", R"({"a":true})"},
      {R"({"a": nul)", "{}"},
      {R"({"a": null)", R"({"a":null})"},
      {R"({"n": -)", "{}"},
      {R"({"n": -1)", R"({"n":-1})"},
      {R"({"n": 12)", R"({"n":12})"},
      {R"({"n": 12.)", R"({"n":12})"},
      {R"({"n": 12.5)", R"({"n":12.5})"},
      {R"({"n": 12.5e)", R"({"n":12.5})"},
      {R"({"n": 12.5e-)", R"({"n":12.5})"},
      {R"({"n": 12.5e-1)", R"({"n":1.25})"},
      {R"({"a": 1, "a": "x)", R"({"a":"x"})"},
      {R"([)", "[]"},
      {R"(["x", "y)", R"(["x","y"])"},
      {R"("tex)", R"("tex")"},
      {R"(12)", "12"},
  };
  for (const Snapshot& s : snapshots) {
    SCOPED_TRACE(s.prefix);
    const Json expected = *s.partial == '\0' ? Json() : *ParseJson(s.partial);
    // Whole prefix at once, and byte by byte.
    for (std::size_t n : {std::size_t{1000}, std::size_t{1}}) {
      PartialJsonParser parser(PartialJsonParser::Options{.live = true});
      for (const auto& piece : SplitEvery(s.prefix, n)) {
        ASSERT_THAT(parser.Append(piece), IsOk());
      }
      EXPECT_THAT(parser.Partial(), SameJsonAs(expected));
    }
  }
}

TEST(PartialJsonParserTest, PlainModeOnlyBuffersUntilFinish) {
  PartialJsonParser parser;
  ASSERT_THAT(parser.Append(R"({"a": "b")"), IsOk());
  EXPECT_TRUE(parser.Partial().is_null());
  EXPECT_FALSE(parser.complete());
  ASSERT_THAT(parser.Append("}"), IsOk());
  EXPECT_FALSE(parser.complete());
  absl::StatusOr<Json> value = parser.Finish();
  ASSERT_THAT(value, IsOk());
  EXPECT_THAT(*value, SameJsonAs(Json{{"a", "b"}}));
  EXPECT_TRUE(parser.complete());
}

TEST(PartialJsonParserTest, PartialAfterEveryFragmentIsAPrefixOfTheFinalValue) {
  // The partial string value only ever grows, and ends as the final one.
  const std::string doc =
      R"({"path": "/tmp/x", "content": "a\nb\"c\\d \u00e9 \ud83d\ude00 end"})";
  PartialJsonParser parser(PartialJsonParser::Options{.live = true});
  std::string last;
  for (const auto& piece : SplitEvery(doc, 3)) {
    ASSERT_THAT(parser.Append(piece), IsOk());
    std::string now(GetString(parser.Partial(), "content"));
    EXPECT_EQ(now.compare(0, last.size(), last), 0) << now;
    last = now;
  }
  absl::StatusOr<Json> final_value = parser.Finish();
  ASSERT_THAT(final_value, IsOk());
  EXPECT_EQ(last, GetString(*final_value, "content"));
  EXPECT_THAT(*final_value, SameJsonAs(*ParseJson(doc)));
}

TEST(PartialJsonParserTest, InvalidEscapeReportsItsByteOffset) {
  // PHP namespaces (anthropic-sdk-typescript#986): the 'H' is at byte 12.
  const std::string doc = R"({"ns": "App\Http"})";
  ASSERT_EQ(doc[12], 'H');
  {
    PartialJsonParser parser(PartialJsonParser::Options{.live = true});
    ASSERT_THAT(parser.Append(doc.substr(0, 10)), IsOk());
    EXPECT_THAT(parser.Append(doc.substr(10)),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("at byte 12: invalid escape")));
  }
  {
    PartialJsonParser parser;
    ASSERT_THAT(parser.Append(doc), IsOk());
    EXPECT_THAT(parser.Finish(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("at byte 12: invalid escape")));
  }
}

TEST(PartialJsonParserTest, ErrorIsStickyAndRawTextIsKept) {
  PartialJsonParser parser(PartialJsonParser::Options{.live = true});
  ASSERT_THAT(parser.Append(R"({"re": "\d+)"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  const absl::Status first = parser.status();
  EXPECT_THAT(std::string(first.message()), HasSubstr("at byte 9"));
  EXPECT_EQ(parser.Append(R"(", "ok": true})"), first);
  EXPECT_EQ(parser.raw(), R"({"re": "\d+", "ok": true})");
  EXPECT_EQ(parser.Finish().status(), first);
  EXPECT_EQ(parser.Finish().status(), first);
  EXPECT_EQ(parser.status(), first);
}

TEST(PartialJsonParserTest, TruncatedInputIsUnexpectedEnd) {
  for (bool live : {false, true}) {
    PartialJsonParser parser(PartialJsonParser::Options{.live = live});
    const std::string doc = R"({"content": "cut off mid-str)";
    ASSERT_THAT(parser.Append(doc), IsOk());
    EXPECT_THAT(parser.Finish(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(absl::StrCat("unexpected end of input at "
                                                "byte ",
                                                doc.size()))));
  }
}

TEST(PartialJsonParserTest, DepthLimitIsEnforced) {
  auto nested = [](std::size_t depth) {
    return std::string(depth, '[') + std::string(depth, ']');
  };
  for (bool live : {false, true}) {
    {
      PartialJsonParser parser({.live = live, .max_depth = 3});
      ASSERT_THAT(parser.Append(nested(3)), IsOk());
      EXPECT_THAT(parser.Finish(), IsOk());
    }
    {
      PartialJsonParser parser({.live = live, .max_depth = 3});
      parser.Append(R"({"a": [{"b": 1}]})").IgnoreError();
      EXPECT_THAT(parser.Finish(), IsOk());
    }
    {
      PartialJsonParser parser({.live = live, .max_depth = 3});
      parser.Append(nested(4)).IgnoreError();
      EXPECT_THAT(parser.Finish(), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("nesting too deep")));
    }
    {
      PartialJsonParser parser({.live = live});
      ASSERT_THAT(parser.Append(nested(512)), IsOk());
      EXPECT_THAT(parser.Finish(), IsOk());
    }
    {
      PartialJsonParser parser({.live = live});
      parser.Append(nested(100000)).IgnoreError();
      EXPECT_THAT(parser.Finish(), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("nesting too deep")));
    }
  }
}

TEST(PartialJsonParserTest, EmptyOrWhitespaceInputGivesEmptyObject) {
  for (bool live : {false, true}) {
    for (const char* text : {"", " ", "\n\t\r ", "\xef\xbb\xbf"}) {
      PartialJsonParser parser(PartialJsonParser::Options{.live = live});
      ASSERT_THAT(parser.Append(text), IsOk());
      EXPECT_TRUE(parser.Partial().is_null());
      absl::StatusOr<Json> value = parser.Finish();
      ASSERT_THAT(value, IsOk());
      EXPECT_THAT(*value, SameJsonAs(Json::object()));
    }
    PartialJsonParser no_fragments(PartialJsonParser::Options{.live = live});
    EXPECT_THAT(no_fragments.Finish(), IsOk());
  }
}

TEST(PartialJsonParserTest, RawControlCharactersInStringsAreRejected) {
  for (char c = 0; c < 0x20; ++c) {
    const std::string doc = absl::StrCat("\"a", std::string(1, c), "b\"");
    ASSERT_FALSE(ParseJson(doc).ok());
    for (bool live : {false, true}) {
      PartialJsonParser parser(PartialJsonParser::Options{.live = live});
      parser.Append(doc).IgnoreError();
      EXPECT_THAT(parser.Finish(),
                  StatusIs(absl::StatusCode::kInvalidArgument,
                           HasSubstr("at byte 2: control character")));
    }
  }
  // Escaped, the same characters are fine (NUL included).
  PartialJsonParser parser;
  ASSERT_THAT(parser.Append(R"("a\u0000b\u001f")"), IsOk());
  absl::StatusOr<Json> value = parser.Finish();
  ASSERT_THAT(value, IsOk());
  EXPECT_EQ(value->get<std::string>(), std::string("a\0b\x1f", 4));
}

TEST(PartialJsonParserTest, NulByteAfterTheValueIsRejected) {
  // nlohmann's lexer treats NUL as the end of input and accepts this; it is
  // not JSON (RFC 8259), so we follow the RFC.
  const std::string doc("{\"a\": 5}\0{junk", 14);
  for (bool live : {false, true}) {
    PartialJsonParser parser(PartialJsonParser::Options{.live = live});
    parser.Append(doc).IgnoreError();
    EXPECT_THAT(parser.Finish(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("at byte 8: unexpected byte 0x00")));
  }
}

TEST(PartialJsonParserTest, UnicodeEscapeSplitAcrossFragments) {
  PartialJsonParser parser(PartialJsonParser::Options{.live = true});
  ASSERT_THAT(parser.Append(R"({"s": "caf\u00)"), IsOk());
  EXPECT_EQ(GetString(parser.Partial(), "s"), "caf");
  ASSERT_THAT(parser.Append(R"(e9"})"), IsOk());
  EXPECT_EQ(GetString(parser.Partial(), "s"), "caf\xc3\xa9");
  EXPECT_TRUE(parser.complete());
}

TEST(PartialJsonParserTest, SurrogatePairSplitAtEveryByte) {
  const std::string doc = R"("<\ud83d\ude00>")";
  for (std::size_t cut = 0; cut <= doc.size(); ++cut) {
    for (bool live : {false, true}) {
      PartialJsonParser parser(PartialJsonParser::Options{.live = live});
      ASSERT_THAT(parser.Append(doc.substr(0, cut)), IsOk());
      ASSERT_THAT(parser.Append(doc.substr(cut)), IsOk());
      absl::StatusOr<Json> value = parser.Finish();
      ASSERT_THAT(value, IsOk());
      EXPECT_EQ(value->get<std::string>(), "<\xf0\x9f\x98\x80>");
    }
  }
}

TEST(PartialJsonParserTest, RawUtf8SplitAcrossFragmentsIsHeldBack) {
  PartialJsonParser parser(PartialJsonParser::Options{.live = true});
  ASSERT_THAT(parser.Append("\"a\xf0\x9f"), IsOk());
  EXPECT_EQ(parser.Partial().get<std::string>(), "a");
  ASSERT_THAT(parser.Append("\x98"), IsOk());
  EXPECT_EQ(parser.Partial().get<std::string>(), "a");
  ASSERT_THAT(parser.Append("\x80"), IsOk());
  EXPECT_EQ(parser.Partial().get<std::string>(), "a\xf0\x9f\x98\x80");
  EXPECT_THAT(parser.Append("\xc3"), IsOk());
  EXPECT_THAT(parser.Append("("), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("invalid UTF-8")));
}

TEST(PartialJsonParserTest, DuplicateKeysKeepFirstPositionAndLastValue) {
  for (bool live : {false, true}) {
    PartialJsonParser parser(PartialJsonParser::Options{.live = live});
    ASSERT_THAT(parser.Append(R"({"a": 1, "b": 2, "a": 3})"), IsOk());
    absl::StatusOr<Json> value = parser.Finish();
    ASSERT_THAT(value, IsOk());
    EXPECT_EQ(DumpJson(*value), R"({"a":3,"b":2})");
  }
}

TEST(PartialJsonParserTest, LargeObjectsWithDuplicatesMatchNlohmann) {
  // Past the size where members get a hash index.
  std::string doc = "{";
  for (int i = 0; i < 3000; ++i) {
    absl::StrAppend(&doc, i == 0 ? "" : ",", "\"k", i % 1000, "\":", i);
  }
  doc += "}";
  const Json expected = *ParseJson(doc);
  ASSERT_EQ(expected.size(), 1000u);
  for (bool live : {false, true}) {
    absl::StatusOr<Json> actual = Feed(SplitEvery(doc, 7), live);
    ASSERT_THAT(actual, IsOk());
    EXPECT_THAT(*actual, SameJsonAs(expected));
  }
}

TEST(PartialJsonParserTest, LiveModeScansEachByteOnceAndUpdatesInPlace) {
  // A 1 MiB string-heavy tool input in 40-byte fragments.
  std::string content;
  while (content.size() < (1 << 20)) {
    content += "line with \\\"quotes\\\", a \\\\ and caf\xc3\xa9 \\u00e9\\n";
  }
  const std::string doc =
      absl::StrCat(R"({"path": "big.txt", "content": ")", content, "\"}");
  PartialJsonParser parser(PartialJsonParser::Options{.live = true});
  const Json* content_node = nullptr;
  std::size_t fragments = 0;
  std::size_t last_length = 0;
  for (const auto& piece : SplitEvery(doc, 40)) {
    ASSERT_THAT(parser.Append(piece), IsOk());
    ++fragments;
    // The scanner never revisits earlier bytes.
    ASSERT_EQ(parser.bytes_scanned(), parser.raw().size());
    const Json& partial = parser.Partial();
    if (partial.contains("content")) {
      // The string node is created once and grown in place, never rebuilt.
      const Json* node = &partial["content"];
      if (content_node == nullptr) content_node = node;
      ASSERT_EQ(node, content_node);
      const std::size_t length = node->get_ref<const std::string&>().size();
      ASSERT_GE(length, last_length);
      last_length = length;
    }
  }
  EXPECT_EQ(fragments, (doc.size() + 39) / 40);
  EXPECT_EQ(parser.bytes_scanned(), doc.size());
  absl::StatusOr<Json> value = parser.Finish();
  ASSERT_THAT(value, IsOk());
  EXPECT_EQ(parser.bytes_scanned(), doc.size());
  EXPECT_THAT(*value, SameJsonAs(*ParseJson(doc)));
}

TEST(PartialJsonParserTest, PlainModeScansOnceAtFinish) {
  const std::string doc = R"({"a": [1, 2, 3], "b": "text"})";
  PartialJsonParser parser;
  for (const auto& piece : SplitEvery(doc, 4)) {
    ASSERT_THAT(parser.Append(piece), IsOk());
    EXPECT_EQ(parser.bytes_scanned(), 0u);
  }
  ASSERT_THAT(parser.Finish(), IsOk());
  EXPECT_EQ(parser.bytes_scanned(), doc.size());
  EXPECT_THAT(parser.Finish(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(parser.bytes_scanned(), doc.size());
}

TEST(PartialJsonParserTest, CompleteTracksTheTopLevelValue) {
  PartialJsonParser parser(PartialJsonParser::Options{.live = true});
  ASSERT_THAT(parser.Append(R"({"a": [1)"), IsOk());
  EXPECT_FALSE(parser.complete());
  ASSERT_THAT(parser.Append("]}"), IsOk());
  EXPECT_TRUE(parser.complete());
  ASSERT_THAT(parser.Append(" \n"), IsOk());
  EXPECT_TRUE(parser.complete());

  PartialJsonParser number(PartialJsonParser::Options{.live = true});
  ASSERT_THAT(number.Append("12"), IsOk());
  EXPECT_FALSE(number.complete());  // more digits may follow
  ASSERT_THAT(number.Append("3"), IsOk());
  EXPECT_THAT(number.Partial(), SameJsonAs(Json(123u)));
  absl::StatusOr<Json> value = number.Finish();
  ASSERT_THAT(value, IsOk());
  EXPECT_TRUE(number.complete());
  EXPECT_THAT(*value, SameJsonAs(Json(123u)));
}

TEST(PartialJsonParserTest, FinishMovesTheValueOutOnce) {
  PartialJsonParser parser(PartialJsonParser::Options{.live = true});
  ASSERT_THAT(parser.Append(R"({"a": 1})"), IsOk());
  EXPECT_EQ(DumpJson(parser.Partial()), R"({"a":1})");
  absl::StatusOr<Json> first = parser.Finish();
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(DumpJson(*first), R"({"a":1})");
  EXPECT_TRUE(parser.Partial().is_null());
  EXPECT_TRUE(parser.complete());
  EXPECT_THAT(parser.Append("{}"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(parser.raw(), R"({"a": 1})");
  EXPECT_THAT(parser.Finish(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(PartialJsonParserTest, MovedParserKeepsParsing) {
  PartialJsonParser parser(PartialJsonParser::Options{.live = true});
  ASSERT_THAT(parser.Append(R"({"a": ["x", "y)"), IsOk());
  PartialJsonParser moved(std::move(parser));
  ASSERT_THAT(moved.Append(R"(z"], "b": )"), IsOk());
  PartialJsonParser assigned;
  assigned = std::move(moved);
  EXPECT_EQ(DumpJson(assigned.Partial()), R"({"a":["x","yz"]})");
  ASSERT_THAT(assigned.Append("2}"), IsOk());
  EXPECT_EQ(assigned.raw(), R"({"a": ["x", "yz"], "b": 2})");
  absl::StatusOr<Json> value = assigned.Finish();
  ASSERT_THAT(value, IsOk());
  EXPECT_EQ(DumpJson(*value), R"({"a":["x","yz"],"b":2})");
}

// The tool inputs of the recorded streams, fragment by fragment as sent.
TEST(PartialJsonParserTest, RecordedToolInputsParseAsNlohmannDoes) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  int inputs = 0;
  for (const std::string& name : ::toolmesh::testing::FixtureNames(".sse")) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::string> text =
        ::toolmesh::testing::ReadFile(dir + "/" + name);
    ASSERT_THAT(text.status(), IsOk());
    // block index -> fragments, and whether the block was stopped.
    std::map<int, std::vector<std::string>> fragments;
    std::map<int, bool> stopped;
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      if (!absl::ConsumePrefix(&line, "data:")) continue;
      absl::StatusOr<Json> event =
          ParseJson(std::string_view(line.data(), line.size()));
      if (!event.ok() || !event->is_object()) continue;
      const std::string_view type = GetString(*event, "type");
      if (type == "message_start") {
        fragments.clear();
        stopped.clear();
      }
      if (!event->contains("index") || !(*event)["index"].is_number()) {
        continue;
      }
      const int index = (*event)["index"].get<int>();
      if (type == "content_block_delta" &&
          GetString((*event)["delta"], "type") == "input_json_delta") {
        fragments[index].emplace_back(
            GetString((*event)["delta"], "partial_json"));
      } else if (type == "content_block_stop") {
        stopped[index] = true;
      }
    }
    for (const auto& [index, pieces] : fragments) {
      SCOPED_TRACE(absl::StrCat("block ", index));
      const std::string whole = absl::StrJoin(pieces, "");
      for (bool live : {false, true}) {
        absl::StatusOr<Json> actual = Feed(pieces, live);
        if (!stopped[index]) {
          // Cut off by max_tokens (fixture 03): incomplete input.
          EXPECT_THAT(actual, StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("unexpected end of input")));
          continue;
        }
        ASSERT_THAT(actual, IsOk());
        const Json expected =
            whole.find_first_not_of(" \t\r\n") == std::string::npos
                ? Json::object()
                : *ParseJson(whole);
        EXPECT_THAT(*actual, SameJsonAs(expected));
      }
      ++inputs;
    }
  }
  EXPECT_GE(inputs, 5);
}

}  // namespace
}  // namespace toolmesh::common
