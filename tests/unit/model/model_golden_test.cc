// The CPU model in `plain` numerics against the independent transformers oracle (tests/golden/README.md):
// max|logit - ref| <= 1e-4 * max|ref| and the same argmax at every position, for one-shot prefill and for
// cached prefill + step-by-step decode.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/model.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

std::vector<float> read_f32(const fs::path& p, size_t count) {
  std::vector<float> v(count);
  std::ifstream in(p, std::ios::binary);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * sizeof(float)));
  EXPECT_TRUE(in.good()) << "cannot read " << count << " floats from " << p;
  return v;
}

// Compares rows of logits; positions[i] names row i in failure messages.
void compare(const float* got, const std::vector<float>& ref, int64_t rows, int64_t V, const std::string& what,
             const std::vector<int64_t>& positions) {
  float max_ref = 0.0f, max_diff = 0.0f;
  for (float r : ref) max_ref = std::max(max_ref, std::fabs(r));
  int64_t worst = -1, argmax_bad = 0;
  for (int64_t i = 0; i < rows; ++i) {
    int64_t ag = 0, ar = 0;
    for (int64_t v = 0; v < V; ++v) {
      const float d = std::fabs(got[i * V + v] - ref[i * V + v]);
      if (d > max_diff) max_diff = d, worst = positions[i];
      if (got[i * V + v] > got[i * V + ag]) ag = v;
      if (ref[i * V + v] > ref[i * V + ar]) ar = v;
    }
    if (ag != ar) {
      ++argmax_bad;
      ADD_FAILURE() << what << ": argmax differs at position " << positions[i] << " (" << ag << " vs " << ar << ")";
    }
  }
  EXPECT_LE(max_diff, 1e-4f * max_ref) << what << ": worst at position " << worst << ", max|ref| " << max_ref;
  EXPECT_EQ(argmax_bad, 0) << what;
  ::testing::Test::RecordProperty(what + "_max_rel", std::to_string(max_diff / max_ref));
}

void check_golden(const std::string& name) {
  const fs::path dir = testing::golden_model_dir(name);
  std::ifstream mf(dir / "manifest.json");
  ASSERT_TRUE(mf.good()) << "missing " << dir / "manifest.json";
  const nlohmann::json m = nlohmann::json::parse(mf);
  ASSERT_EQ(m.at("numerics"), "plain");
  const std::vector<int32_t> tokens = m.at("tokens").get<std::vector<int32_t>>();
  const int64_t T = static_cast<int64_t>(tokens.size()), V = m.at("vocab_size").get<int64_t>();

  Checkpoint ckpt = Checkpoint::open(dir);
  Model model = Model::from_checkpoint(ckpt, Numerics::kPlain);
  ASSERT_EQ(model.config().vocab_size, V);

  // One-shot prefill.
  std::vector<int64_t> all_pos(T);
  for (int64_t i = 0; i < T; ++i) all_pos[i] = i;
  {
    SequenceState st = model.new_sequence();
    Tensor logits = model.prefill(st, tokens);
    const auto ref = read_f32(dir / m.at("prefill_logits").at("file").get<std::string>(), T * V);
    compare(logits.as<float>(), ref, T, V, name + " prefill", all_pos);
  }
  // Cached prefill of the first n tokens, then one token at a time; stored rows at `positions`.
  const auto& dm = m.at("decode_logits");
  const int64_t n = dm.at("prefill_tokens").get<int64_t>();
  const std::vector<int64_t> positions = dm.at("positions").get<std::vector<int64_t>>();
  const auto ref = read_f32(dir / dm.at("file").get<std::string>(), positions.size() * V);
  std::vector<float> got(positions.size() * V);
  SequenceState st = model.new_sequence();
  Tensor first = model.prefill(st, std::span<const int32_t>(tokens.data(), n));
  size_t next = 0;
  auto keep = [&](int64_t pos, const float* row) {
    if (next < positions.size() && positions[next] == pos) std::copy_n(row, V, got.data() + (next++) * V);
  };
  for (int64_t p = 0; p < n; ++p) keep(p, first.as<float>() + p * V);
  for (int64_t p = n; p < T && next < positions.size(); ++p) keep(p, model.decode(st, tokens[p]).as<float>());
  ASSERT_EQ(next, positions.size());
  compare(got.data(), ref, static_cast<int64_t>(positions.size()), V, name + " decode", positions);
}

TEST(ModelGolden, GoldenA) { check_golden("golden-a"); }

TEST(ModelGolden, GoldenB) {
  if (!fs::exists(testing::golden_model_dir("golden-b") / "manifest.json")) {
    GTEST_SKIP() << "golden-b not generated";
  }
  check_golden("golden-b");
}

// MTP (spec §3.9) against the float64 spec reference (scripts/reference/make_mtp_golden.py): hidden states from
// the main model, the next tokens, RoPE position t; one-shot and in chunks (the MTP ring carries across).
TEST(ModelGolden, MtpDraftAgainstSpecReference) {
  const fs::path gdir = testing::source_dir() / "tests/golden/mtp";
  std::ifstream mf(gdir / "golden-a.json");
  ASSERT_TRUE(mf.good());
  const nlohmann::json m = nlohmann::json::parse(mf);
  const std::vector<int32_t> tokens = m.at("tokens").get<std::vector<int32_t>>();
  const int64_t steps = m.at("steps").get<int64_t>();
  Checkpoint ckpt = Checkpoint::open(testing::source_dir() / m.at("checkpoint").get<std::string>());
  Model model = Model::from_checkpoint(ckpt, Numerics::kPlain);
  ASSERT_TRUE(model.has_mtp());
  const int64_t V = model.config().vocab_size, n = model.config().hc_mult, D = model.config().hidden_size;
  const auto ref = read_f32(gdir / m.at("logits").at("file").get<std::string>(), steps * V);
  std::vector<int64_t> pos(steps);
  for (int64_t i = 0; i < steps; ++i) pos[i] = i;

  SequenceState st = model.new_sequence();
  SequenceChunk chunk{&st, std::span<const int32_t>(tokens.data(), steps)};
  ForwardOutput out = model.forward(std::span<const SequenceChunk>(&chunk, 1), true);
  std::span<const int32_t> next(tokens.data() + 1, steps);
  Tensor one_shot = model.mtp_draft(st, out.hidden, next);
  compare(one_shot.as<float>(), ref, steps, V, "mtp", pos);

  SequenceState st2 = model.new_sequence();
  std::vector<float> chunked;
  for (int64_t i = 0; i < steps; i += 7) {
    const int64_t c = std::min<int64_t>(7, steps - i);
    Tensor h(DType::kF32, Shape{c, n, D});
    std::copy_n(out.hidden.as<float>() + i * n * D, c * n * D, h.as<float>());
    Tensor l = model.mtp_draft(st2, h, next.subspan(i, c));
    chunked.insert(chunked.end(), l.as<float>(), l.as<float>() + l.numel());
  }
  ASSERT_EQ(chunked.size(), static_cast<size_t>(one_shot.numel()));
  for (int64_t i = 0; i < one_shot.numel(); ++i) ASSERT_EQ(chunked[i], one_shot.as<float>()[i]) << i;
}

}  // namespace
}  // namespace dsv4
