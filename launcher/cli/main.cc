// `dsv4`: the tools CLI (inspect, make-checkpoint, tokenize, forward, generate, ...). Each subcommand lives
// in its own file of this folder and registers itself (command.h).
#include <algorithm>
#include <exception>
#include <iostream>

#include "launcher/cli_main.h"
#include "launcher/cli/command.h"
#include "runtime/core/env.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"

namespace dsv4::cli {

std::vector<std::pair<std::string, SetupFn>>& command_registry() {
  static std::vector<std::pair<std::string, SetupFn>> registry;
  return registry;
}

namespace {
void setup_env(CLI::App& app) {
  auto* cmd = app.add_subcommand("env", "Print the environment variables the runtime reads");
  cmd->callback([] {
    for (const env::Var& var : env::all_vars()) {
      std::cout << var.name << " (default '" << var.default_value << "'): " << var.description << "\n";
    }
  });
}
}  // namespace
DSV4_REGISTER_COMMAND(env, setup_env);

}  // namespace dsv4::cli

int main(int argc, char** argv) {
  CLI::App app{"dsv4: DeepSeek-V4 runtime tools"};
  app.require_subcommand(1);
  auto& registry = dsv4::cli::command_registry();
  // Registration order depends on link order; sort so --help is stable.
  std::sort(registry.begin(), registry.end());
  for (auto& [name, setup] : registry) setup(app);
  return dsv4::parse_and_run(app, argc, argv);
}
