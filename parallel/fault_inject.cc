// DSV4_FAULT_INJECT parsing and the per-thread arrival counter.
#include "parallel/fault_inject.h"

#include <charconv>
#include <chrono>
#include <thread>

#include "runtime/core/env.h"
#include "runtime/core/error.h"

namespace dsv4::parallel {
namespace {

int parse_int(std::string_view text, std::string_view whole) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  DSV4_CHECK_ARG(ec == std::errc() && end == text.data() + text.size() && !text.empty() && value >= 0)
      << "DSV4_FAULT_INJECT='" << whole << "': '" << text << "' is not a non-negative integer";
  return value;
}

const FaultSpec& configured_fault() {
  static const FaultSpec spec = parse_fault_spec(env::get_string(env::kFaultInject));
  return spec;
}

}  // namespace

FaultSpec parse_fault_spec(std::string_view text) {
  FaultSpec spec;
  if (text.empty()) return spec;
  bool have_rank = false;
  std::string_view rest = text;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const size_t eq = item.find('=');
    DSV4_CHECK_ARG(eq != std::string_view::npos)
        << "DSV4_FAULT_INJECT='" << text << "': expected 'rank=R,at=POINT[#N]', got item '" << item << "'";
    std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "rank") {
      spec.rank = parse_int(value, text);
      have_rank = true;
    } else if (key == "at") {
      const size_t hash = value.find('#');
      spec.point = std::string(value.substr(0, hash));
      if (hash != std::string_view::npos) spec.occurrence = parse_int(value.substr(hash + 1), text);
      DSV4_CHECK_ARG(spec.occurrence >= 1) << "DSV4_FAULT_INJECT='" << text << "': occurrence counts from 1";
    } else {
      DSV4_THROW(kInvalidArgument) << "DSV4_FAULT_INJECT='" << text << "': unknown key '" << key
                                   << "' (expected rank and at)";
    }
  }
  DSV4_CHECK_ARG(have_rank && !spec.point.empty())
      << "DSV4_FAULT_INJECT='" << text << "': both rank=R and at=POINT are required";
  return spec;
}

void maybe_inject_fault(std::string_view point, int rank) {
  const FaultSpec& spec = configured_fault();
  if (spec.rank < 0 || spec.rank != rank || spec.point != point) return;
  thread_local int arrivals = 0;
  if (++arrivals != spec.occurrence) return;
  DSV4_THROW(kInternal) << "injected fault (DSV4_FAULT_INJECT) at " << point << " #" << spec.occurrence
                        << " on rank " << rank;
}

void maybe_delay_collective(std::string_view op, int group_size, size_t bytes) {
  // Read once; a malformed value fails the first collective with a message naming the variable.
  static const int64_t delay_us = env::get_int(env::kCommDelayUs, 0, 10'000'000);
  static const int64_t mbps = env::get_int(env::kCommDelayMbps, 0, 1'000'000'000);
  if ((delay_us == 0 && mbps == 0) || group_size <= 1 || op == "split" || op == "make_shared_window") return;
  const double seconds = delay_us * 1e-6 + (mbps > 0 ? static_cast<double>(bytes) / (mbps * 1e6) : 0.0);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

}  // namespace dsv4::parallel
