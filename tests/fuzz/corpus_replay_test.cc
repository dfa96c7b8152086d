// Replays a fuzz target's checked-in corpus, and every recorded fixture, as
// ordinary test cases, so that CI (and its sanitizer pass) runs what the
// fuzzer found without needing libFuzzer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace toolmesh::testing {
namespace {

std::vector<std::filesystem::path> FilesIn(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void Replay(const std::filesystem::path& path) {
  auto bytes = ReadFile(path.string());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  SCOPED_TRACE(path.string());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes->data()),
                         bytes->size());
}

TEST(FuzzCorpusReplay, CheckedInCorpusRunsClean) {
  auto files = FilesIn(TOOLMESH_FUZZ_CORPUS_DIR);
  ASSERT_FALSE(files.empty()) << "no corpus in " << TOOLMESH_FUZZ_CORPUS_DIR;
  for (const auto& path : files) Replay(path);
}

TEST(FuzzCorpusReplay, RecordedFixturesRunClean) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  for (const auto& path : FilesIn(dir)) Replay(path);
}

TEST(FuzzCorpusReplay, EveryPrefixOfEveryCorpusInputRunsClean) {
  // Truncation at every byte is the commonest real-world corruption.
  for (const auto& path : FilesIn(TOOLMESH_FUZZ_CORPUS_DIR)) {
    auto bytes = ReadFile(path.string());
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    if (bytes->size() > 4096) continue;
    for (std::size_t n = 0; n <= bytes->size(); ++n) {
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes->data()),
                             n);
    }
  }
}

}  // namespace
}  // namespace toolmesh::testing
