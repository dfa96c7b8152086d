#include "orchestrator/engine/log.h"

#include <iostream>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json.h"

namespace toolmesh::orchestrator {
namespace {

absl::Mutex log_mu;
std::ostream* log_stream ABSL_GUARDED_BY(log_mu) = &std::cerr;

std::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

}  // namespace

std::string FormatLogLine(std::string_view ts, LogLevel level,
                          std::string_view msg,
                          std::initializer_list<LogField> fields) {
  common::Json line = common::Json::object();
  line["ts"] = std::string(ts);
  line["level"] = std::string(LevelName(level));
  line["component"] = "orchestrator";
  line["msg"] = std::string(msg);
  for (const auto& [key, value] : fields) {
    line[std::string(key)] = std::string(value);
  }
  // DumpJson replaces invalid UTF-8 instead of throwing.
  return common::DumpJson(line);
}

void Log(LogLevel level, std::string_view msg,
         std::initializer_list<LogField> fields) {
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(),
                                          absl::UTCTimeZone());
  std::string line = FormatLogLine(ts, level, msg, fields);
  line.push_back('\n');
  absl::MutexLock lock(&log_mu);
  log_stream->write(line.data(), static_cast<std::streamsize>(line.size()));
  log_stream->flush();
}

void SetLogStreamForTesting(std::ostream* stream) {
  absl::MutexLock lock(&log_mu);
  log_stream = stream == nullptr ? &std::cerr : stream;
}

}  // namespace toolmesh::orchestrator
