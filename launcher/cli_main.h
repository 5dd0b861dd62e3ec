// The boundary of the command-line tools (`dsv4`, `dsv4-launch`): parses, runs the chosen subcommand, and
// turns errors into a log line and an exit code (dsv4::exit_code_for), so nothing escapes main().
#pragma once

#include <CLI/CLI.hpp>
#include <exception>

#include "runtime/core/error.h"
#include "runtime/core/logging.h"

namespace dsv4 {

inline int parse_and_run(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const Error& e) {
    DSV4_LOG(ERROR) << e.what();
    return exit_code_for(e.code());
  } catch (const std::exception& e) {
    DSV4_LOG(ERROR) << "unexpected error: " << e.what();
    return 1;
  }
  return 0;
}

}  // namespace dsv4
