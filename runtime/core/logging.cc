#include "runtime/core/logging.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <ctime>
#include <mutex>

#include "runtime/core/env.h"
#include "runtime/core/error.h"

namespace dsv4 {
namespace {

std::atomic<int> g_rank{-1};
std::atomic<int> g_level{-1};  // -1: not read from the environment yet

LogLevel level_from_env() {
  int cached = g_level.load(std::memory_order_relaxed);
  if (cached >= 0) return static_cast<LogLevel>(cached);
  LogLevel level = parse_log_level(env::get_string(env::kLogLevel));
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
  return level;
}

char level_letter(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace: return 'T';
    case LogLevel::kDebug: return 'D';
    case LogLevel::kInfo: return 'I';
    case LogLevel::kWarn: return 'W';
    case LogLevel::kError: return 'E';
    case LogLevel::kOff: return '-';
  }
  return '?';
}

}  // namespace

void set_log_rank(int rank) { g_rank.store(rank); }
int log_rank() { return g_rank.load(); }
void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel log_level() { return level_from_env(); }

LogLevel parse_log_level(std::string_view text) {
  if (text == "trace") return LogLevel::kTrace;
  if (text == "debug") return LogLevel::kDebug;
  if (text == "info" || text.empty()) return LogLevel::kInfo;
  if (text == "warn" || text == "warning") return LogLevel::kWarn;
  if (text == "error") return LogLevel::kError;
  if (text == "off") return LogLevel::kOff;
  DSV4_THROW(kInvalidArgument) << "log level '" << text << "' is not one of trace|debug|info|warn|error|off";
}

bool log_enabled(LogLevel level) {
  if (level < level_from_env()) return false;
  if (level >= LogLevel::kWarn) return true;
  int rank = g_rank.load(std::memory_order_relaxed);
  // Rank 0 (or a process that is not part of a job yet) speaks for the job below WARN.
  static const bool all_ranks = env::get_bool(env::kLogAllRanks);
  return rank <= 0 || all_ranks;
}

namespace detail {

LogLine::LogLine(LogLevel level, const char* file, int line) : level_(level), file_(file), line_(line) {}

LogLine::~LogLine() {
  auto now = std::chrono::system_clock::now();
  std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  localtime_r(&seconds, &tm);
  char prefix[64];
  int rank = g_rank.load(std::memory_order_relaxed);
  if (rank >= 0) {
    std::snprintf(prefix, sizeof(prefix), "[%02d:%02d:%02d.%03d rank %d %c] ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                  millis, rank, level_letter(level_));
  } else {
    std::snprintf(prefix, sizeof(prefix), "[%02d:%02d:%02d.%03d %c] ", tm.tm_hour, tm.tm_min, tm.tm_sec, millis,
                  level_letter(level_));
  }
  std::string text = prefix + stream_.str();
  if (level_ >= LogLevel::kWarn || level_ <= LogLevel::kDebug) {
    const char* base = std::strrchr(file_, '/');
    text += " (";
    text += base ? base + 1 : file_;
    text += ":" + std::to_string(line_) + ")";
  }
  text += '\n';
  // One write per line: concurrent ranks and threads never interleave within a line.
  ssize_t ignored = ::write(STDERR_FILENO, text.data(), text.size());
  (void)ignored;
}

}  // namespace detail
}  // namespace dsv4
