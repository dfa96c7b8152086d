#include "tests/testing/fixtures.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace toolmesh::testing {
namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

}  // namespace

std::string AnthropicSseDir() {
  std::string shared = Env("TOOLMESH_SHARED_DIR");
  if (shared.empty()) return "";
  std::filesystem::path dir =
      std::filesystem::path(shared) / "fixtures" / "anthropic-sse";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return "";
  return dir.string();
}

bool FixturesRequired() { return Env("TOOLMESH_REQUIRE_FIXTURES") == "1"; }

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> FixtureNames(const std::string& suffix) {
  std::vector<std::string> names;
  std::string dir = AnthropicSseDir();
  if (dir.empty()) return names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    if (absl::EndsWith(name, suffix)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string SourceDir() {
  std::string dir = Env("TOOLMESH_SOURCE_DIR");
  return dir.empty() ? std::string(TOOLMESH_SOURCE_DIR) : dir;
}

}  // namespace toolmesh::testing
