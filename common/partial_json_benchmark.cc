// Benchmarks PartialJsonParser on realistic tool inputs (a file write: path,
// long content with escapes and non-ASCII text, a few small fields) fed in
// 40-byte fragments, as input_json_delta streams them.
//
//   plain: Append() per fragment, Finish() once.
//   live:  Append() per fragment and Partial() read after every fragment.
//   nlohmann: ParseJson() of the concatenation, for reference.
//
// Reports bytes/s. Live must cost at most ~2x plain, and the per-byte cost
// must not grow with size (4 MiB <= 4.5x the time of 1 MiB).
//
// Each iteration allocates and frees a few buffers of the input's size in an
// otherwise empty heap, so glibc's trimming and mmap thresholds can add page
// faults that a long-running process would not see (e.g. plain/64 KiB, whose
// ~200 KB of freed memory crosses the 128 KiB trim threshold). Compare CPU
// time, on a quiet machine, with perf if a size looks out of line.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "common/json.h"
#include "common/partial_json.h"

namespace toolmesh::common {
namespace {

constexpr std::size_t kFragment = 40;

// A tool input of about `size` bytes of JSON text.
std::string MakeToolInput(std::size_t size) {
  static constexpr std::string_view kLines[] = {
      R"(#include \"common/json.h\"\n)",
      R"(\n)",
      R"(// R\u00e9sum\u00e9 of the na\u00efve approach: see C:\\tools\\bin\n)",
      R"(int main(int argc, char** argv) {\n)",
      R"(  std::printf(\"%s\\n\", \"caf)"
      "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"
      R"(\");\n)",
      R"(\treturn 0;  // tab-indented, with a \"quoted\" word\n)",
      R"(}\n)",
  };
  std::string doc =
      R"({"path": "/home/user/project/src/main.cc", "mode": "overwrite", )"
      R"("create_dirs": true, "line_count": 1234, "content": ")";
  std::size_t i = 0;
  while (doc.size() + 3 < size) {
    doc += kLines[i++ % (sizeof(kLines) / sizeof(kLines[0]))];
  }
  doc += "\"}";
  return doc;
}

std::vector<std::string_view> Fragments(const std::string& doc) {
  std::vector<std::string_view> pieces;
  for (std::size_t i = 0; i < doc.size(); i += kFragment) {
    pieces.push_back(std::string_view(doc).substr(i, kFragment));
  }
  return pieces;
}

void BM_Plain(benchmark::State& state) {
  const std::string doc =
      MakeToolInput(static_cast<std::size_t>(state.range(0)));
  const auto pieces = Fragments(doc);
  for (auto _ : state) {
    PartialJsonParser parser;
    for (std::string_view piece : pieces) {
      benchmark::DoNotOptimize(parser.Append(piece).ok());
    }
    auto value = parser.Finish();
    if (!value.ok()) state.SkipWithError("parse failed");
    benchmark::DoNotOptimize(value);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(doc.size()));
}

void BM_Live(benchmark::State& state) {
  const std::string doc =
      MakeToolInput(static_cast<std::size_t>(state.range(0)));
  const auto pieces = Fragments(doc);
  for (auto _ : state) {
    PartialJsonParser parser(PartialJsonParser::Options{.live = true});
    for (std::string_view piece : pieces) {
      benchmark::DoNotOptimize(parser.Append(piece).ok());
      benchmark::DoNotOptimize(parser.Partial().size());
    }
    auto value = parser.Finish();
    if (!value.ok()) state.SkipWithError("parse failed");
    benchmark::DoNotOptimize(value);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(doc.size()));
}

void BM_NlohmannWhole(benchmark::State& state) {
  const std::string doc =
      MakeToolInput(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    auto value = ParseJson(doc);
    if (!value.ok()) state.SkipWithError("parse failed");
    benchmark::DoNotOptimize(value);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(doc.size()));
}

BENCHMARK(BM_Plain)->Arg(1 << 10)->Arg(64 << 10)->Arg(1 << 20)->Arg(4 << 20);
BENCHMARK(BM_Live)->Arg(1 << 10)->Arg(64 << 10)->Arg(1 << 20)->Arg(4 << 20);
BENCHMARK(BM_NlohmannWhole)
    ->Arg(1 << 10)
    ->Arg(64 << 10)
    ->Arg(1 << 20)
    ->Arg(4 << 20);

}  // namespace
}  // namespace toolmesh::common
