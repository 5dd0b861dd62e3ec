// Paths tests need: the source tree (configs/, tests/golden/), the shared data beside it, a scratch folder.
#pragma once

#include <filesystem>
#include <string>

namespace dsv4::testing {

/// The repository root.
std::filesystem::path source_dir();
/// ../shared beside the repository (or $DSV4_SHARED_DIR).
std::filesystem::path shared_dir();
/// A golden checkpoint under tests/golden/model/ ("golden-a", "golden-b").
inline std::filesystem::path golden_model_dir(const std::string& name) {
  return source_dir() / "tests/golden/model" / name;
}
/// The `dsv4` executable built with the tests ($DSV4_BIN, set by ctest).
std::filesystem::path dsv4_bin();
/// A fresh, empty temporary folder unique to this process and `name`; removed by the caller or left in /tmp.
std::filesystem::path scratch_dir(const std::string& name);

/// Runs a shell command, returns its exit status and captures stdout+stderr into `output`.
int run_command(const std::string& command, std::string* output);

/// The whole file as bytes (empty when it cannot be read).
std::string read_file(const std::filesystem::path& path);

}  // namespace dsv4::testing
