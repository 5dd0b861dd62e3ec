// Shared by the dsv4-launch tests: where the executable is, and running it with its output captured.
#pragma once

#include <filesystem>
#include <string>

#include "tests/support/test_paths.h"

namespace dsv4::launch_test {

inline std::filesystem::path launch_bin() {
  return std::filesystem::path(DSV4_BINARY_DIR) / "launcher" / "dsv4-launch";
}

/// A repository file's absolute path.
inline std::string src(const std::string& rel) { return (testing::source_dir() / rel).lexically_normal().string(); }

/// Runs `dsv4-launch ARGS`, after `env ENV` when `env` is not empty (e.g. "-u LD_LIBRARY_PATH"); returns its
/// exit status with stdout+stderr in `out` (-1 when it is not built).
inline int launch(const std::string& args, std::string* out, const std::string& env = "") {
  if (!std::filesystem::exists(launch_bin())) {
    *out = "dsv4-launch not built at " + launch_bin().string();
    return -1;
  }
  out->clear();
  const std::string prefix = env.empty() ? "" : "env " + env + " ";
  return testing::run_command(prefix + launch_bin().string() + " " + args, out);
}

}  // namespace dsv4::launch_test
