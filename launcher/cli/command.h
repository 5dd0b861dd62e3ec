// Subcommands of the `dsv4` tools CLI register themselves here, one file per area:
//
//   namespace { void setup(CLI::App& app) { auto* cmd = app.add_subcommand("inspect", "..."); ... } }
//   DSV4_REGISTER_COMMAND(inspect, setup);
//
// A callback reports failure by throwing dsv4::Error; main() turns it into a message and exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <utility>
#include <vector>

namespace dsv4::cli {

using SetupFn = void (*)(CLI::App& app);

std::vector<std::pair<std::string, SetupFn>>& command_registry();

struct CommandRegistrar {
  CommandRegistrar(const char* name, SetupFn setup) { command_registry().emplace_back(name, setup); }
};

}  // namespace dsv4::cli

#define DSV4_REGISTER_COMMAND(name, setup_fn) \
  static ::dsv4::cli::CommandRegistrar dsv4_command_registrar_##name(#name, setup_fn)
