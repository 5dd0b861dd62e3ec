// Per-layer RoPE tables (spec §1.2): main RoPE without YaRN for ratio-0 layers; compress RoPE (theta 160000)
// with YaRN for the others, where on the real config pairs 0..15 keep their frequency, pairs >= 25 are divided
// by the factor 16 and the ones between are blended; no magnitude factor.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/model/layers.h"
#include "tests/unit/model/tiny_model.h"

namespace dsv4 {
namespace {

TEST(ModelRope, MainAndCompressTables) {
  ModelConfig cfg = testing::tiny_config({0, 4});
  cfg.rope_dim = 64;
  const auto main = model_detail::rope_inv_freq(cfg, 0);
  const auto comp = model_detail::rope_inv_freq(cfg, 4);
  ASSERT_EQ(main.size(), 32u);
  ASSERT_EQ(comp.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    EXPECT_FLOAT_EQ(main[i], static_cast<float>(std::pow(10000.0, -2.0 * i / 64)));
    const double base = std::pow(160000.0, -2.0 * i / 64);
    if (i <= 15) EXPECT_FLOAT_EQ(comp[i], static_cast<float>(base)) << i;
    if (i >= 25) EXPECT_FLOAT_EQ(comp[i], static_cast<float>(base / 16.0)) << i;
    if (i > 15 && i < 25) {
      const double ramp = (i - 15) / 10.0;
      EXPECT_FLOAT_EQ(comp[i], static_cast<float>(base * (1 - ramp) + base / 16.0 * ramp)) << i;
    }
  }
  cfg.yarn.enabled = false;  // no rope_scaling: plain compress theta
  EXPECT_FLOAT_EQ(model_detail::rope_inv_freq(cfg, 128)[31], static_cast<float>(std::pow(160000.0, -62.0 / 64)));
}

}  // namespace
}  // namespace dsv4
