#include "runtime/core/env.h"

#include <array>
#include <cctype>
#include <charconv>
#include <cstdlib>

#include "runtime/core/error.h"

namespace dsv4::env {
namespace {
constexpr std::array kAll{kLogLevel,    kLogAllRanks,  kNumThreads,    kDeterministic, kNumerics, kCommTimeoutS,
                          kFaultInject, kSharedDir,    kOmpiWorldSize, kPmixRank,      kPmiRank,
                          kLdLibraryPath, kPipelineMinTokens, kCpOverlap, kCommDelayUs, kCommDelayMbps};

const char* raw(const Var& var) {
  // The one getenv of the project. std::string_view names in the table are NUL-terminated literals.
  return std::getenv(var.name.data());
}
}  // namespace

std::span<const Var> all_vars() { return kAll; }

bool is_set(const Var& var) { return raw(var) != nullptr; }

std::string get_string(const Var& var) {
  const char* value = raw(var);
  return value != nullptr ? std::string(value) : std::string(var.default_value);
}

bool get_bool(const Var& var) {
  std::string value = get_string(var);
  for (char& c : value) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (value == "1" || value == "true" || value == "yes" || value == "on") return true;
  if (value == "0" || value == "false" || value == "no" || value == "off" || value.empty()) return false;
  DSV4_THROW(kInvalidArgument) << "environment variable " << var.name << "='" << value
                               << "' is not a boolean (0/1/true/false/yes/no/on/off)";
}

int64_t get_int(const Var& var, int64_t min_value, int64_t max_value) {
  std::string value = get_string(var);
  int64_t parsed = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), parsed);
  DSV4_CHECK_ARG(ec == std::errc() && end == value.data() + value.size() && !value.empty())
      << "environment variable " << var.name << "='" << value << "' is not an integer";
  DSV4_CHECK_ARG(parsed >= min_value && parsed <= max_value)
      << "environment variable " << var.name << "=" << parsed << " is outside [" << min_value << ", " << max_value
      << "]";
  return parsed;
}

}  // namespace dsv4::env
