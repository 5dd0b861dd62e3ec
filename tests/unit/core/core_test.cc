#include <gtest/gtest.h>

#include <cstdlib>

#include "runtime/core/dtype.h"
#include "runtime/core/env.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/core/tensor.h"

namespace dsv4 {
namespace {

TEST(Error, CheckThrowsWithCodeAndMessage) {
  try {
    int value = 3;
    DSV4_CHECK_ARG(value == 4) << "value was " << value;
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(e.message(), "value was 3");
    EXPECT_NE(std::string(e.what()).find("core_test.cc"), std::string::npos);
  }
}

TEST(Error, InternalCheckNamesTheCondition) {
  try {
    DSV4_CHECK(1 + 1 == 3) << "math";
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInternal);
    EXPECT_NE(e.message().find("1 + 1 == 3"), std::string::npos);
  }
}

TEST(Error, PassingCheckDoesNotEvaluateMessage) {
  int evaluated = 0;
  auto side_effect = [&] { return ++evaluated; };
  DSV4_CHECK(true) << side_effect();
  EXPECT_EQ(evaluated, 0);
}

TEST(Error, ExitCodesAreDistinct) {
  EXPECT_NE(exit_code_for(ErrorCode::kInvalidArgument), exit_code_for(ErrorCode::kInvalidCheckpoint));
  EXPECT_NE(exit_code_for(ErrorCode::kInternal), 0);
}

TEST(Env, BoolAndIntAreValidated) {
  ::setenv("DSV4_DETERMINISTIC", "yes", 1);
  EXPECT_TRUE(env::get_bool(env::kDeterministic));
  ::setenv("DSV4_DETERMINISTIC", "maybe", 1);
  EXPECT_THROW(env::get_bool(env::kDeterministic), Error);
  ::unsetenv("DSV4_DETERMINISTIC");
  EXPECT_FALSE(env::get_bool(env::kDeterministic));

  ::setenv("DSV4_NUM_THREADS", "12x", 1);
  EXPECT_THROW(env::get_int(env::kNumThreads), Error);
  ::setenv("DSV4_NUM_THREADS", "12", 1);
  EXPECT_EQ(env::get_int(env::kNumThreads, 0, 1024), 12);
  EXPECT_THROW(env::get_int(env::kNumThreads, 0, 8), Error);
  ::unsetenv("DSV4_NUM_THREADS");
}

TEST(Env, TableHasUniqueNames) {
  auto vars = env::all_vars();
  for (size_t i = 0; i < vars.size(); ++i) {
    for (size_t j = i + 1; j < vars.size(); ++j) EXPECT_NE(vars[i].name, vars[j].name);
  }
}

TEST(Logging, ParsesLevels) {
  EXPECT_EQ(parse_log_level("warn"), LogLevel::kWarn);
  EXPECT_THROW(parse_log_level("loud"), Error);
}

TEST(DType, NamesRoundTrip) {
  for (auto name : {"BF16", "F16", "F32", "I8", "I32", "I64", "F8_E4M3", "F8_E8M0"}) {
    auto d = parse_dtype(name);
    ASSERT_TRUE(d.has_value()) << name;
    EXPECT_EQ(dtype_name(*d), name);
  }
  EXPECT_FALSE(parse_dtype("F8_E5M2X").has_value());
  EXPECT_EQ(dtype_bytes(DType::kFP4E2M1, 7), 4u);
  EXPECT_EQ(dtype_bytes(DType::kBF16, 7), 14u);
}

TEST(Tensor, RowsViewIsZeroCopy) {
  Tensor t(DType::kF32, {4, 3});
  for (int i = 0; i < 12; ++i) t.as<float>()[i] = static_cast<float>(i);
  TensorView v = t.view().rows(1, 2);
  EXPECT_EQ(v.shape, Shape({2, 3}));
  EXPECT_EQ(v.as<float>()[0], 3.0f);
  EXPECT_EQ(v.data, t.as<float>() + 3);
  EXPECT_THROW(t.view().rows(3, 2), Error);
}

}  // namespace
}  // namespace dsv4
