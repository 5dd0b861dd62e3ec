// Incremental state: chunked prefill and decode must give exactly the logits of a one-shot prefill, across
// the raw-ring wrap, the first CSA row (token 3), the point where the indexer starts selecting, and several
// HCA rows; batched decode of several sequences must equal running them one by one.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "tests/unit/model/tiny_model.h"

namespace dsv4 {
namespace {

using testing::make_tiny_model;
using testing::random_token_ids;
using testing::tiny_config;
using testing::TinyWeights;

std::vector<float> run_chunked(Model& model, const std::vector<int32_t>& tokens, int64_t chunk) {
  SequenceState st = model.new_sequence();
  const int64_t V = model.config().vocab_size;
  std::vector<float> all;
  for (size_t i = 0; i < tokens.size(); i += chunk) {
    const size_t n = std::min<size_t>(chunk, tokens.size() - i);
    Tensor l = model.prefill(st, std::span<const int32_t>(tokens.data() + i, n));
    EXPECT_EQ(l.shape(), (Shape{static_cast<int64_t>(n), V}));
    all.insert(all.end(), l.as<float>(), l.as<float>() + l.numel());
  }
  EXPECT_EQ(st.length, static_cast<int64_t>(tokens.size()));
  return all;
}

void expect_same(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) bad += a[i] != b[i];
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << a.size() << " logits differ";
}

class ModelStateTest : public ::testing::TestWithParam<Numerics> {};

TEST_P(ModelStateTest, ChunkedPrefillEqualsOneShot) {
  // Layers: SWA, CSA (indexer top-2 selects from token 11), HCA with ratio 8, CSA. Window 8: the ring wraps.
  ModelConfig cfg = tiny_config({0, 4, 8, 4});
  TinyWeights w(cfg, 7);
  Model model = make_tiny_model(cfg, w, GetParam());
  const auto tokens = random_token_ids(41, cfg.vocab_size, 3);
  const auto one_shot = run_chunked(model, tokens, static_cast<int64_t>(tokens.size()));
  for (float v : one_shot) ASSERT_TRUE(std::isfinite(v));
  for (int64_t chunk : {1, 3, 5, 17}) {
    expect_same(run_chunked(model, tokens, chunk), one_shot, ("chunk " + std::to_string(chunk)).c_str());
  }
}

TEST_P(ModelStateTest, HcaRatio128SeveralRows) {
  ModelConfig cfg = tiny_config({128, 4}, 128, 64);
  TinyWeights w(cfg, 11);
  Model model = make_tiny_model(cfg, w, GetParam());
  const auto tokens = random_token_ids(300, cfg.vocab_size, 5);
  const auto one_shot = run_chunked(model, tokens, 300);
  expect_same(run_chunked(model, tokens, 128), one_shot, "chunk 128");
  expect_same(run_chunked(model, tokens, 37), one_shot, "chunk 37");
}

TEST_P(ModelStateTest, BatchedDecodeEqualsSeparate) {
  ModelConfig cfg = tiny_config({0, 4, 8});
  TinyWeights w(cfg, 9);
  Model model = make_tiny_model(cfg, w, GetParam());
  const auto a = random_token_ids(13, cfg.vocab_size, 1), b = random_token_ids(6, cfg.vocab_size, 2);
  SequenceState sa = model.new_sequence(), sb = model.new_sequence();
  // Prompts of different lengths in one batch, then decode steps of both together.
  std::vector<SequenceChunk> chunks = {{&sa, std::span<const int32_t>(a.data(), 10)},
                                       {&sb, std::span<const int32_t>(b.data(), 4)}};
  ForwardOutput first = model.forward(chunks);
  std::vector<float> batched(first.logits.as<float>(), first.logits.as<float>() + first.logits.numel());
  for (int step = 0; step < 2; ++step) {
    chunks = {{&sa, std::span<const int32_t>(a.data() + 10 + step, 1)},
              {&sb, std::span<const int32_t>(b.data() + 4 + step, 1)}};
    ForwardOutput o = model.forward(chunks);
    batched.insert(batched.end(), o.logits.as<float>(), o.logits.as<float>() + o.logits.numel());
  }
  const int64_t V = cfg.vocab_size;
  auto ra = run_chunked(model, std::vector<int32_t>(a.begin(), a.begin() + 12), 12);
  auto rb = run_chunked(model, std::vector<int32_t>(b.begin(), b.begin() + 6), 6);
  std::vector<float> expect;
  expect.insert(expect.end(), ra.begin(), ra.begin() + 10 * V);
  expect.insert(expect.end(), rb.begin(), rb.begin() + 4 * V);
  for (int step = 0; step < 2; ++step) {
    expect.insert(expect.end(), ra.begin() + (10 + step) * V, ra.begin() + (11 + step) * V);
    expect.insert(expect.end(), rb.begin() + (4 + step) * V, rb.begin() + (5 + step) * V);
  }
  expect_same(batched, expect, "batched");
}

TEST(ModelForward, LastRowLogitsAndHidden) {
  ModelConfig cfg = tiny_config({0, 4, 8});
  TinyWeights w(cfg, 4);
  Model model = make_tiny_model(cfg, w, Numerics::kPlain);
  const auto a = random_token_ids(9, cfg.vocab_size, 6), b = random_token_ids(5, cfg.vocab_size, 8);
  const int64_t V = cfg.vocab_size;
  SequenceState s1 = model.new_sequence(), s2 = model.new_sequence();
  std::vector<SequenceChunk> chunks = {{&s1, a}, {&s2, b}};
  ForwardOutput full = model.forward(chunks, true);
  EXPECT_EQ(full.hidden.shape(), (Shape{14, cfg.hc_mult, cfg.hidden_size}));
  SequenceState t1 = model.new_sequence(), t2 = model.new_sequence();
  chunks = {{&t1, a}, {&t2, b}};
  ForwardOutput last = model.forward(chunks, false, LogitsRows::kLastOfEachChunk);
  ASSERT_EQ(last.logits.shape(), (Shape{2, V}));
  for (int64_t v = 0; v < V; ++v) {
    EXPECT_EQ(last.logits.as<float>()[v], full.logits.as<float>()[8 * V + v]);
    EXPECT_EQ(last.logits.as<float>()[V + v], full.logits.as<float>()[13 * V + v]);
  }
}

INSTANTIATE_TEST_SUITE_P(Numerics, ModelStateTest, ::testing::Values(Numerics::kPlain, Numerics::kReference),
                         [](const auto& info) { return info.param == Numerics::kPlain ? "plain" : "reference"; });

TEST(ModelInput, RejectsBadInput) {
  ModelConfig cfg = tiny_config({0, 4});
  cfg.max_position_embeddings = 16;
  TinyWeights w(cfg, 1);
  Model model = make_tiny_model(cfg, w, Numerics::kPlain);
  SequenceState st = model.new_sequence();
  std::vector<int32_t> bad = {1, 64};
  EXPECT_THROW(model.prefill(st, bad), Error);
  std::vector<int32_t> neg = {-1};
  EXPECT_THROW(model.prefill(st, neg), Error);
  EXPECT_THROW(model.prefill(st, std::span<const int32_t>()), Error);
  std::vector<int32_t> too_long(17, 1);
  EXPECT_THROW(model.prefill(st, too_long), Error);
  EXPECT_EQ(st.length, 0);  // rejected calls leave the state untouched
  std::vector<int32_t> ok(16, 1);
  EXPECT_NO_THROW(model.prefill(st, ok));
  EXPECT_THROW(model.decode(st, 1), Error);  // the 17th position
}

TEST(ModelWeightsBinding, NamesTheMismatchedTensor) {
  ModelConfig cfg = tiny_config({0, 4});
  TinyWeights w(cfg, 1);
  w.tensors()["layers.1.attn.wkv.weight"] = Tensor(DType::kF8E4M3, Shape{32, 64});
  try {
    bind_weights(cfg, w.lookup());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidCheckpoint);
    EXPECT_NE(std::string(e.what()).find("layers.1.attn.wkv.weight"), std::string::npos) << e.what();
  }
  w.tensors().erase("layers.1.attn.indexer.compressor.ape");
  EXPECT_THROW(bind_weights(cfg, w.lookup()), Error);
}

}  // namespace
}  // namespace dsv4
