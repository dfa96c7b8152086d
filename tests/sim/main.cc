// toolmesh-sim: runs seeds of the deterministic simulation of the
// orchestrator engine (tests/sim/README.md) and prints a key=value summary.
//
//   toolmesh-sim --seeds=N [--first-seed=S] [--tasks=M] [--workers=W]
//   toolmesh-sim --seed=N [--trace] [--print-digest]
//
// Exit status: 0 every seed passed, 1 some seed violated an invariant,
// 2 bad usage.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "tests/sim/sim_world.h"

namespace {

constexpr char kUsage[] =
    "usage: toolmesh-sim --seeds=N [--first-seed=S] [--tasks=M] "
    "[--workers=W] [--print-digest]\n"
    "       toolmesh-sim --seed=N [--tasks=M] [--workers=W] [--trace] "
    "[--print-digest]\n"
    "Runs seeds of the deterministic simulation of the orchestrator engine.\n"
    "  --seeds=N        run N seeds, from --first-seed (default 0)\n"
    "  --seed=N         run seed N only (reproduces a failing seed)\n"
    "  --tasks=M        tasks per seed (default 3)\n"
    "  --workers=W      workers per seed (default 2)\n"
    "  --trace          print the whole trace of the seed as it runs\n"
    "  --print-digest   print each seed's trace digest\n"
    "Prints key=value summary lines; exit 1 when a seed violates an "
    "invariant.\n";

int BadUsage(const std::string& what) {
  std::fprintf(stderr, "toolmesh-sim: %s (see --help)\n", what.c_str());
  return 2;
}

bool Flag(const char* arg, const char* name, std::string* value) {
  const std::size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  *value = arg + n + 1;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t first_seed = 0;
  std::uint64_t seeds = 0;
  std::optional<std::uint64_t> one_seed;
  toolmesh::sim::SimOptions options;
  bool trace = false;
  bool print_digest = false;
  for (int i = 1; i < argc; ++i) {
    const char* arg = argv[i];
    std::string value;
    auto number = [&](std::uint64_t* out) {
      return absl::SimpleAtoi(value, out);
    };
    std::uint64_t n = 0;
    if (std::strcmp(arg, "--help") == 0 || std::strcmp(arg, "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (std::strcmp(arg, "--trace") == 0) {
      trace = true;
    } else if (std::strcmp(arg, "--print-digest") == 0) {
      print_digest = true;
    } else if (Flag(arg, "--seeds", &value)) {
      if (!number(&seeds) || seeds == 0) return BadUsage("bad --seeds");
    } else if (Flag(arg, "--first-seed", &value)) {
      if (!number(&first_seed)) return BadUsage("bad --first-seed");
    } else if (Flag(arg, "--seed", &value)) {
      if (!number(&n)) return BadUsage("bad --seed");
      one_seed = n;
    } else if (Flag(arg, "--tasks", &value)) {
      if (!number(&n) || n == 0 || n > 1000) return BadUsage("bad --tasks");
      options.tasks = static_cast<int>(n);
    } else if (Flag(arg, "--workers", &value)) {
      if (!number(&n) || n == 0 || n > 100) return BadUsage("bad --workers");
      options.workers = static_cast<int>(n);
    } else {
      return BadUsage(std::string("unknown argument ") + arg);
    }
  }
  if (one_seed.has_value() == (seeds > 0)) {
    return BadUsage("give exactly one of --seeds=N and --seed=N");
  }
  if (trace && !one_seed.has_value()) {
    return BadUsage("--trace needs --seed=N");
  }
  if (one_seed.has_value()) {
    first_seed = *one_seed;
    seeds = 1;
  }
  options.echo_trace = trace;

  std::uint64_t steps = 0;
  std::int64_t tool_calls = 0;
  std::int64_t requests = 0;
  std::int64_t crashes = 0;
  std::map<std::string, std::int64_t> faults;
  std::map<std::string, std::int64_t> outcomes;
  std::vector<std::string> failing;
  for (std::uint64_t seed = first_seed; seed < first_seed + seeds; ++seed) {
    options.seed = seed;
    const toolmesh::sim::SimResult result = toolmesh::sim::RunSimulation(options);
    steps += result.steps;
    tool_calls += result.tool_calls;
    requests += result.model_requests;
    crashes += result.crashes;
    for (const auto& [kind, count] : result.faults) faults[kind] += count;
    for (const auto& [state, count] : result.outcomes) outcomes[state] += count;
    if (print_digest) {
      std::printf("seed=%" PRIu64 " digest=%016" PRIx64 "\n", seed,
                  result.digest);
    }
    if (result.violation.has_value()) {
      failing.push_back(std::to_string(seed));
      std::printf("seed=%" PRIu64 " step=%" PRIu64 ": %s\n", seed,
                  result.violation_step, result.violation->c_str());
      std::printf("  last trace lines of seed %" PRIu64
                  " (reproduce: toolmesh-sim --seed=%" PRIu64
                  " --tasks=%d --workers=%d --trace):\n",
                  seed, seed, options.tasks, options.workers);
      for (const std::string& line : result.recent) {
        std::printf("    %s\n", line.c_str());
      }
    }
  }
  std::int64_t total_faults = 0;
  for (const auto& [kind, count] : faults) total_faults += count;
  std::printf("seeds=%" PRIu64 "\n", seeds);
  std::printf("first_seed=%" PRIu64 "\n", first_seed);
  std::printf("steps=%" PRIu64 "\n", steps);
  std::printf("tasks=%" PRIu64 "\n", seeds * static_cast<std::uint64_t>(options.tasks));
  std::printf("tool_calls=%" PRId64 "\n", tool_calls);
  std::printf("model_requests=%" PRId64 "\n", requests);
  std::printf("orchestrator_crashes=%" PRId64 "\n", crashes);
  for (const auto& [state, count] : outcomes) {
    std::printf("tasks_%s=%" PRId64 "\n", state.c_str(), count);
  }
  std::printf("faults_injected=%" PRId64 "\n", total_faults);
  for (const auto& [kind, count] : faults) {
    std::printf("faults_injected.%s=%" PRId64 "\n", kind.c_str(), count);
  }
  std::printf("violations=%zu\n", failing.size());
  if (!failing.empty()) {
    std::printf("failing_seeds=%s\n", absl::StrJoin(failing, ",").c_str());
  }
  return failing.empty() ? 0 : 1;
}
