// Structured logs of the orchestrator: one JSON object per line on stderr,
// e.g.
//   {"ts":"2026-11-23T17:30:00.123456Z","level":"warn","component":
//    "orchestrator","msg":"task failed","task_id":"task_...","type":...}
// so that a log pipeline can filter by task_id and tool_use_id.
//
// Never pass secrets (the API key, tokens) as fields or in messages: the
// callers log ids, states and error texts only, and the model transport
// scrubs the key from its error texts.
//
// Thread-safety: Log() may be called from any thread; each line is written
// whole (one write under a mutex).
#pragma once

#include <initializer_list>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace toolmesh::orchestrator {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// One field of a log line; values are strings (numbers are formatted by the
// caller).
using LogField = std::pair<std::string_view, std::string_view>;

// Writes one line: ts, level, component, msg, then `fields` in order.
void Log(LogLevel level, std::string_view msg,
         std::initializer_list<LogField> fields = {});

// The same line as text, for tests (no trailing newline).
std::string FormatLogLine(std::string_view ts, LogLevel level,
                          std::string_view msg,
                          std::initializer_list<LogField> fields);

// Where Log() writes (default std::cerr). For tests; not thread-safe
// against concurrent Log() calls.
void SetLogStreamForTesting(std::ostream* stream);

}  // namespace toolmesh::orchestrator
