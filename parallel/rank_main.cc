// Top-level rank handler: log, abort the communicator, exit non-zero.
#include "parallel/rank_main.h"

#include <cstdio>
#include <exception>
#include <string>

#include "parallel/backends.h"
#include "runtime/core/error.h"

namespace dsv4::parallel {

int run_rank_main(Bootstrap& bootstrap, Communicator* comm, const std::function<void()>& body) {
  int code = 0;
  std::string message;
  try {
    body();
    return 0;
  } catch (const Error& e) {
    code = exit_code_for(e.code());
    message = e.what();  // "<code name>: <message> [file:line]"
  } catch (const std::exception& e) {
    code = 1;
    message = std::string("exception: ") + e.what();
  } catch (...) {
    code = 1;
    message = "unknown exception";
  }
  // One write, flushed before the abort kills this process.
  std::fprintf(stderr, "[rank %d] fatal: %s\n", bootstrap.rank(), message.c_str());
  std::fflush(stderr);
  detail::set_abort_exit_code(code);
  if (comm) comm->abort();
  return code;
}

}  // namespace dsv4::parallel
