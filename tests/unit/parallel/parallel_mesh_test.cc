// Mesh arithmetic, exhaustively over small worlds, and every layout constraint with its message.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "parallel/mesh.h"
#include "runtime/core/error.h"

namespace dsv4::parallel {
namespace {

// Dims that accept every tp and ep up to 16: lcm(1..16) = 720720 heads, groups and experts, FFN 128x that.
MeshModelDims permissive_dims() { return MeshModelDims{720720, 720720, 720720, int64_t{128} * 720720, 128}; }

std::string error_of(const MeshConfig& c, const MeshModelDims& d) {
  try {
    Mesh::create(c, d);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(ParallelMesh, EveryFactorisationOfSmallWorlds) {
  const MeshModelDims dims = permissive_dims();
  int layouts = 0;
  for (int world = 1; world <= 16; ++world) {
    for (int tp = 1; tp <= world; ++tp) {
      for (int cp = 1; cp <= world; ++cp) {
        if (world % (tp * cp)) continue;
        const int dp = world / (tp * cp);
        for (int ep = 1; ep <= world; ++ep) {
          if (world % ep) continue;
          if (tp > 16 || ep > 16) continue;
          const Mesh mesh = Mesh::create({world, dp, tp, ep, cp}, dims);
          ++layouts;
          std::set<std::tuple<int, int, int>> seen;
          for (int r = 0; r < world; ++r) {
            const MeshCoord c = mesh.coord(r);
            ASSERT_EQ(c.rank, r);
            ASSERT_EQ(mesh.rank_of(c.dp_rank, c.cp_rank, c.tp_rank), r) << mesh.str();
            ASSERT_TRUE(seen.emplace(c.dp_rank, c.cp_rank, c.tp_rank).second) << "coordinates repeat";
            // tp fastest: a TP group is tp consecutive ranks.
            EXPECT_EQ(c.tp_rank, r % tp);
            const auto tpg = mesh.tp_group(r), cpg = mesh.cp_group(r), dpg = mesh.dp_group(r), epg = mesh.ep_group(r);
            ASSERT_EQ(tpg.size(), static_cast<size_t>(tp));
            ASSERT_EQ(cpg.size(), static_cast<size_t>(cp));
            ASSERT_EQ(dpg.size(), static_cast<size_t>(dp));
            ASSERT_EQ(epg.size(), static_cast<size_t>(ep));
            EXPECT_EQ(tpg.front(), r - r % tp);
            EXPECT_EQ(tpg[c.tp_rank], r);
            EXPECT_EQ(cpg[c.cp_rank], r);
            EXPECT_EQ(dpg[c.dp_rank], r);
            EXPECT_EQ(epg[c.ep_rank], r);
            for (int m : tpg) EXPECT_EQ(mesh.coord(m).dp_rank * cp + mesh.coord(m).cp_rank, c.dp_rank * cp + c.cp_rank);
            for (int m : cpg) EXPECT_EQ(mesh.coord(m).tp_rank, c.tp_rank);
            for (int m : dpg) EXPECT_EQ(mesh.coord(m).cp_rank * tp + mesh.coord(m).tp_rank, c.cp_rank * tp + c.tp_rank);
            for (int m : epg) EXPECT_EQ(mesh.coord(m).ep_replica, c.ep_replica);
            // Split keys rebuild the same groups: same color <=> same group, key orders members.
            for (int m = 0; m < world; ++m) {
              const bool same_tp = std::count(tpg.begin(), tpg.end(), m) > 0;
              EXPECT_EQ(mesh.tp_split(m).color == mesh.tp_split(r).color, same_tp);
              const bool same_ep = std::count(epg.begin(), epg.end(), m) > 0;
              EXPECT_EQ(mesh.ep_split(m).color == mesh.ep_split(r).color, same_ep);
              const bool same_dp = std::count(dpg.begin(), dpg.end(), m) > 0;
              EXPECT_EQ(mesh.dp_split(m).color == mesh.dp_split(r).color, same_dp);
              const bool same_cp = std::count(cpg.begin(), cpg.end(), m) > 0;
              EXPECT_EQ(mesh.cp_split(m).color == mesh.cp_split(r).color, same_cp);
            }
            EXPECT_EQ(mesh.tp_split(r).key, c.tp_rank);
            EXPECT_EQ(mesh.ep_split(r).key, c.ep_rank);
          }
          EXPECT_EQ(seen.size(), static_cast<size_t>(world));
          // Experts: contiguous blocks, every expert owned by exactly one ep rank.
          for (int e = 0; e < dims.num_experts; e += 997) {
            const int owner = mesh.expert_owner(e);
            EXPECT_GE(e, mesh.first_expert(owner));
            EXPECT_LT(e, mesh.first_expert(owner) + mesh.experts_per_ep_rank());
          }
        }
      }
    }
  }
  EXPECT_GT(layouts, 200);
}

TEST(ParallelMesh, DesignTargetV4Pro) {
  // 16 nodes x 8 GPUs: TP 8 inside a node, DP 16, EP 128 (ARCHITECTURE.md).
  const MeshModelDims pro{128, 16, 384, 3072, 128};
  const Mesh mesh = Mesh::create({128, 16, 8, 128, 1}, pro);
  EXPECT_EQ(mesh.heads_per_tp_rank(), 16);
  EXPECT_EQ(mesh.o_groups_per_tp_rank(), 2);
  EXPECT_EQ(mesh.ffn_width_per_tp_rank(), 384);
  EXPECT_EQ(mesh.experts_per_ep_rank(), 3);
  EXPECT_EQ(mesh.expert_owner(383), 127);
  EXPECT_EQ(mesh.tp_group(13), (std::vector<int>{8, 9, 10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(mesh.coord(13).dp_rank, 1);
}

TEST(ParallelMesh, Tp16OnA3072WideFfnIsRefusedNamingIt) {
  const MeshModelDims pro{128, 16, 384, 3072, 128};
  const std::string what = error_of({128, 8, 16, 128, 1}, pro);
  EXPECT_TRUE(contains(what, "tp=16 splits the 3072-wide dense FFN into 192 columns")) << what;
  EXPECT_TRUE(contains(what, "FP8 scale block 128")) << what;
  EXPECT_TRUE(contains(what, "valid tp: 1, 2, 4, 8")) << what;
}

TEST(ParallelMesh, EachConstraintHasItsMessage) {
  const MeshModelDims flash{64, 8, 256, 2048, 128};
  EXPECT_TRUE(contains(error_of({8, 2, 2, 8, 1}, flash), "world size 8 != dp * tp * cp = 2 * 2 * 1 = 4"));
  EXPECT_TRUE(contains(error_of({6, 3, 2, 4, 1}, MeshModelDims{64, 8, 256, 0, 128}), "ep=4 does not divide the world size 6"));
  EXPECT_TRUE(contains(error_of({3, 1, 3, 1, 1}, MeshModelDims{64, 9, 0, 0, 128}), "does not divide the 64 attention heads"));
  EXPECT_TRUE(contains(error_of({4, 1, 4, 1, 1}, MeshModelDims{64, 2, 0, 0, 128}), "does not divide the 2 output groups"));
  EXPECT_TRUE(contains(error_of({3, 1, 1, 3, 1}, flash), "ep=3 does not divide the 256 routed experts"));
  EXPECT_TRUE(contains(error_of({3, 1, 3, 1, 1}, MeshModelDims{63, 9, 0, 1000, 128}), "does not divide the 1000-wide"));
  EXPECT_TRUE(contains(error_of({0, 1, 1, 1, 1}, flash), "world size must be at least 1"));
  EXPECT_TRUE(contains(error_of({2, 1, 1, 0, 1}, flash), "ep must be at least 1"));
  // Several problems are all reported.
  EXPECT_EQ(Mesh::violations({6, 1, 4, 4, 1}, flash).size(), 2u);  // world != product, ep does not divide 6
  EXPECT_TRUE(Mesh::violations({8, 2, 4, 8, 1}, flash).empty());
}

TEST(ParallelMesh, ContextParallelOrdering) {
  const Mesh mesh = Mesh::create({12, 2, 2, 4, 3}, MeshModelDims{8, 4, 8, 256, 128});
  // rank = (dp * cp + cp_rank) * tp + tp_rank
  EXPECT_EQ(mesh.rank_of(1, 2, 1), (1 * 3 + 2) * 2 + 1);
  EXPECT_EQ(mesh.cp_group(7), (std::vector<int>{7, 9, 11}));
  EXPECT_EQ(mesh.dp_group(3), (std::vector<int>{3, 9}));
  EXPECT_EQ(mesh.ep_group(5), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_THROW(mesh.coord(12), Error);
  EXPECT_THROW(mesh.rank_of(2, 0, 0), Error);
  EXPECT_THROW(mesh.expert_owner(8), Error);
}

}  // namespace
}  // namespace dsv4::parallel
