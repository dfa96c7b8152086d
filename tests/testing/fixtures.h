// Locating the recorded Anthropic streams in ../shared/fixtures.
//
// The fixtures live beside the checkout, never inside it. Where the folder
// is absent (a user's clone) tests that need it skip with the reason; with
// TOOLMESH_REQUIRE_FIXTURES=1 (set by .ci/run) a missing folder fails them.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace toolmesh::testing {

// The anthropic-sse fixtures folder, or "" when it does not exist.
std::string AnthropicSseDir();

// True when a missing fixtures folder must fail tests rather than skip them.
bool FixturesRequired();

// Reads a whole file.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// The names (not paths) of files in AnthropicSseDir() ending in `suffix`,
// sorted.
std::vector<std::string> FixtureNames(const std::string& suffix);

// The source tree root (for checked-in corpora and golden files).
std::string SourceDir();

}  // namespace toolmesh::testing

// Use at the top of a test body that reads fixtures: skips (or fails, when
// required) if the folder is missing. Defines `fixtures_dir`.
#define TOOLMESH_REQUIRE_FIXTURES_DIR(fixtures_dir)                         \
  const std::string fixtures_dir = ::toolmesh::testing::AnthropicSseDir(); \
  if (fixtures_dir.empty()) {                                              \
    if (::toolmesh::testing::FixturesRequired()) {                         \
      FAIL() << "shared/fixtures/anthropic-sse is missing and "            \
                "TOOLMESH_REQUIRE_FIXTURES=1";                             \
    }                                                                      \
    GTEST_SKIP() << "shared/fixtures/anthropic-sse not found beside the "  \
                    "checkout (set TOOLMESH_SHARED_DIR)";                  \
  }
