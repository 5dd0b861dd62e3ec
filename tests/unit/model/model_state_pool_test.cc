// The model's sequence state in a StatePool: the bytes a sequence holds equal the CPU planner's
// (cpu_state_bytes) at every length, rows spread over many small pages give bit-for-bit the logits of the
// default pages, an exhausted pool fails a forward pass with kResourceExhausted before any token is taken,
// and destroying a state returns every byte.
#include <gtest/gtest.h>

#include <optional>
#include <random>
#include <vector>

#include "runtime/kv/cpu_state_bytes.h"
#include "runtime/kv/state_pool.h"
#include "tests/unit/model/tiny_model.h"

namespace dsv4 {
namespace {

using testing::make_tiny_model;
using testing::random_token_ids;
using testing::tiny_config;
using testing::TinyWeights;

std::optional<ErrorCode> code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return std::nullopt;
}

std::vector<float> prefill_chunks(Model& model, SequenceState& st, const std::vector<int32_t>& tokens, int64_t chunk) {
  std::vector<float> all;
  for (size_t i = 0; i < tokens.size(); i += chunk) {
    const size_t n = std::min<size_t>(chunk, tokens.size() - i);
    Tensor l = model.prefill(st, std::span<const int32_t>(tokens.data() + i, n));
    all.insert(all.end(), l.as<float>(), l.as<float>() + l.numel());
  }
  return all;
}

// Window 8, CSA with indexer top-2 (selection from token 11), HCA ratio 8; MTP slot.
class ModelStatePoolTest : public ::testing::Test {
 protected:
  ModelStatePoolTest() : cfg_(tiny_config({0, 4, 8, 4})), w_(cfg_, 7), model_(make_tiny_model(cfg_, w_, Numerics::kPlain)) {}
  int64_t planned(int64_t tokens, int64_t page) const {
    return cpu_state_bytes(cfg_, tokens, page, static_cast<int64_t>(model_.weights().mtp.size())).total();
  }
  ModelConfig cfg_;
  TinyWeights w_;
  Model model_;
};

TEST_F(ModelStatePoolTest, HeldBytesEqualThePlanner) {
  const int64_t page = 512;  // 2 main rows (64 floats) or 4 indexer rows (32 floats) per page
  StatePool pool({page, kUnlimitedStateBudget});
  SequenceState st = model_.new_sequence(&pool);
  EXPECT_EQ(st.memory_bytes(), planned(0, page));
  const auto tokens = random_token_ids(45, cfg_.vocab_size, 3);
  for (size_t i = 0; i < tokens.size(); i += 7) {
    const size_t n = std::min<size_t>(7, tokens.size() - i);
    model_.prefill(st, std::span<const int32_t>(tokens.data() + i, n));
    EXPECT_EQ(st.memory_bytes(), planned(st.length, page)) << "at " << st.length << " tokens";
  }
  EXPECT_EQ(pool.total().bytes(), st.memory_bytes());
  EXPECT_EQ(st.layers[1].main.num_rows(), 11);
  EXPECT_EQ(st.layers[1].main.rows.num_pages(), 6);
  // A moved state keeps its pages; assigning over a state returns the old one's.
  SequenceState other = model_.new_sequence(&pool);
  const int64_t held = st.memory_bytes();
  other = std::move(st);
  EXPECT_EQ(other.memory_bytes(), held);
  EXPECT_EQ(pool.sequences(), 1);
  other = SequenceState();
  EXPECT_EQ(pool.total().bytes(), 0);
  EXPECT_EQ(pool.total().committed, 0);
  EXPECT_EQ(pool.sequences(), 0);
}

TEST_F(ModelStatePoolTest, SmallPagesGiveTheSameLogits) {
  const auto tokens = random_token_ids(41, cfg_.vocab_size, 5);
  SequenceState whole = model_.new_sequence();  // private pool, 64 KiB pages: every store in one page
  const auto reference = prefill_chunks(model_, whole, tokens, 41);
  StatePool pool({256, kUnlimitedStateBudget});  // one main row per page
  for (int64_t chunk : {1, 5, 41}) {
    SequenceState st = model_.new_sequence(&pool);
    const auto got = prefill_chunks(model_, st, tokens, chunk);
    ASSERT_EQ(got.size(), reference.size());
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); ++i) bad += got[i] != reference[i];
    EXPECT_EQ(bad, 0u) << "chunk " << chunk;
  }
}

TEST_F(ModelStatePoolTest, ExhaustionFailsBeforeAnyTokenIsTaken) {
  const int64_t page = 512;
  // Room for one sequence of exactly 16 tokens.
  StatePool pool({page, planned(16, page)});
  EXPECT_EQ(code_of([&] { model_.new_sequence(&pool, planned(16, page) + 1); }), ErrorCode::kResourceExhausted);
  const auto tokens = random_token_ids(24, cfg_.vocab_size, 9);
  SequenceState st = model_.new_sequence(&pool);
  model_.prefill(st, std::span<const int32_t>(tokens.data(), 16));
  EXPECT_EQ(pool.total().bytes(), planned(16, page));
  // Tokens 17..24 need new row pages (the CSA and HCA stores are full at 16 tokens): refused before any layer
  // runs, so neither the SWA layer's ring nor the CSA compressor's window has taken a token.
  const std::vector<float> ring0 = st.layers[0].ring, window1 = st.layers[1].main.cur_kv;
  EXPECT_EQ(code_of([&] { model_.prefill(st, std::span<const int32_t>(tokens.data() + 16, 8)); }),
            ErrorCode::kResourceExhausted);
  EXPECT_EQ(st.length, 16);
  EXPECT_EQ(st.layers[1].main.num_rows(), 4);
  EXPECT_TRUE(st.layers[0].ring == ring0);
  EXPECT_TRUE(st.layers[1].main.cur_kv == window1);
  // A second sequence is not admitted either; once the first is gone, the budget is whole again.
  EXPECT_EQ(code_of([&] { model_.new_sequence(&pool); }), ErrorCode::kResourceExhausted);
  st = SequenceState();
  EXPECT_EQ(pool.total().bytes(), 0);
  SequenceState again = model_.new_sequence(&pool, planned(16, page));
  model_.prefill(again, std::span<const int32_t>(tokens.data(), 16));
  EXPECT_EQ(pool.total().committed, planned(16, page));
}

}  // namespace
}  // namespace dsv4
