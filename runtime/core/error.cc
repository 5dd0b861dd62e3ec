#include "runtime/core/error.h"

#include <cstring>
#include <exception>

namespace dsv4 {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kInvalidCheckpoint: return "invalid checkpoint";
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kOutOfRange: return "out of range";
    case ErrorCode::kResourceExhausted: return "resource exhausted";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kIo: return "I/O error";
    case ErrorCode::kCuda: return "CUDA error";
    case ErrorCode::kNccl: return "NCCL error";
    case ErrorCode::kMpi: return "MPI error";
    case ErrorCode::kRpc: return "RPC error";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kRemote: return "remote rank failed";
    case ErrorCode::kAborted: return "aborted";
    case ErrorCode::kInternal: return "internal error";
  }
  return "unknown error";
}

int exit_code_for(ErrorCode code) {
  // 1 is left to generic failures (uncaught std::exception), 2 to command-line usage errors (CLI11).
  switch (code) {
    case ErrorCode::kInvalidArgument: return 3;
    case ErrorCode::kInvalidCheckpoint: return 4;
    case ErrorCode::kNotFound: return 5;
    case ErrorCode::kOutOfRange: return 6;
    case ErrorCode::kResourceExhausted: return 7;
    case ErrorCode::kUnsupported: return 8;
    case ErrorCode::kIo: return 9;
    case ErrorCode::kCuda: return 10;
    case ErrorCode::kNccl: return 11;
    case ErrorCode::kMpi: return 12;
    case ErrorCode::kRpc: return 13;
    case ErrorCode::kTimeout: return 14;
    case ErrorCode::kRemote: return 15;
    case ErrorCode::kAborted: return 16;
    case ErrorCode::kInternal: return 17;
  }
  return 1;
}

namespace {
std::string format_what(ErrorCode code, const std::string& message, const char* file, int line) {
  std::string what(error_code_name(code));
  what += ": ";
  what += message;
  if (file != nullptr && file[0] != '\0') {
    const char* base = std::strrchr(file, '/');
    what += " [";
    what += base ? base + 1 : file;
    what += ":" + std::to_string(line) + "]";
  }
  return what;
}
}  // namespace

Error::Error(ErrorCode code, std::string message, const char* file, int line)
    : std::runtime_error(format_what(code, message, file, line)),
      code_(code),
      message_(std::move(message)),
      file_(file),
      line_(line) {}

namespace detail {

ErrorThrower::ErrorThrower(ErrorCode code, const char* file, int line, const char* condition)
    : code_(code), file_(file), line_(line) {
  if (condition != nullptr) stream_ << "check failed: " << condition << ": ";
}

ErrorThrower::~ErrorThrower() noexcept(false) { throw Error(code_, stream_.str(), file_, line_); }

}  // namespace detail
}  // namespace dsv4
