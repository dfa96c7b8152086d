// Tests for SseDecoder: the line and field rules of the event-stream format,
// chunking invariance (byte at a time, every split size, recorded streams),
// the memory limits, and end-of-stream handling.
#include "common/sse_decoder.h"

#include <algorithm>
#include <cstddef>
#include <ostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

// An owning copy of one SseEventView.
struct Event {
  std::string event;
  std::string data;
  std::string id;
  std::optional<long long> retry_ms;

  bool operator==(const Event&) const = default;
  friend std::ostream& operator<<(std::ostream& os, const Event& e) {
    os << "{event=\"" << e.event << "\" data=\"" << e.data << "\" id=\""
       << e.id << "\"";
    if (e.retry_ms) os << " retry=" << *e.retry_ms;
    return os << "}";
  }
};

Event Ev(std::string event, std::string data, std::string id = "",
         std::optional<long long> retry_ms = std::nullopt) {
  return Event{std::move(event), std::move(data), std::move(id), retry_ms};
}

struct Decoded {
  std::vector<Event> events;
  absl::Status status;  // the first failure of Feed/Finish, else OK
  bool dropped_partial_event = false;
};

// Feeds `input` in pieces of the given sizes (cycled; empty = whole), then
// calls Finish().
Decoded DecodeSplit(std::string_view input, const std::vector<size_t>& sizes,
                    SseDecoder::Options options = {}) {
  Decoded out;
  SseDecoder decoder(options);
  auto sink = [&out](const SseEventView& e) {
    out.events.push_back(
        Event{std::string(e.event), std::string(e.data), std::string(e.id),
              e.retry_ms});
  };
  size_t pos = 0;
  size_t i = 0;
  while (pos < input.size()) {
    const size_t n =
        sizes.empty() ? input.size() : std::max<size_t>(1, sizes[i++ % sizes.size()]);
    const absl::Status status = decoder.Feed(input.substr(pos, n), sink);
    pos += std::min(n, input.size() - pos);
    if (!status.ok()) {
      out.status = status;
      return out;
    }
  }
  out.status = decoder.Finish(sink);
  out.dropped_partial_event = decoder.dropped_partial_event();
  return out;
}

Decoded Decode(std::string_view input, SseDecoder::Options options = {}) {
  return DecodeSplit(input, {}, options);
}

Decoded DecodeBytewise(std::string_view input,
                       SseDecoder::Options options = {}) {
  return DecodeSplit(input, {1}, options);
}

// Decodes whole, byte at a time, and at every single split point, checks
// the results agree, and returns the whole-input result.
Decoded DecodeEveryWay(std::string_view input,
                       SseDecoder::Options options = {}) {
  const Decoded whole = Decode(input, options);
  const Decoded bytewise = DecodeBytewise(input, options);
  EXPECT_EQ(bytewise.events, whole.events) << "byte at a time";
  EXPECT_EQ(bytewise.status, whole.status) << "byte at a time";
  for (size_t split = 1; split < input.size(); ++split) {
    const Decoded two = DecodeSplit(input, {split, input.size()}, options);
    EXPECT_EQ(two.events, whole.events) << "split at " << split;
    EXPECT_EQ(two.status, whole.status) << "split at " << split;
    EXPECT_EQ(two.dropped_partial_event, whole.dropped_partial_event)
        << "split at " << split;
  }
  return whole;
}

TEST(SseDecoderTest, DecodesEventWithNameAndData) {
  const Decoded d = DecodeEveryWay("event: ping\ndata: {\"type\":\"ping\"}\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("ping", "{\"type\":\"ping\"}")));
  EXPECT_FALSE(d.dropped_partial_event);
}

TEST(SseDecoderTest, LfCrLfAndCrLineEndsAreEquivalent) {
  const std::vector<Event> expected = {Ev("a", "1\n2"), Ev("b", "3")};
  for (const std::string_view eol : {"\n", "\r\n", "\r"}) {
    std::string input;
    for (const char* line :
         {"event: a", "data: 1", "data: 2", "", "event: b", "data: 3", ""}) {
      input += line;
      input += eol;
    }
    const Decoded d = DecodeEveryWay(input);
    ASSERT_THAT(d.status, IsOk());
    EXPECT_EQ(d.events, expected) << "line end " << ::testing::PrintToString(std::string(eol));
  }
}

TEST(SseDecoderTest, MixedLineEndsInOneStream) {
  const Decoded d =
      DecodeEveryWay("data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "a\nb\nc"), Ev("", "d")));
}

TEST(SseDecoderTest, CrAtEndOfChunkThenLfAtStartOfNextIsOneLineEnd) {
  // Were "\r" | "\n" two line ends, the "\n" would be a blank line and
  // dispatch "a" on its own.
  SseDecoder decoder;
  std::vector<Event> events;
  auto sink = [&events](const SseEventView& e) {
    events.push_back(Ev(std::string(e.event), std::string(e.data)));
  };
  ASSERT_THAT(decoder.Feed("data: a\r", sink), IsOk());
  ASSERT_THAT(decoder.Feed("\ndata: b\r", sink), IsOk());
  ASSERT_THAT(decoder.Feed("\n", sink), IsOk());
  EXPECT_THAT(events, IsEmpty());
  ASSERT_THAT(decoder.Feed("\r", sink), IsOk());
  EXPECT_THAT(events, ElementsAre(Ev("", "a\nb")));
  ASSERT_THAT(decoder.Feed("\n", sink), IsOk());  // ends that same blank line
  ASSERT_THAT(decoder.Finish(sink), IsOk());
  EXPECT_THAT(events, ElementsAre(Ev("", "a\nb")));
  EXPECT_FALSE(decoder.dropped_partial_event());
}

TEST(SseDecoderTest, CrThenEmptyFeedThenLfIsStillOneLineEnd) {
  SseDecoder decoder;
  std::vector<Event> events;
  auto sink = [&events](const SseEventView& e) {
    events.push_back(Ev(std::string(e.event), std::string(e.data)));
  };
  ASSERT_THAT(decoder.Feed("data: a\r", sink), IsOk());
  ASSERT_THAT(decoder.Feed("", sink), IsOk());
  ASSERT_THAT(decoder.Feed("\ndata: b\n\n", sink), IsOk());
  EXPECT_THAT(events, ElementsAre(Ev("", "a\nb")));
}

TEST(SseDecoderTest, TwoCrsAreTwoLineEnds) {
  const Decoded d = DecodeEveryWay("data: a\r\rdata: b\r\r");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "a"), Ev("", "b")));
}

TEST(SseDecoderTest, MultiLineDataIsJoinedWithNewline) {
  const Decoded d = DecodeEveryWay("data: one\ndata: two\ndata:\ndata: four\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "one\ntwo\n\nfour")));
}

TEST(SseDecoderTest, OnlyOneSpaceAfterColonIsStripped) {
  const Decoded d = DecodeEveryWay(
      "data:no-space\n\ndata: one-space\n\ndata:  two-spaces\n\n"
      "data:\ttab\n\nevent:  e\ndata: x \n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events,
              ElementsAre(Ev("", "no-space"), Ev("", "one-space"),
                          Ev("", " two-spaces"), Ev("", "\ttab"),
                          Ev(" e", "x ")));
}

TEST(SseDecoderTest, ColonsAfterTheFirstBelongToTheValue) {
  const Decoded d = DecodeEveryWay("data: a: b:c\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "a: b:c")));
}

TEST(SseDecoderTest, LineWithoutColonIsFieldWithEmptyValue) {
  const Decoded d = DecodeEveryWay("data\n\ndata\ndata\n\nevent\ndata: x\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", ""), Ev("", "\n"), Ev("", "x")));
}

TEST(SseDecoderTest, CommentLinesAreIgnored) {
  const Decoded d = DecodeEveryWay(
      ": keep-alive\nevent: a\n:data: not data\ndata: 1\n:\n\n:only a comment\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("a", "1")));
  EXPECT_FALSE(d.dropped_partial_event);
}

TEST(SseDecoderTest, UnknownFieldsAreIgnored) {
  const Decoded d = DecodeEveryWay("foo: bar\nDATA: upper\ndata: x\nEvent: y\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "x")));
}

TEST(SseDecoderTest, BomAtStartIsIgnored) {
  const Decoded d = DecodeEveryWay("\xEF\xBB\xBF" "data: x\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "x")));
}

TEST(SseDecoderTest, BomSplitAcrossChunksIsIgnored) {
  SseDecoder decoder;
  std::vector<Event> events;
  auto sink = [&events](const SseEventView& e) {
    events.push_back(Ev(std::string(e.event), std::string(e.data)));
  };
  ASSERT_THAT(decoder.Feed("\xEF", sink), IsOk());
  ASSERT_THAT(decoder.Feed("", sink), IsOk());
  ASSERT_THAT(decoder.Feed("\xBB", sink), IsOk());
  ASSERT_THAT(decoder.Feed("\xBF" "da", sink), IsOk());
  ASSERT_THAT(decoder.Feed("ta: x\n\n", sink), IsOk());
  EXPECT_THAT(events, ElementsAre(Ev("", "x")));
  EXPECT_EQ(decoder.bytes_fed(), 3u + 9u);
}

TEST(SseDecoderTest, OnlyTheFirstBomIsStripped) {
  // A second BOM makes the field name "\xEF\xBB\xBF" "data", which is unknown.
  const Decoded d =
      DecodeEveryWay("\xEF\xBB\xBF\xEF\xBB\xBF" "data: x\n\ndata: y\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "y")));
}

TEST(SseDecoderTest, BomAfterTheStartIsPartOfTheLine) {
  const Decoded d = DecodeEveryWay("data: x\n\n\xEF\xBB\xBF" "data: y\n\ndata: \xEF\xBB\xBF\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "x"), Ev("", "\xEF\xBB\xBF")));
}

TEST(SseDecoderTest, PartialBomPrefixIsOrdinaryText) {
  // "\xEF\xBB" then something other than "\xBF": the bytes are kept.
  const Decoded d = DecodeEveryWay("\xEF\xBB" "data: x\n\ndata: y\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "y")));
  // "\xEF\xBB" "\n" is an unknown field line, so "data: x" joins its event.
  const Decoded e = DecodeEveryWay("\xEF\xBB\ndata: x\n\n");
  ASSERT_THAT(e.status, IsOk());
  EXPECT_THAT(e.events, ElementsAre(Ev("", "x")));
}

TEST(SseDecoderTest, StreamEndingInsideBomPrefixIsTreatedAsText) {
  const Decoded d = DecodeEveryWay("\xEF\xBB");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, IsEmpty());
  EXPECT_TRUE(d.dropped_partial_event);  // an unknown field, never ended

  const Decoded empty = DecodeEveryWay("");
  ASSERT_THAT(empty.status, IsOk());
  EXPECT_THAT(empty.events, IsEmpty());
  EXPECT_FALSE(empty.dropped_partial_event);
}

TEST(SseDecoderTest, EventWithoutEventLineHasEmptyName) {
  const Decoded d = DecodeEveryWay(
      "data: {\"type\":\"message_start\"}\n\nevent: error\ndata: e\n\n"
      "data: after\n\n");
  ASSERT_THAT(d.status, IsOk());
  // The name does not carry over from one event to the next.
  EXPECT_THAT(d.events, ElementsAre(Ev("", "{\"type\":\"message_start\"}"),
                                    Ev("error", "e"), Ev("", "after")));
}

TEST(SseDecoderTest, LastEventLineWins) {
  const Decoded d = DecodeEveryWay("event: a\nevent: b\ndata: x\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("b", "x")));
}

TEST(SseDecoderTest, IdIsSticky) {
  const Decoded d = DecodeEveryWay(
      "id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\nid\ndata: d\n\n"
      "id: 3\n\ndata: e\n\n");
  ASSERT_THAT(d.status, IsOk());
  // An empty id resets it; an id in an event without data still sticks.
  EXPECT_THAT(d.events, ElementsAre(Ev("", "a", "1"), Ev("", "b", "1"),
                                    Ev("", "c", "2"), Ev("", "d", ""),
                                    Ev("", "e", "3")));
}

TEST(SseDecoderTest, IdContainingNulIsIgnored) {
  static constexpr char kInput[] = "id: 7\ndata: a\n\nid: 8\0x\ndata: b\n\n";
  const std::string input(kInput, sizeof(kInput) - 1);
  const Decoded d = DecodeEveryWay(input);
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "a", "7"), Ev("", "b", "7")));
}

TEST(SseDecoderTest, RetryAcceptsDigitsOnly) {
  const Decoded d = DecodeEveryWay(
      "retry: 1500\ndata: a\n\nretry: 15x\ndata: b\n\nretry: -1\ndata: c\n\n"
      "retry:\ndata: d\n\nretry: 2\nretry: 1.5\ndata: e\n\n"
      "retry: 99999999999999999999999\ndata: f\n\nretry: 0\ndata: g\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events,
              ElementsAre(Ev("", "a", "", 1500), Ev("", "b"), Ev("", "c"),
                          Ev("", "d"), Ev("", "e", "", 2), Ev("", "f"),
                          Ev("", "g", "", 0)));
}

TEST(SseDecoderTest, RetryBelongsOnlyToItsEvent) {
  const Decoded d = DecodeEveryWay("retry: 10\n\ndata: a\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "a")));
}

TEST(SseDecoderTest, EventWithoutDataIsNotDispatched) {
  const Decoded d =
      DecodeEveryWay("event: lonely\n\nevent: x\nid: 4\n\ndata: y\n\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "y", "4")));
}

TEST(SseDecoderTest, BlankLinesAloneDispatchNothing) {
  const Decoded d = DecodeEveryWay("\n\n\r\n\r\r");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, IsEmpty());
  EXPECT_FALSE(d.dropped_partial_event);
}

TEST(SseDecoderTest, FinishDropsUnterminatedEvent) {
  const Decoded d = DecodeEveryWay("data: a\n\nevent: b\ndata: b\n");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "a")));
  EXPECT_TRUE(d.dropped_partial_event);
}

TEST(SseDecoderTest, TrailingLineWithoutLineEndIsProcessedThenDropped) {
  SseDecoder decoder;
  std::vector<Event> events;
  auto sink = [&events](const SseEventView& e) {
    events.push_back(Ev(std::string(e.event), std::string(e.data),
                        std::string(e.id)));
  };
  ASSERT_THAT(decoder.Feed("id: 1\ndata: a\n\ndata: b", sink), IsOk());
  EXPECT_THAT(events, ElementsAre(Ev("", "a", "1")));
  EXPECT_FALSE(decoder.dropped_partial_event());
  ASSERT_THAT(decoder.Finish(sink), IsOk());
  EXPECT_THAT(events, ElementsAre(Ev("", "a", "1")));
  EXPECT_TRUE(decoder.dropped_partial_event());
  EXPECT_EQ(decoder.events_dispatched(), 1u);
}

TEST(SseDecoderTest, TrailingCommentWithoutLineEndDropsNothing) {
  const Decoded d = DecodeEveryWay("data: a\n\n: bye");
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", "a")));
  EXPECT_FALSE(d.dropped_partial_event);
}

TEST(SseDecoderTest, TerminatedStreamDropsNothing) {
  const Decoded d = DecodeEveryWay("data: a\n\n");
  EXPECT_FALSE(d.dropped_partial_event);
  const Decoded cr = DecodeEveryWay("data: a\r\r");
  EXPECT_FALSE(cr.dropped_partial_event);
  EXPECT_THAT(cr.events, ElementsAre(Ev("", "a")));
}

TEST(SseDecoderTest, CountsBytesAndEvents) {
  SseDecoder decoder;
  int calls = 0;
  auto sink = [&calls](const SseEventView&) { ++calls; };
  const std::string_view a = "data: 1\n\ndata: 2\n";
  const std::string_view b = "\ndata: 3\n";
  ASSERT_THAT(decoder.Feed(a, sink), IsOk());
  ASSERT_THAT(decoder.Feed(b, sink), IsOk());
  EXPECT_EQ(decoder.bytes_fed(), a.size() + b.size());
  EXPECT_EQ(decoder.events_dispatched(), 2u);
  EXPECT_EQ(calls, 2);
}

TEST(SseDecoderTest, DataBufferIsReusedAcrossEvents) {
  // The view handed to the sink points into one buffer whose capacity is
  // kept: after a large event, smaller ones land in the same storage.
  SseDecoder decoder;
  std::vector<const char*> addresses;
  auto sink = [&addresses](const SseEventView& e) {
    addresses.push_back(e.data.data());
  };
  const std::string big = "data: " + std::string(1000, 'x') + "\n\n";
  ASSERT_THAT(decoder.Feed(big, sink), IsOk());
  ASSERT_THAT(decoder.Feed("data: small\n\n", sink), IsOk());
  ASSERT_THAT(decoder.Feed("data: sm", sink), IsOk());
  ASSERT_THAT(decoder.Feed("all\n\n", sink), IsOk());
  ASSERT_EQ(addresses.size(), 3u);
  EXPECT_EQ(addresses[1], addresses[0]);
  EXPECT_EQ(addresses[2], addresses[0]);
}

// ---- limits ----------------------------------------------------------------

SseDecoder::Options SmallLimits() {
  SseDecoder::Options options;
  options.max_line_bytes = 64;
  options.max_event_bytes = 100;
  return options;
}

TEST(SseDecoderTest, LineAtTheLimitIsAccepted) {
  // "data: " + 58 = 64 bytes, the limit exactly.
  const std::string value(58, 'v');
  const Decoded d = DecodeEveryWay("data: " + value + "\r\n\r\n", SmallLimits());
  ASSERT_THAT(d.status, IsOk());
  EXPECT_THAT(d.events, ElementsAre(Ev("", value)));
}

TEST(SseDecoderTest, LongLineInOneChunkIsRejected) {
  const std::string input =
      "data: ok\n\ndata: " + std::string(59, 'v') + "\n\ndata: later\n\n";
  const Decoded d = DecodeEveryWay(input, SmallLimits());
  EXPECT_THAT(d.status, StatusIs(absl::StatusCode::kResourceExhausted,
                                 HasSubstr("max_line_bytes")));
  // Events before the long line are delivered, none after.
  EXPECT_THAT(d.events, ElementsAre(Ev("", "ok")));
}

TEST(SseDecoderTest, LongLineInManySmallChunksIsRejectedOnceOverLimit) {
  SseDecoder decoder(SmallLimits());
  auto sink = [](const SseEventView&) { FAIL() << "no event expected"; };
  // 64 bytes of an unterminated line are within the limit...
  for (int i = 0; i < 64; ++i) {
    ASSERT_THAT(decoder.Feed("x", sink), IsOk()) << "byte " << i;
  }
  // ...the 65th is not, whether or not the line would ever end.
  EXPECT_THAT(decoder.Feed("x", sink),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("max_line_bytes")));
}

TEST(SseDecoderTest, LongUnterminatedLineInOneChunkIsRejected) {
  SseDecoder decoder(SmallLimits());
  auto sink = [](const SseEventView&) {};
  EXPECT_THAT(decoder.Feed(std::string(65, 'x'), sink),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(SseDecoderTest, LongLineAcrossTwoChunksIsRejected) {
  SseDecoder decoder(SmallLimits());
  auto sink = [](const SseEventView&) {};
  ASSERT_THAT(decoder.Feed("data: " + std::string(50, 'a'), sink), IsOk());
  EXPECT_THAT(decoder.Feed(std::string(9, 'b') + "\n\n", sink),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(SseDecoderTest, LargeMultiLineEventIsRejected) {
  // Each line is short, but together the data passes max_event_bytes (100):
  // nine lines of 10 bytes plus 8 joining newlines is 98; a tenth is over.
  std::string input;
  for (int i = 0; i < 9; ++i) input += "data: 0123456789\n";
  {
    const Decoded d = DecodeEveryWay(input + "\n", SmallLimits());
    ASSERT_THAT(d.status, IsOk());
    ASSERT_EQ(d.events.size(), 1u);
    EXPECT_EQ(d.events[0].data.size(), 98u);
  }
  {
    const Decoded d = DecodeEveryWay(input + "data: x\n\n", SmallLimits());
    ASSERT_THAT(d.status, IsOk());  // 98 + "\n" + "x" is exactly 100
  }
  const Decoded d = DecodeEveryWay(input + "data: xy\n\n", SmallLimits());
  EXPECT_THAT(d.status, StatusIs(absl::StatusCode::kResourceExhausted,
                                 HasSubstr("max_event_bytes")));
  EXPECT_THAT(d.events, IsEmpty());
}

TEST(SseDecoderTest, FailedDecoderStaysFailed) {
  SseDecoder decoder(SmallLimits());
  int calls = 0;
  auto sink = [&calls](const SseEventView&) { ++calls; };
  const absl::Status first =
      decoder.Feed("data: " + std::string(100, 'x') + "\n\n", sink);
  ASSERT_THAT(first, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(decoder.Feed("data: fine\n\n", sink), first);
  EXPECT_EQ(decoder.Finish(sink), first);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(decoder.events_dispatched(), 0u);
}

TEST(SseDecoderTest, DefaultLimitsAreGenerous) {
  const std::string value(1 << 20, 'j');
  const Decoded d = Decode("data: " + value + "\n\n");
  ASSERT_THAT(d.status, IsOk());
  ASSERT_EQ(d.events.size(), 1u);
  EXPECT_EQ(d.events[0].data, value);
}

// ---- chunking invariance ---------------------------------------------------

TEST(SseDecoderTest, EverySplitSizeGivesTheSameEvents) {
  const std::string input =
      "\xEF\xBB\xBF: hello\r\nevent: a\r\ndata: 1\r\ndata: 2\r\n\r\n"
      "id: 9\rdata:x\r\revent\ndata\n\nretry: 30\ndata: r\n\n"
      "event: e\ndata: {\"type\":\"error\"}\n\ndata: tail";
  const Decoded whole = DecodeEveryWay(input);
  ASSERT_THAT(whole.status, IsOk());
  EXPECT_THAT(whole.events,
              ElementsAre(Ev("a", "1\n2"), Ev("", "x", "9"), Ev("", "", "9"),
                          Ev("", "r", "9", 30),
                          Ev("e", "{\"type\":\"error\"}", "9")));
  EXPECT_TRUE(whole.dropped_partial_event);
  for (size_t n = 1; n <= input.size(); ++n) {
    const Decoded d = DecodeSplit(input, {n});
    EXPECT_EQ(d.events, whole.events) << "split size " << n;
    EXPECT_TRUE(d.dropped_partial_event) << "split size " << n;
  }
  // Irregular chunk sizes, so that splits land at every phase.
  const Decoded irregular = DecodeSplit(input, {1, 2, 3, 5, 8, 13, 7, 1});
  EXPECT_EQ(irregular.events, whole.events);
}

// ---- recorded streams ------------------------------------------------------

// The `data:` values and `event:` names in file order, found by splitting
// the file into '\n'-separated lines (the fixtures use '\n' only and one
// data line per event), independently of the decoder.
struct NaiveEvents {
  std::vector<std::string> data;
  std::vector<std::string> names;  // "" where an event had no event: line
};

NaiveEvents NaiveParse(const std::string& text) {
  NaiveEvents out;
  std::string pending_name;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    if (line.rfind("event: ", 0) == 0) pending_name = line.substr(7);
    if (line.rfind("data: ", 0) == 0) {
      out.data.push_back(line.substr(6));
      out.names.push_back(pending_name);
      pending_name.clear();
    }
    start = end + 1;
  }
  return out;
}

TEST(SseDecoderTest, RecordedStreamsDecodeTheSameAtEveryChunkSize) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  const std::vector<std::string> names = toolmesh::testing::FixtureNames(".sse");
  ASSERT_FALSE(names.empty());
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    auto text = toolmesh::testing::ReadFile(dir + "/" + name);
    ASSERT_TRUE(text.ok()) << text.status();
    const Decoded whole = Decode(*text);
    ASSERT_THAT(whole.status, IsOk());
    EXPECT_FALSE(whole.dropped_partial_event);
    ASSERT_FALSE(whole.events.empty());
    const Decoded bytewise = DecodeBytewise(*text);
    EXPECT_EQ(bytewise.events, whole.events) << "byte at a time";
    for (size_t n = 2; n <= 64; ++n) {
      const Decoded d = DecodeSplit(*text, {n});
      ASSERT_EQ(d.events, whole.events) << "split size " << n;
    }
  }
}

TEST(SseDecoderTest, RecordedStreamsMatchAnIndependentLineSplit) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  for (const std::string& name : toolmesh::testing::FixtureNames(".sse")) {
    SCOPED_TRACE(name);
    auto text = toolmesh::testing::ReadFile(dir + "/" + name);
    ASSERT_TRUE(text.ok()) << text.status();
    const NaiveEvents naive = NaiveParse(*text);
    const Decoded d = Decode(*text);
    ASSERT_THAT(d.status, IsOk());
    ASSERT_EQ(d.events.size(), naive.data.size());
    for (size_t i = 0; i < d.events.size(); ++i) {
      EXPECT_EQ(d.events[i].data, naive.data[i]) << "event " << i;
      EXPECT_EQ(d.events[i].event, naive.names[i]) << "event " << i;
      // Every data is JSON whose "type" repeats the event name, if any.
      auto json = ParseJson(d.events[i].data);
      ASSERT_TRUE(json.ok()) << "event " << i << ": " << json.status();
      if (!d.events[i].event.empty()) {
        EXPECT_EQ(GetString(*json, "type"), d.events[i].event) << "event " << i;
      }
    }
  }
}

TEST(SseDecoderTest, RecordedStreamsWithCrLfLineEndsDecodeTheSame) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  for (const std::string& name : toolmesh::testing::FixtureNames(".sse")) {
    SCOPED_TRACE(name);
    auto text = toolmesh::testing::ReadFile(dir + "/" + name);
    ASSERT_TRUE(text.ok()) << text.status();
    std::string crlf;
    std::string cr;
    for (const char c : *text) {
      if (c == '\n') {
        crlf += "\r\n";
        cr += '\r';
      } else {
        crlf += c;
        cr += c;
      }
    }
    const Decoded expected = Decode(*text);
    EXPECT_EQ(DecodeSplit(crlf, {7}).events, expected.events);
    EXPECT_EQ(DecodeSplit(cr, {7}).events, expected.events);
  }
}

TEST(SseDecoderTest, ErrorFixtureGivesUnnamedEventsThenError) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  const std::string name =
      "15-error-event-overloaded-mid-stream-after-text-SYNTHETIC.sse";
  auto text = toolmesh::testing::ReadFile(dir + "/" + name);
  ASSERT_TRUE(text.ok()) << text.status();
  const NaiveEvents naive = NaiveParse(*text);
  const Decoded d = DecodeEveryWay(*text);
  ASSERT_THAT(d.status, IsOk());
  ASSERT_EQ(d.events.size(), naive.data.size());
  ASSERT_GE(d.events.size(), 2u);
  for (size_t i = 0; i + 1 < d.events.size(); ++i) {
    EXPECT_EQ(d.events[i].event, "") << "event " << i;
    auto json = ParseJson(d.events[i].data);
    ASSERT_TRUE(json.ok());
    EXPECT_NE(GetString(*json, "type"), "error");
  }
  const Event& last = d.events.back();
  EXPECT_EQ(last.event, "error");
  auto json = ParseJson(last.data);
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(GetString(*json, "type"), "error");
}

}  // namespace
}  // namespace toolmesh::common
