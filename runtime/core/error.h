// One error vocabulary for the whole runtime.
//
// Inside the runtime errors are exceptions of type dsv4::Error. At every boundary (gRPC handler, rank main,
// C ABI, kernel launch) they are converted: to a grpc::Status, or to a log line + Communicator::abort() +
// a non-zero exit code. Nothing else crosses a boundary.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dsv4 {

enum class ErrorCode {
  kInvalidArgument,    // bad input from outside: a request, a CLI flag, a config key, an environment variable
  kInvalidCheckpoint,  // a checkpoint file that is malformed or does not match its config
  kNotFound,           // a file, tensor or key that should exist does not
  kOutOfRange,         // an index or size beyond a limit
  kResourceExhausted,  // memory / KV budget / concurrency limits
  kUnsupported,        // a valid input this build cannot handle (e.g. CUDA op in a CPU-only build)
  kIo,                 // the operating system failed a read, write, mmap
  kCuda,
  kNccl,
  kMpi,
  kRpc,
  kTimeout,
  kRemote,   // another rank failed; this rank is stopping because of it
  kAborted,  // cancelled on purpose (shutdown, request abort)
  kInternal, // a broken invariant: a bug in this code
};

std::string_view error_code_name(ErrorCode code);

/// The process exit code for an error that ends a program (distinct per code so scripts can tell them apart).
int exit_code_for(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string message, const char* file = "", int line = 0);

  ErrorCode code() const noexcept { return code_; }
  /// The message without the location prefix.
  const std::string& message() const noexcept { return message_; }
  const char* file() const noexcept { return file_; }
  int line() const noexcept { return line_; }

 private:
  ErrorCode code_;
  std::string message_;
  const char* file_;
  int line_;
};

namespace detail {

// Collects a streamed message and throws when the full expression ends. The throwing destructor is the
// point: `DSV4_CHECK(x) << "a" << b;` builds the message first, then throws once.
class ErrorThrower {
 public:
  ErrorThrower(ErrorCode code, const char* file, int line, const char* condition);
  ErrorThrower(const ErrorThrower&) = delete;
  ErrorThrower& operator=(const ErrorThrower&) = delete;
  [[noreturn]] ~ErrorThrower() noexcept(false);

  template <typename T>
  ErrorThrower& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  ErrorCode code_;
  const char* file_;
  int line_;
  std::ostringstream stream_;
};

}  // namespace detail
}  // namespace dsv4

/// Throws dsv4::Error(kInternal) when `cond` is false: a broken invariant inside the runtime.
#define DSV4_CHECK(cond) \
  if (cond) {            \
  } else                 \
    ::dsv4::detail::ErrorThrower(::dsv4::ErrorCode::kInternal, __FILE__, __LINE__, #cond)

/// Throws dsv4::Error(code) when `cond` is false. Use for validation of input from outside, with a
/// message that names what is wrong (file, tensor, key, value).
#define DSV4_CHECK_CODE(cond, code) \
  if (cond) {                       \
  } else                            \
    ::dsv4::detail::ErrorThrower((code), __FILE__, __LINE__, nullptr)

/// Shorthand for the most common validation: bad input -> kInvalidArgument.
#define DSV4_CHECK_ARG(cond) DSV4_CHECK_CODE(cond, ::dsv4::ErrorCode::kInvalidArgument)

/// Unconditional throw: `DSV4_THROW(kNotFound) << "no tensor " << name;`
#define DSV4_THROW(code_name) ::dsv4::detail::ErrorThrower(::dsv4::ErrorCode::code_name, __FILE__, __LINE__, nullptr)

#ifdef NDEBUG
#define DSV4_DCHECK(cond) \
  if (true) {             \
  } else                  \
    ::dsv4::detail::ErrorThrower(::dsv4::ErrorCode::kInternal, __FILE__, __LINE__, #cond)
#else
#define DSV4_DCHECK(cond) DSV4_CHECK(cond)
#endif
