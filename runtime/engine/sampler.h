// Token sampling: greedy, temperature, top-k, top-p, min-p, seeded and reproducible on every platform, with
// top-N logprobs and stop tokens.
//
// The vocabulary is tensor-parallel sharded in the distributed engine, so sampling is split in two steps:
//   1. every shard reduces its slice of logits to ShardCandidates (its best `max_candidates` tokens and the
//      log-sum-exp of its whole slice, raw and temperature-scaled) -> a few KB to gather instead of the logits;
//   2. merge_shard_candidates() combines them; sample_candidates() draws from the merged set.
// Unsharded sampling is the same with one shard. The merged log-sum-exp is exact, so logprobs are exact; the
// filtered distribution is exact whenever the kept set fits in the candidates (always for top_k <= the
// per-shard count; `MergedCandidates::covered_mass` says how much probability the candidates hold).
// The normalisers cost one exp per logit each (the bulk of the work), so a row computes only those its request
// uses: the raw one for reported logprobs, the scaled one for a random draw (temperature > 0); a greedy request
// without logprobs needs neither, only the best candidates. The rows of a step are reduced over the CPU kernel
// thread pool.
// Depends on runtime/core and the kernels' thread pool only.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace dsv4 {

/// Sampling parameters of one request. validate() states the accepted ranges.
struct SamplingParams {
  /// 0 = greedy (argmax, lowest id on ties); > 0 divides the logits.
  float temperature = 1.0f;
  /// Keep the k most likely tokens; 0 = off.
  int32_t top_k = 0;
  /// Keep the smallest most-likely prefix whose probability reaches top_p; in (0, 1], 1 = off.
  float top_p = 1.0f;
  /// Keep tokens with p >= min_p * p_max; in [0, 1], 0 = off.
  float min_p = 0.0f;
  /// Seed of the request's own random stream.
  uint64_t seed = 0;
  /// How many top logprobs to report per step (0..kMaxTopLogprobs).
  int32_t top_logprobs = 0;
  /// Generation stops after any of these ids (EOS is usually one of them).
  std::vector<int32_t> stop_token_ids;

  static constexpr int32_t kMaxTopLogprobs = 20;
};

/// Throws dsv4::Error(kInvalidArgument) naming the bad field: temperature < 0 or not finite, top_k < 0,
/// top_p outside (0, 1], min_p outside [0, 1], top_logprobs outside [0, kMaxTopLogprobs].
void validate(const SamplingParams& params);

/// One vocabulary entry with its raw (not temperature-scaled) logit.
struct TokenCandidate {
  int32_t id = 0;
  float logit = 0.0f;
};

/// Which log-sum-exps of a shard's logits shard_candidates() computes (each costs one exp per logit; at
/// temperature 0 and 1 one exp serves both).
struct Normalisers {
  bool raw = true;     // of the logits: the reported logprobs
  bool scaled = true;  // of the logits / temperature: the draw's probabilities
};

/// What one vocabulary shard contributes: its best candidates (sorted, best first) and the log-sum-exp of all
/// its logits, raw and divided by the temperature (NaN when not computed: Normalisers).
struct ShardCandidates {
  std::vector<TokenCandidate> top;
  double raw_logsumexp = 0.0;
  double scaled_logsumexp = 0.0;
};

/// Reduces a shard's logits (ids `id_offset + i`) to its `max_candidates` best (ties: lower id first).
/// NaN or +inf logits are a broken model output (kInternal); -inf (masked) is allowed. `which` says which
/// log-sum-exps to compute (the others are NaN); the candidates do not depend on it.
ShardCandidates shard_candidates(std::span<const float> logits, int32_t id_offset, float temperature,
                                 int32_t max_candidates, Normalisers which = {});

/// The fewest candidates a shard reports first (shard_candidate_count).
inline constexpr int32_t kMinShardCandidates = 256;

/// One row of shard_candidates_rows(): the arguments of one shard_candidates() call.
struct CandidateRow {
  std::span<const float> logits;
  int32_t id_offset = 0;
  float temperature = 1.0f;
  int32_t max_candidates = kMinShardCandidates;
  Normalisers which;
};

/// shard_candidates() of every row. `parallel`: rows spread over the CPU kernel thread pool
/// (kernels/cpu/thread_pool.h), each row reduced by one thread exactly as the serial call reduces it, so the
/// results are bitwise those of the serial loop. The first error of any row is rethrown.
std::vector<ShardCandidates> shard_candidates_rows(std::span<const CandidateRow> rows, bool parallel = true);

/// The union of all shards' candidates, best first, with exact global normalisers.
struct MergedCandidates {
  std::vector<TokenCandidate> top;
  double raw_logsumexp = 0.0;
  double scaled_logsumexp = 0.0;
  /// Probability (temperature-scaled distribution) held by `top`; 1 when every token is a candidate.
  double covered_mass = 0.0;
};

MergedCandidates merge_shard_candidates(std::span<const ShardCandidates> shards, float temperature);

/// A token with its log-probability under the raw distribution (softmax of the logits, no temperature, no
/// filters), as OpenAI-style APIs report it.
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token = 0;
  float logprob = 0.0f;                   // of `token`, raw distribution (NaN without the raw normaliser)
  std::vector<TokenLogprob> top_logprobs;  // best first, params.top_logprobs entries (fewer if fewer candidates)
  bool is_stop = false;                   // token is in params.stop_token_ids
};

/// The request's random stream: mt19937_64 (fully specified by the C++ standard) with our own conversion to
/// [0, 1), so the same seed draws the same tokens on every platform and standard library.
class SamplerRng {
 public:
  explicit SamplerRng(uint64_t seed) : engine_(seed) {}
  /// Uniform double in [0, 1) with 53 random bits.
  double next_uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

 private:
  std::mt19937_64 engine_;
};

/// Applies top-k, then top-p, then min-p (each on the distribution renormalised over what is left) to the
/// merged candidates and draws one token. Greedy (temperature 0) draws no random number.
SampleResult sample_candidates(const MergedCandidates& merged, const SamplingParams& params, SamplerRng& rng);

/// How many of merged.top (best first) survive top-k, top-p and min-p; exposed for tests.
size_t kept_prefix_length(const MergedCandidates& merged, const SamplingParams& params);

/// How many candidates each vocabulary shard should report first for `params`: enough for top-k and the top
/// logprobs, and at least kMinShardCandidates.
int32_t shard_candidate_count(const SamplingParams& params);

/// Whether `merged` (from shards that each reported up to `count_per_shard` candidates) decides the sample
/// exactly as the whole vocabulary would, whatever the random draw: greedy, top-k within the count, every shard
/// exhausted (`all_in`), or a kept set that ends inside the candidates. Otherwise the shards must report more
/// (e.g. x8) and merge again, unless the draw itself lands inside (Sampler::suffices).
bool candidates_suffice(const MergedCandidates& merged, const SamplingParams& params, int32_t count_per_shard,
                        bool all_in);

/// The normalisers sampling with `params` uses: the raw one when it reports logprobs (top_logprobs > 0), the
/// scaled one when it draws (temperature > 0). Without the raw one SampleResult::logprob is NaN, which nothing
/// reports (logprobs are only sent when asked for); the sampled token is the same either way.
Normalisers normalisers_for(const SamplingParams& params);

/// True when no filter truncates the distribution (top_k 0, top_p 1, min_p 0): the draw is then made against
/// the exact total probability 1, so a prefix of the candidates decides any draw that lands inside it.
bool is_untruncated(const SamplingParams& params);

/// Per-request sampler over full (unsharded) logits, or over candidates merged from vocabulary shards.
class Sampler {
 public:
  /// Validates `params`.
  explicit Sampler(SamplingParams params);
  /// Samples the next token from the logits of the whole vocabulary.
  SampleResult sample(std::span<const float> logits);
  /// Samples the next token from candidates merged from the shards (the caller made them suffice:
  /// suffices()). Draws from the same random stream as sample(logits).
  SampleResult sample(const MergedCandidates& merged);
  /// Whether sample(merged) gives the token the whole vocabulary would: candidates_suffice(), or, for untruncated
  /// sampling, the next draw (peeked, not consumed) lands inside the candidates' probability mass. So the
  /// default request (temperature 1, no filter) needs only the few most likely tokens of each shard.
  bool suffices(const MergedCandidates& merged, int32_t count_per_shard, bool all_in) const;
  const SamplingParams& params() const { return params_; }
  bool is_stop(int32_t token) const;

 private:
  SamplingParams params_;
  SamplerRng rng_;
};

}  // namespace dsv4
