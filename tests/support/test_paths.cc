#include "tests/support/test_paths.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "runtime/core/env.h"

namespace dsv4::testing {

std::filesystem::path source_dir() { return DSV4_SOURCE_DIR; }

std::filesystem::path shared_dir() {
  if (env::is_set(env::kSharedDir)) return env::get_string(env::kSharedDir);
  return std::filesystem::weakly_canonical(DSV4_SHARED_DIR_DEFAULT);
}

std::filesystem::path dsv4_bin() { return std::filesystem::path(DSV4_BINARY_DIR) / "launcher" / "dsv4"; }

std::filesystem::path scratch_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("dsv4_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run_command(const std::string& command, std::string* output) {
  std::string full = command + " 2>&1";
  FILE* pipe = ::popen(full.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::array<char, 4096> chunk;
  size_t n;
  while ((n = std::fread(chunk.data(), 1, chunk.size(), pipe)) > 0) {
    if (output != nullptr) output->append(chunk.data(), n);
  }
  int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace dsv4::testing
