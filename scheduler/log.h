// Structured log lines for kilnd (logfmt on stderr): `ts=... level=info msg="job started"
// job=job-3 attempt=1`. One line per event, greppable and machine-parsable.
#pragma once

#include <initializer_list>
#include <string>

#include "absl/strings/str_cat.h"

namespace kiln::scheduler {

struct LogField {
  template <typename T>
  LogField(std::string k, const T& v) : key(std::move(k)), value(absl::StrCat(v)) {}
  LogField(std::string k, const std::string& v) : key(std::move(k)), value(v) {}
  LogField(std::string k, const char* v) : key(std::move(k)), value(v) {}
  LogField(std::string k, bool v) : key(std::move(k)), value(v ? "true" : "false") {}
  std::string key;
  std::string value;
};

enum class LogLevel { kDebug, kInfo, kWarn, kError };

void SetLogLevel(LogLevel level);
void Log(LogLevel level, const std::string& msg, std::initializer_list<LogField> fields = {});

inline void LogInfo(const std::string& msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kInfo, msg, fields);
}
inline void LogWarn(const std::string& msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kWarn, msg, fields);
}
inline void LogError(const std::string& msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kError, msg, fields);
}

}  // namespace kiln::scheduler
