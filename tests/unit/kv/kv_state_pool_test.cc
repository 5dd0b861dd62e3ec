// The sequence-state pool: exact accounting, admission by budget, exhaustion as kResourceExhausted, every
// page returned on free, RowStore rows across page boundaries, and kernels reading rows through the page
// table giving bit-for-bit what they give on one contiguous array.
#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <random>
#include <vector>

#include "kernels/ops/attention.h"
#include "runtime/core/error.h"
#include "runtime/kv/cpu_state_bytes.h"
#include "runtime/kv/state_pool.h"

namespace dsv4 {
namespace {

constexpr int64_t kPage = 256;

// The code of the Error `f` throws; nullopt when it returns.
std::optional<ErrorCode> code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return std::nullopt;
}

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(StatePool, AccountingIsExact) {
  StatePool pool({kPage, kUnlimitedStateBudget});
  const int64_t a = pool.open(1000), b = pool.open();
  void* p0 = pool.allocate_page(a);
  void* p1 = pool.allocate_page(a);
  pool.allocate_page(b);
  pool.charge(a, 100);
  pool.charge(b, 7);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p0) % 64, 0u);
  StateUsage ua = pool.usage(a);
  EXPECT_EQ(ua.pages, 2);
  EXPECT_EQ(ua.page_bytes, 2 * kPage);
  EXPECT_EQ(ua.fixed_bytes, 100);
  EXPECT_EQ(ua.bytes(), 2 * kPage + 100);
  EXPECT_EQ(ua.reserved_bytes, 1000);
  EXPECT_EQ(ua.committed, 1000);  // still inside its reservation
  StateUsage t = pool.total();
  EXPECT_EQ(t.pages, 3);
  EXPECT_EQ(t.bytes(), 3 * kPage + 107);
  EXPECT_EQ(t.committed, 1000 + kPage + 7);
  EXPECT_EQ(pool.high_water_bytes(), 3 * kPage + 107);
  pool.free_page(a, p1);
  pool.uncharge(a, 100);
  EXPECT_EQ(pool.usage(a).bytes(), kPage);
  EXPECT_EQ(pool.total().bytes(), 2 * kPage + 7);
  EXPECT_EQ(pool.high_water_bytes(), 3 * kPage + 107);  // a high-water mark does not come down
  EXPECT_EQ(pool.cached_pages(), 1);
  // A page of another sequence, or one already returned, is refused.
  EXPECT_EQ(code_of([&] { pool.free_page(b, p0); }), ErrorCode::kInternal);
  EXPECT_EQ(code_of([&] { pool.free_page(a, p1); }), ErrorCode::kInternal);
  EXPECT_EQ(code_of([&] { pool.close(a); }), ErrorCode::kInternal);  // still holds p0
  pool.free_page(a, p0);
  pool.close(a);
  EXPECT_EQ(pool.sequences(), 1);
  EXPECT_EQ(code_of([&] { pool.usage(a); }), ErrorCode::kInternal);
}

TEST(StatePool, AdmissionRefusesOverBudget) {
  StatePool pool({kPage, 10 * kPage});
  EXPECT_TRUE(pool.can_admit(10 * kPage));
  EXPECT_FALSE(pool.can_admit(10 * kPage + 1));
  const int64_t a = pool.open(6 * kPage);
  EXPECT_EQ(pool.available_bytes(), 4 * kPage);
  EXPECT_FALSE(pool.can_admit(5 * kPage));
  EXPECT_EQ(code_of([&] { pool.open(5 * kPage); }), ErrorCode::kResourceExhausted);
  const int64_t b = pool.open(4 * kPage);
  EXPECT_EQ(pool.available_bytes(), 0);
  // Inside its reservation a sequence always gets its pages, even with the budget fully committed.
  std::vector<void*> pages;
  for (int i = 0; i < 6; ++i) pages.push_back(pool.allocate_page(a));
  EXPECT_EQ(pool.total().committed, 10 * kPage);
  // Past it, nothing is left: refused with kResourceExhausted and nothing booked.
  EXPECT_EQ(code_of([&] { pool.allocate_page(a); }), ErrorCode::kResourceExhausted);
  EXPECT_EQ(code_of([&] { pool.charge(a, 1); }), ErrorCode::kResourceExhausted);
  EXPECT_EQ(pool.usage(a).pages, 6);
  EXPECT_EQ(pool.usage(a).fixed_bytes, 0);
  for (void* p : pages) pool.free_page(a, p);
  pool.close(a);
  pool.close(b);
  EXPECT_EQ(pool.total().committed, 0);
  EXPECT_EQ(pool.available_bytes(), 10 * kPage);
  // Without reservations, growth is admitted page by page until the budget.
  const int64_t c = pool.open();
  pool.charge(c, 3 * kPage);
  std::vector<void*> c_pages;
  for (int i = 0; i < 7; ++i) c_pages.push_back(pool.allocate_page(c));
  EXPECT_EQ(code_of([&] { pool.allocate_page(c); }), ErrorCode::kResourceExhausted);
  EXPECT_EQ(pool.total().bytes(), 10 * kPage);
  for (void* p : c_pages) pool.free_page(c, p);
  pool.close(c);
}

TEST(StatePool, RejectsBadOptions) {
  EXPECT_EQ(code_of([] { StatePool p({100, kUnlimitedStateBudget}); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([] { StatePool p({0, kUnlimitedStateBudget}); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([] { StatePool p({kPage, -5}); }), ErrorCode::kInvalidArgument);
  StatePool pool({kPage, kUnlimitedStateBudget});
  const int64_t s = pool.open();
  EXPECT_EQ(code_of([&] { RowStore r(&pool, s, kPage / 4 + 1); }), ErrorCode::kInvalidArgument);
  pool.close(s);
}

TEST(RowStore, RowsAcrossPageBoundaries) {
  StatePool pool({kPage, kUnlimitedStateBudget});
  StateAccount acct(&pool);
  const int64_t dim = 20;  // 80 B rows: 3 per 256 B page, 16 B of each page unused
  RowStore rows(&pool, acct.id(), dim);
  EXPECT_EQ(rows.rows_per_page(), 3);
  const auto data = randn(10 * dim, 1);
  for (int64_t i = 0; i < 10; ++i) rows.append(data.data() + i * dim);
  EXPECT_EQ(rows.size(), 10);
  EXPECT_EQ(rows.num_pages(), 4);
  EXPECT_EQ(pool.usage(acct.id()).pages, 4);
  for (int64_t i = 0; i < 10; ++i) {
    const float* via_table = rows.pages()[i / 3] + (i % 3) * dim;
    EXPECT_EQ(via_table, rows.row(i));
    for (int64_t j = 0; j < dim; ++j) ASSERT_EQ(rows.row(i)[j], data[i * dim + j]) << "row " << i;
  }
  // reserve() takes the pages up front; the stored rows do not move.
  const float* r9 = rows.row(9);
  rows.reserve(16);
  EXPECT_EQ(rows.num_pages(), 6);
  EXPECT_EQ(rows.size(), 10);
  EXPECT_EQ(rows.row(9), r9);
  // A move keeps the pages; the moved-from store holds none.
  RowStore moved(std::move(rows));
  EXPECT_EQ(moved.size(), 10);
  EXPECT_EQ(rows.num_pages(), 0);
  EXPECT_EQ(moved.row(4)[0], data[4 * dim]);
  EXPECT_EQ(pool.usage(acct.id()).pages, 6);
}

TEST(RowStore, FreeReturnsEveryPage) {
  StatePool pool({kPage, 64 * kPage});
  {
    StateAccount a(&pool, 8 * kPage), b(&pool);
    RowStore ra(&pool, a.id(), 16), rb(&pool, b.id(), 64);
    std::vector<float> row(64, 1.0f);
    for (int i = 0; i < 40; ++i) ra.append(row.data());  // 4 rows per page: 10 pages
    for (int i = 0; i < 5; ++i) rb.append(row.data());    // 1 row per page: 5 pages
    pool.charge(a.id(), 123);
    EXPECT_EQ(pool.total().pages, 15);
    EXPECT_EQ(pool.usage(a.id()).committed, 10 * kPage + 123);
    rb.clear();
    EXPECT_EQ(pool.total().pages, 10);
    EXPECT_EQ(pool.usage(b.id()).bytes(), 0);
  }  // stores, then accounts: every page and charge back
  const StateUsage t = pool.total();
  EXPECT_EQ(t.pages, 0);
  EXPECT_EQ(t.bytes(), 0);
  EXPECT_EQ(t.committed, 0);
  EXPECT_EQ(pool.sequences(), 0);
  EXPECT_EQ(pool.cached_pages(), 15);
  pool.trim();
  EXPECT_EQ(pool.cached_pages(), 0);
  EXPECT_EQ(pool.high_water_bytes(), 15 * kPage + 123);
}

TEST(StateAccount, PrivatePoolWhenNoneGiven) {
  StateAccount acct(nullptr);
  ASSERT_TRUE(acct.valid());
  EXPECT_TRUE(acct.pool()->unlimited());
  EXPECT_EQ(acct.pool()->page_bytes(), kDefaultStatePageBytes);
  RowStore r(acct.pool(), acct.id(), 512);
  std::vector<float> row(512, 2.0f);
  r.append(row.data());
  EXPECT_EQ(acct.held_bytes(), kDefaultStatePageBytes);
  r.clear();
  StateAccount moved = std::move(acct);
  EXPECT_FALSE(acct.valid());
  EXPECT_EQ(moved.held_bytes(), 0);
}

// Rows scattered over pages (3 per page) against the same rows in one contiguous page: the attention and the
// indexer scores must be bit-for-bit equal, as the model's chunked == one-shot tests rely on.
TEST(PageTable, KernelReadsEqualContiguousReads) {
  const int64_t T = 3, H = 2, d = 20, n_raw = 4, n_comp = 11;
  StatePool pool({kPage, kUnlimitedStateBudget});
  StateAccount acct(&pool);
  RowStore rows(&pool, acct.id(), d);
  const auto comp = randn(n_comp * d, 2), raw = randn(n_raw * d, 3), q = randn(T * H * d, 4), sink = randn(H, 5);
  for (int64_t i = 0; i < n_comp; ++i) rows.append(comp.data() + i * d);
  ASSERT_GT(rows.num_pages(), 3);
  std::vector<int32_t> idx;
  for (int64_t t = 0; t < T; ++t) {
    for (int32_t j : {0, 3, -1, 4, 6, 9, 14, 10}) idx.push_back(j == -1 ? -1 : (j + static_cast<int32_t>(t)) % 15);
  }
  auto attend = [&](const float* const* pages, int64_t per_page) {
    std::vector<float> out(T * H * d);
    kernels::SparseAttentionParams p;
    p.q = q.data();
    p.tokens = T;
    p.heads = H;
    p.dim = d;
    p.kv_raw = raw.data();
    p.n_raw = n_raw;
    p.comp_pages = pages;
    p.comp_rows_per_page = per_page;
    p.n_comp = n_comp;
    p.indices = idx.data();
    p.max_indices = 8;
    p.sink = sink.data();
    p.scale = 0.25f;
    p.out = out.data();
    kernels::cpu::sparse_attention(p);
    return out;
  };
  const float* whole[] = {comp.data()};
  const auto paged = attend(rows.pages(), rows.rows_per_page());
  const auto contiguous = attend(whole, n_comp);
  ASSERT_EQ(paged.size(), contiguous.size());
  for (size_t i = 0; i < paged.size(); ++i) ASSERT_EQ(paged[i], contiguous[i]) << i;

  // Indexer scores, paged and tiled [2, 9) against contiguous, all keys at once.
  const auto w = randn(T * H, 6);
  const std::vector<int64_t> visible = {11, 7, 9};
  auto score = [&](const float* const* pages, int64_t per_page, int64_t begin, int64_t end) {
    std::vector<float> s(T * n_comp, -1.0f);
    kernels::IndexerScoreParams p;
    p.q = q.data();
    p.weights = w.data();
    p.tokens = T;
    p.heads = H;
    p.dim = d;
    p.key_pages = pages;
    p.key_rows_per_page = per_page;
    p.visible = visible.data();
    p.key_begin = begin;
    p.key_end = end;
    p.scores = s.data();
    p.score_stride = n_comp;
    kernels::cpu::indexer_scores(p);
    return s;
  };
  const auto all = score(whole, n_comp, 0, n_comp);
  const auto tile = score(rows.pages(), rows.rows_per_page(), 2, 9);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t r = 0; r < n_comp; ++r) {
      const float whole_score = all[t * n_comp + r];
      if (r >= visible[t]) EXPECT_EQ(whole_score, -1.0f) << "row " << r << " beyond query " << t << "'s view";
      if (r >= 2 && r < std::min<int64_t>(9, visible[t])) {
        EXPECT_EQ(tile[t * n_comp + (r - 2)], whole_score) << "query " << t << " row " << r;
      }
    }
    for (int64_t j = std::min<int64_t>(9, visible[t]) - 2; j < n_comp; ++j) {
      EXPECT_EQ(tile[t * n_comp + j], -1.0f) << "query " << t << " column " << j << " outside its tile";
    }
  }
}

TEST(CpuStateBytes, CountsPagesPerStore) {
  ModelConfig c;
  c.num_layers = 3;
  c.compress_ratios = {0, 4, 128};
  c.sliding_window = 8;
  c.head_dim = 16;       // 64 B rows: 4 per 256 B page
  c.index_head_dim = 8;  // 32 B rows: 8 per page
  const int64_t ring = 3 * 8 * 16 * 4;
  // CSA: main kv+score [4, 32] + prev [4, 16] (x2), indexer [4, 16] + [4, 8] (x2); HCA: [128, 16] (x2).
  const int64_t comp = (2 * 4 * 32 + 2 * 4 * 16) * 4 + (2 * 4 * 16 + 2 * 4 * 8) * 4 + 2 * 128 * 16 * 4;
  CpuStateBytes s = cpu_state_bytes(c, 0, kPage);
  EXPECT_EQ(s.ring, ring);
  EXPECT_EQ(s.compressor, comp);
  EXPECT_EQ(s.row_pages, 0);
  // 300 tokens: CSA 75 rows -> 19 main pages + 10 indexer pages; HCA 2 rows -> 1 page.
  s = cpu_state_bytes(c, 300, kPage, 1);
  EXPECT_EQ(s.ring, ring + 8 * 16 * 4);
  EXPECT_EQ(s.row_pages, 19 + 10 + 1);
  EXPECT_EQ(s.total(), ring + 8 * 16 * 4 + comp + 30 * kPage);
}

}  // namespace
}  // namespace dsv4
