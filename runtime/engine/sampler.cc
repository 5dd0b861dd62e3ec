// Sampling over sorted candidates (see sampler.h for the sharded design).
#include "runtime/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>

#include "kernels/cpu/thread_pool.h"
#include "runtime/core/error.h"

namespace dsv4 {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();  // a normaliser that was not computed

// Candidate order: higher logit first, lower id first on ties, so every shard layout sorts alike.
bool better(const TokenCandidate& a, const TokenCandidate& b) {
  return a.logit != b.logit ? a.logit > b.logit : a.id < b.id;
}

double logaddexp(double a, double b) {
  if (a == kNegInf) return b;
  if (b == kNegInf) return a;
  const double m = std::max(a, b);
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

double scale(float logit, float temperature) {
  return temperature > 0.0f ? static_cast<double>(logit) / temperature : static_cast<double>(logit);
}

// Probabilities of the temperature-scaled distribution for the candidates.
std::vector<double> candidate_probs(const MergedCandidates& merged, float temperature) {
  std::vector<double> p(merged.top.size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = std::exp(scale(merged.top[i].logit, temperature) - merged.scaled_logsumexp);
  return p;
}

}  // namespace

void validate(const SamplingParams& params) {
  DSV4_CHECK_ARG(std::isfinite(params.temperature) && params.temperature >= 0.0f)
      << "sampling: temperature must be a finite number >= 0, got " << params.temperature;
  DSV4_CHECK_ARG(params.top_k >= 0) << "sampling: top_k must be >= 0 (0 = off), got " << params.top_k;
  DSV4_CHECK_ARG(params.top_p > 0.0f && params.top_p <= 1.0f) << "sampling: top_p must be in (0, 1], got " << params.top_p;
  DSV4_CHECK_ARG(params.min_p >= 0.0f && params.min_p <= 1.0f) << "sampling: min_p must be in [0, 1], got " << params.min_p;
  DSV4_CHECK_ARG(params.top_logprobs >= 0 && params.top_logprobs <= SamplingParams::kMaxTopLogprobs)
      << "sampling: top_logprobs must be in [0, " << SamplingParams::kMaxTopLogprobs << "], got " << params.top_logprobs;
  for (int32_t id : params.stop_token_ids) DSV4_CHECK_ARG(id >= 0) << "sampling: stop token id " << id << " is negative";
}

ShardCandidates shard_candidates(std::span<const float> logits, int32_t id_offset, float temperature,
                                 int32_t max_candidates, Normalisers which) {
  DSV4_CHECK_ARG(max_candidates > 0) << "sampling: max_candidates must be > 0";
  ShardCandidates out;
  float max_logit = -std::numeric_limits<float>::infinity();
  for (float x : logits) {
    DSV4_CHECK(!std::isnan(x) && x != std::numeric_limits<float>::infinity()) << "logits contain NaN or +inf";
    max_logit = std::max(max_logit, x);
  }
  if (max_logit == -std::numeric_limits<float>::infinity()) {
    out.raw_logsumexp = which.raw ? kNegInf : kNaN;
    out.scaled_logsumexp = which.scaled ? kNegInf : kNaN;
    return out;
  }
  // Temperature 0 (greedy) and 1 leave the logits unscaled: one exp per logit serves both sums.
  const bool unscaled = temperature == 0.0f || temperature == 1.0f;
  double raw_sum = 0.0, scaled_sum = 0.0;
  const double max_scaled = scale(max_logit, temperature);
  // The best `keep` candidates in a heap whose top is the worst kept one: a logit that does not beat it (nearly
  // all of a vocabulary) costs one comparison, instead of a copy and a sort of the whole shard.
  const size_t keep = std::min(logits.size(), static_cast<size_t>(max_candidates));
  std::vector<TokenCandidate> heap;
  heap.reserve(keep);
  // One loop per choice of sums (`raw` and `scaled` are constants of each instantiation, so a skipped sum costs
  // nothing); the candidate part is the same in all, so the candidates do not depend on the choice, and each sum
  // that is computed adds the same terms in the same order as when both are.
  auto reduce = [&](auto raw, auto scaled) {
    for (size_t i = 0; i < logits.size(); ++i) {
      const float x = logits[i];
      if (x == -std::numeric_limits<float>::infinity()) continue;  // masked: never a candidate
      if constexpr (decltype(raw)::value) {
        const double e = std::exp(static_cast<double>(x) - max_logit);
        raw_sum += e;
        if constexpr (decltype(scaled)::value) {
          scaled_sum += unscaled ? e : std::exp(scale(x, temperature) - max_scaled);
        }
      } else if constexpr (decltype(scaled)::value) {
        // Unscaled (temperature 1): x - max equals scale(x) - max_scaled exactly, the same exp as above.
        scaled_sum += std::exp(unscaled ? static_cast<double>(x) - max_logit : scale(x, temperature) - max_scaled);
      }
      const TokenCandidate c{id_offset + static_cast<int32_t>(i), x};
      if (heap.size() < keep) {
        heap.push_back(c);
        std::push_heap(heap.begin(), heap.end(), better);
      } else if (better(c, heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), better);
        heap.back() = c;
        std::push_heap(heap.begin(), heap.end(), better);
      }
    }
  };
  using Yes = std::true_type;
  using No = std::false_type;
  if (which.raw && which.scaled) {
    reduce(Yes{}, Yes{});
  } else if (which.raw) {
    reduce(Yes{}, No{});
  } else if (which.scaled) {
    reduce(No{}, Yes{});
  } else {
    reduce(No{}, No{});
  }
  out.raw_logsumexp = which.raw ? max_logit + std::log(raw_sum) : kNaN;
  out.scaled_logsumexp = which.scaled ? max_scaled + std::log(scaled_sum) : kNaN;
  std::sort(heap.begin(), heap.end(), better);
  out.top = std::move(heap);
  return out;
}

std::vector<ShardCandidates> shard_candidates_rows(std::span<const CandidateRow> rows, bool parallel) {
  std::vector<ShardCandidates> out(rows.size());
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const CandidateRow& row = rows[static_cast<size_t>(r)];
      out[static_cast<size_t>(r)] =
          shard_candidates(row.logits, row.id_offset, row.temperature, row.max_candidates, row.which);
    }
  };
  if (parallel && rows.size() > 1) {
    kernels::cpu::parallel_for(static_cast<int64_t>(rows.size()), 1, run);
  } else {
    run(0, static_cast<int64_t>(rows.size()));
  }
  return out;
}

MergedCandidates merge_shard_candidates(std::span<const ShardCandidates> shards, float temperature) {
  MergedCandidates merged;
  merged.raw_logsumexp = merged.scaled_logsumexp = kNegInf;
  for (const ShardCandidates& s : shards) {
    merged.raw_logsumexp = logaddexp(merged.raw_logsumexp, s.raw_logsumexp);
    merged.scaled_logsumexp = logaddexp(merged.scaled_logsumexp, s.scaled_logsumexp);
    merged.top.insert(merged.top.end(), s.top.begin(), s.top.end());
  }
  std::sort(merged.top.begin(), merged.top.end(), better);
  for (size_t i = 1; i < merged.top.size(); ++i) {
    DSV4_CHECK(merged.top[i].id != merged.top[i - 1].id || merged.top[i].logit != merged.top[i - 1].logit)
        << "token " << merged.top[i].id << " reported by two shards";
  }
  merged.covered_mass = 0.0;
  for (double p : candidate_probs(merged, temperature)) merged.covered_mass += p;
  return merged;
}

size_t kept_prefix_length(const MergedCandidates& merged, const SamplingParams& params) {
  const size_t n = merged.top.size();
  DSV4_CHECK(n > 0) << "sampling: no candidate token (every logit is -inf)";
  if (params.temperature == 0.0f) return 1;
  const std::vector<double> p = candidate_probs(merged, params.temperature);
  size_t k = n;
  // The distribution the next filter sees is renormalised over what is kept so far: its total is `mass`.
  double mass = 1.0;
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) <= n) {
    k = static_cast<size_t>(params.top_k);
    mass = std::accumulate(p.begin(), p.begin() + k, 0.0);
  }
  if (params.top_p < 1.0f) {
    const double target = static_cast<double>(params.top_p) * mass;
    double cumulative = 0.0;
    for (size_t i = 0; i < k; ++i) {
      cumulative += p[i];
      if (cumulative >= target) {
        k = i + 1;
        break;
      }
    }
  }
  if (params.min_p > 0.0f) {
    const double threshold = static_cast<double>(params.min_p) * p[0];
    size_t keep = 1;
    while (keep < k && p[keep] >= threshold) ++keep;
    k = keep;
  }
  return k;
}

SampleResult sample_candidates(const MergedCandidates& merged, const SamplingParams& params, SamplerRng& rng) {
  const size_t kept = kept_prefix_length(merged, params);
  size_t chosen = 0;
  if (params.temperature > 0.0f && kept > 1) {
    const std::vector<double> p = candidate_probs(merged, params.temperature);
    // Untruncated: the probabilities are normalised by the exact global log-sum-exp, so the total is 1 and the
    // draw does not depend on how many candidates are present (the sharded engine sends only a prefix).
    const double total = is_untruncated(params) ? 1.0 : std::accumulate(p.begin(), p.begin() + kept, 0.0);
    const double u = rng.next_uniform() * total;
    double cumulative = 0.0;
    chosen = kept - 1;  // rounding can leave u just above the last cumulative sum
    for (size_t i = 0; i < kept; ++i) {
      cumulative += p[i];
      if (u < cumulative) {
        chosen = i;
        break;
      }
    }
  }
  SampleResult result;
  result.token = merged.top[chosen].id;
  result.logprob = static_cast<float>(merged.top[chosen].logit - merged.raw_logsumexp);
  const size_t n_top = std::min(merged.top.size(), static_cast<size_t>(params.top_logprobs));
  for (size_t i = 0; i < n_top; ++i) {
    result.top_logprobs.push_back({merged.top[i].id, static_cast<float>(merged.top[i].logit - merged.raw_logsumexp)});
  }
  result.is_stop = std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), result.token) !=
                   params.stop_token_ids.end();
  return result;
}

Sampler::Sampler(SamplingParams params) : params_(std::move(params)), rng_(params_.seed) { validate(params_); }

bool Sampler::is_stop(int32_t token) const {
  return std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), token) != params_.stop_token_ids.end();
}

Normalisers normalisers_for(const SamplingParams& params) {
  return {.raw = params.top_logprobs > 0, .scaled = params.temperature > 0.0f};
}

bool is_untruncated(const SamplingParams& params) {
  return params.top_k == 0 && params.top_p >= 1.0f && params.min_p == 0.0f;
}

int32_t shard_candidate_count(const SamplingParams& params) {
  return std::max<int32_t>({params.top_k, params.top_logprobs, kMinShardCandidates});
}

bool candidates_suffice(const MergedCandidates& merged, const SamplingParams& params, int32_t count_per_shard,
                        bool all_in) {
  const bool top_k_inside = params.top_k > 0 && params.top_k <= count_per_shard;
  return all_in || top_k_inside || params.temperature == 0.0f ||
         kept_prefix_length(merged, params) < merged.top.size();
}

SampleResult Sampler::sample(std::span<const float> logits) {
  DSV4_CHECK_ARG(!logits.empty()) << "sampling: empty logits";
  const auto vocab = static_cast<int32_t>(logits.size());
  // Start with few candidates and widen until the kept set provably ends inside them (or all are in):
  // sorting the whole vocabulary is only needed for untruncated sampling.
  int32_t count = shard_candidate_count(params_);
  for (;;) {
    count = std::min(count, vocab);
    const ShardCandidates shard = shard_candidates(logits, 0, params_.temperature, count, normalisers_for(params_));
    const MergedCandidates merged = merge_shard_candidates(std::span<const ShardCandidates>(&shard, 1), params_.temperature);
    const bool all_in = merged.top.size() < static_cast<size_t>(count) || count == vocab;
    if (suffices(merged, count, all_in)) return sample_candidates(merged, params_, rng_);
    count = count > vocab / 8 ? vocab : count * 8;
  }
}

SampleResult Sampler::sample(const MergedCandidates& merged) { return sample_candidates(merged, params_, rng_); }

bool Sampler::suffices(const MergedCandidates& merged, int32_t count_per_shard, bool all_in) const {
  if (candidates_suffice(merged, params_, count_per_shard, all_in)) return true;
  if (!is_untruncated(params_) || merged.top.size() < 2) return false;
  // The draw sample_candidates() will make (a copy of the stream, so nothing is consumed): it picks the first
  // candidate whose cumulative probability exceeds u, which is inside the candidates when u < their mass.
  SamplerRng peek = rng_;
  const double u = peek.next_uniform();
  double cumulative = 0.0;
  for (double p : candidate_probs(merged, params_.temperature)) {
    cumulative += p;
    if (u < cumulative) return true;
  }
  return false;
}

}  // namespace dsv4
