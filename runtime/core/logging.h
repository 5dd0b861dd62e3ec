// Rank-prefixed logging with levels.
//
//   DSV4_LOG(INFO) << "loaded " << n << " tensors";
//
// Every line carries the time, the rank and the level: "[12:00:01.234 rank 3 W] message (file.cc:42)".
// INFO and below print on rank 0 only unless DSV4_LOG_ALL_RANKS=1; WARN and ERROR print on every rank.
// The level threshold comes from DSV4_LOG_LEVEL (trace|debug|info|warn|error|off; default info).
#pragma once

#include <sstream>
#include <string_view>

namespace dsv4 {

enum class LogLevel { kTrace = 0, kDebug = 1, kInfo = 2, kWarn = 3, kError = 4, kOff = 5 };

/// Sets the rank printed on every line (-1 until a launcher knows it). Call once per process.
void set_log_rank(int rank);
int log_rank();

/// Overrides the threshold read from the environment (tests, --verbose flags).
void set_log_level(LogLevel level);
LogLevel log_level();

/// Whether a line of this level is printed by this rank.
bool log_enabled(LogLevel level);

LogLevel parse_log_level(std::string_view text);  // throws Error(kInvalidArgument) naming the value

namespace detail {

class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();  // writes the whole line with one write(2), so lines of concurrent threads do not interleave
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;

  template <typename T>
  LogLine& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  LogLevel level_;
  const char* file_;
  int line_;
  std::ostringstream stream_;
};

}  // namespace detail
}  // namespace dsv4

#define DSV4_LOG_LEVEL_TRACE ::dsv4::LogLevel::kTrace
#define DSV4_LOG_LEVEL_DEBUG ::dsv4::LogLevel::kDebug
#define DSV4_LOG_LEVEL_INFO ::dsv4::LogLevel::kInfo
#define DSV4_LOG_LEVEL_WARN ::dsv4::LogLevel::kWarn
#define DSV4_LOG_LEVEL_ERROR ::dsv4::LogLevel::kError

#define DSV4_LOG(level)                                  \
  if (!::dsv4::log_enabled(DSV4_LOG_LEVEL_##level)) {    \
  } else                                                 \
    ::dsv4::detail::LogLine(DSV4_LOG_LEVEL_##level, __FILE__, __LINE__)
