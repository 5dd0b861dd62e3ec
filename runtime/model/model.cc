// Model: construction checks, input validation (agreed on by the TP group), batch layout, the vocabulary-
// sharded embedding, the layer loop, the head (this rank's vocabulary rows) and the MTP draft.
#include "runtime/model/model.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <string>

#include "parallel/context_parallel.h"
#include "parallel/fault_inject.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/validate.h"
#include "runtime/core/error.h"
#include "runtime/core/float_formats.h"
#include "runtime/model/layers.h"

namespace dsv4 {

using model_detail::Batch;
using model_detail::Ctx;
using model_detail::Segment;

Numerics parse_numerics(std::string_view text) {
  if (text == "plain") return Numerics::kPlain;
  if (text == "reference") return Numerics::kReference;
  DSV4_THROW(kInvalidArgument) << "numerics '" << text << "' is not one of plain|reference";
}

Model::Model(ModelConfig config, ModelWeights weights, std::unique_ptr<kernels::KernelBackend> backend,
             Numerics numerics, bool deterministic)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      backend_(std::move(backend)),
      numerics_(numerics),
      local_(std::make_shared<LocalGroups>()),
      parallel_(local_->parallel(deterministic)) {
  DSV4_CHECK(weights_.shard.is_whole()) << "a single-process model needs the whole model's weights";
  finish_construction();
}

Model::Model(ModelConfig config, ModelWeights weights, std::unique_ptr<kernels::KernelBackend> backend,
             Numerics numerics, ModelParallel parallel)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      backend_(std::move(backend)),
      numerics_(numerics),
      parallel_(parallel) {
  finish_construction();
}

void Model::finish_construction() {
  DSV4_CHECK(backend_ != nullptr) << "Model needs a kernel backend";
  DSV4_CHECK(static_cast<int64_t>(weights_.layers.size()) == config_.num_layers) << "weights / config mismatch";
  DSV4_CHECK(parallel_.tp != nullptr && parallel_.ep != nullptr) << "a sharded model needs its TP and EP groups";
  const ModelShard& s = weights_.shard;
  DSV4_CHECK_ARG(parallel_.tp->size() == s.tp_size && parallel_.ep->size() == s.ep_size &&
                 parallel_.tp->rank() == s.tp_rank && parallel_.ep->rank() == s.ep_rank)
      << "model groups (tp rank " << parallel_.tp->rank() << " of " << parallel_.tp->size() << ", ep rank "
      << parallel_.ep->rank() << " of " << parallel_.ep->size() << ") do not match the shard (tp rank " << s.tp_rank
      << " of " << s.tp_size << ", ep rank " << s.ep_rank << " of " << s.ep_size << ")";
  if (parallel_.deterministic && parallel_.cp != nullptr) {
    DSV4_CHECK_ARG(kCpVirtualShards % parallel_.cp->size() == 0)
        << "deterministic mode with context parallelism needs a CP size that divides " << kCpVirtualShards
        << " (the attention merges that many fixed softmax partials); this CP group has " << parallel_.cp->size()
        << " ranks";
  }
  check_weights();
  parallel::MoeDispatchConfig dc;
  dc.num_experts = static_cast<int>(config_.num_routed_experts);
  dc.hidden = config_.hidden_size + 1;  // the routing weight travels with each row (moe.cc)
  dc.dtype = DType::kF32;
  dispatcher_ = std::make_unique<parallel::MoeDispatcher>(*parallel_.ep, dc);
  prepare_pipeline();
  weight_bytes_ = model_weight_bytes(config_, weights_);
}

Model Model::from_checkpoint(const Checkpoint& checkpoint, Numerics numerics, bool deterministic) {
  const ModelConfig& cfg = checkpoint.config();
  // The whole tensor set against the config (names, shapes, dtypes): catches what binding alone would not,
  // e.g. a config with fewer layers or experts than the files hold.
  ValidateOptions vopt;
  vopt.scan_scales = false;
  const ValidationReport report = validate_checkpoint(checkpoint, vopt);
  if (!report.ok()) {
    std::string first;
    for (size_t i = 0; i < report.issues.size() && i < 3; ++i) {
      const CheckpointIssue& is = report.issues[i];
      first += std::string(i ? "; " : "") + std::string(issue_kind_name(is.kind)) + " " + is.tensor +
               (is.detail.empty() ? "" : " (" + is.detail + ")");
    }
    DSV4_THROW(kInvalidCheckpoint) << "checkpoint " << checkpoint.dir().string()
                                   << " does not match its config.json: " << report.issues.size()
                                   << " issue(s): " << first;
  }
  TensorLookup lookup = [&checkpoint](const std::string& name) -> std::optional<TensorView> {
    if (!checkpoint.has(name)) return std::nullopt;
    return checkpoint.tensor(name);
  };
  ModelWeights w = bind_weights(cfg, lookup);
  return Model(cfg, std::move(w), kernels::make_cpu_backend(), numerics, deterministic);
}

SequenceState Model::new_sequence(StatePool* pool, int64_t reserve_bytes) const {
  SequenceState s = make_sequence_state(config_, static_cast<int64_t>(weights_.mtp.size()), pool, reserve_bytes);
  // Context parallelism: this rank keeps its round-robin share of the compressed rows.
  if (parallel_.cp != nullptr && parallel_.cp->size() > 1) {
    model_detail::cp_shard_state(s, parallel_.cp->rank(), parallel_.cp->size());
  }
  return s;
}

Tensor Model::prefill(SequenceState& state, std::span<const int32_t> tokens) {
  SequenceChunk chunk{&state, tokens};
  return forward(std::span<const SequenceChunk>(&chunk, 1)).logits;
}

Tensor Model::decode(SequenceState& state, int32_t token) {
  return prefill(state, std::span<const int32_t>(&token, 1));
}

namespace {

uint64_t ref_bytes(const kernels::WeightRef& w) {
  if (w.data == nullptr) return 0;
  const uint64_t out = static_cast<uint64_t>(w.out), in = static_cast<uint64_t>(w.in);
  const uint64_t scale_bytes = w.scale_dtype == DType::kF32 ? 4 : 1;
  switch (w.dtype) {
    case DType::kF32: return out * in * 4;
    case DType::kBF16: return out * in * 2;
    case DType::kF8E4M3: {
      const uint64_t b = static_cast<uint64_t>(w.block);
      return out * in + ((out + b - 1) / b) * ((in + b - 1) / b) * scale_bytes;
    }
    case DType::kFP4E2M1: return out * in / 2 + out * (in / static_cast<uint64_t>(w.block)) * scale_bytes;
    default: return 0;
  }
}

uint64_t param_bytes(const F32Param& p) { return static_cast<uint64_t>(p.size) * 4; }
uint64_t norm_bytes(const NormWeight& n) {
  return n.data ? static_cast<uint64_t>(n.dim) * (n.dtype == DType::kF32 ? 4 : 2) : 0;
}
uint64_t hc_bytes(const HcWeights& h) { return param_bytes(h.fn) + param_bytes(h.base) + param_bytes(h.scale); }
uint64_t compressor_bytes(const CompressorWeights& c) {
  return ref_bytes(c.wkv) + ref_bytes(c.wgate) + param_bytes(c.ape) + norm_bytes(c.norm);
}

uint64_t layer_bytes(const ModelConfig& cfg, const LayerWeights& l) {
  uint64_t b = norm_bytes(l.attn_norm) + norm_bytes(l.ffn_norm) + hc_bytes(l.hc_attn) + hc_bytes(l.hc_ffn);
  const AttentionWeights& a = l.attn;
  b += ref_bytes(a.wq_a) + ref_bytes(a.wq_b) + ref_bytes(a.wkv) + ref_bytes(a.wo_a) + ref_bytes(a.wo_b);
  b += norm_bytes(a.q_norm) + norm_bytes(a.kv_norm) + param_bytes(a.sink);
  if (a.compressor) b += compressor_bytes(*a.compressor);
  if (a.indexer)
    b += ref_bytes(a.indexer->wq_b) + ref_bytes(a.indexer->weights_proj) + compressor_bytes(a.indexer->compressor);
  const MoeWeights& m = l.moe;
  b += ref_bytes(m.gate) + param_bytes(m.bias);
  if (m.tid2eid) b += static_cast<uint64_t>(cfg.vocab_size * cfg.num_experts_per_token) * 8;
  b += ref_bytes(m.shared.w1) + ref_bytes(m.shared.w2) + ref_bytes(m.shared.w3);
  for (const ExpertWeights& e : m.experts) b += ref_bytes(e.w1) + ref_bytes(e.w2) + ref_bytes(e.w3);
  return b;
}

// Embeds this rank's vocabulary rows (zeros for tokens other ranks hold) and sums over TP (exact: one
// term is non-zero); the row is copied into each of the n streams of X [rows, n, D].
void embed_rows(model_detail::Ctx& ctx, const TensorView& embed, const int32_t* tokens, int64_t rows, int64_t n,
                float* X) {
  const int64_t D = ctx.cfg.hidden_size, vb = ctx.shard.vocab_begin, ve = ctx.shard.vocab_end;
  std::vector<float> e(rows * D, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    if (tokens[r] < vb || tokens[r] >= ve) continue;
    const int64_t row = static_cast<int64_t>(tokens[r]) - vb;
    float* dst = e.data() + r * D;
    if (embed.dtype == DType::kBF16) {
      const uint16_t* src = embed.as<const uint16_t>() + row * D;
      for (int64_t c = 0; c < D; ++c) dst[c] = bf16_to_f32(src[c]);
    } else {
      std::memcpy(dst, embed.as<const float>() + row * D, sizeof(float) * D);
    }
  }
  model_detail::tp_sum(ctx, e.data(), rows * D);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < n; ++j) std::memcpy(X + (r * n + j) * D, e.data() + r * D, sizeof(float) * D);
  }
}

// Error(code, message) as an exception_ptr, to be rethrown once the idle step (if any) is done.
std::exception_ptr make_error(ErrorCode code, const std::string& message) {
  return std::make_exception_ptr(Error(code, message));
}

}  // namespace

uint64_t model_weight_bytes(const ModelConfig& config, const ModelWeights& w) {
  uint64_t b = w.embed.data ? static_cast<uint64_t>(w.embed.numel()) * (w.embed.dtype == DType::kF32 ? 4 : 2) : 0;
  b += ref_bytes(w.head) + norm_bytes(w.norm) + hc_bytes(w.hc_head);
  for (const LayerWeights& l : w.layers) b += layer_bytes(config, l);
  for (const MtpWeights& m : w.mtp) {
    b += ref_bytes(m.e_proj) + ref_bytes(m.h_proj) + norm_bytes(m.enorm) + norm_bytes(m.hnorm) + norm_bytes(m.norm);
    b += hc_bytes(m.hc_head) + layer_bytes(config, m.block);
  }
  return b;
}

void Model::check_weights() const {
  const ModelConfig& c = config_;
  const ModelShard& s = weights_.shard;
  const int64_t D = c.hidden_size, d = c.head_dim, Ro = c.o_lora_rank, E = c.num_routed_experts;
  DSV4_CHECK_ARG(E > 0 && s.num_experts * s.ep_size == E && s.first_expert == s.ep_rank * s.num_experts)
      << "shard: experts [" << s.first_expert << ", +" << s.num_experts << ") on ep rank " << s.ep_rank << " of "
      << s.ep_size << " are not this rank's contiguous block of " << E << " experts";
  DSV4_CHECK_ARG(s.num_heads * s.tp_size == c.num_heads && s.num_groups * s.tp_size == c.o_groups &&
                 s.head_begin == s.tp_rank * s.num_heads && s.group_begin == s.tp_rank * s.num_groups &&
                 s.shared_width * s.tp_size == shared_expert_width(c) && s.vocab_begin < s.vocab_end &&
                 s.vocab_end <= c.vocab_size)
      << "shard of tp rank " << s.tp_rank << "/" << s.tp_size << " (heads " << s.head_begin << "+" << s.num_heads
      << ", groups " << s.group_begin << "+" << s.num_groups << ", shared " << s.shared_begin << "+" << s.shared_width
      << ", vocab [" << s.vocab_begin << ", " << s.vocab_end << ")) does not split the config";
  DSV4_CHECK_ARG(weights_.embed.shape == (Shape{s.vocab_rows(), D}) && weights_.head.out == s.vocab_rows())
      << "embed " << weights_.embed.shape.str() << " / head rows " << weights_.head.out << " do not hold the shard's "
      << s.vocab_rows() << " vocabulary rows";
  auto check_layer = [&](const LayerWeights& l, const std::string& name) {
    const AttentionWeights& a = l.attn;
    const MoeWeights& m = l.moe;
    DSV4_CHECK_ARG(a.wq_b.out == s.num_heads * d && a.sink.size == s.num_heads && a.wo_a.out == s.num_groups * Ro &&
                   a.wo_b.in == s.num_groups * Ro && a.wo_b.out == D)
        << name << ": attention views (wq_b rows " << a.wq_b.out << ", sink " << a.sink.size << ", wo_a rows "
        << a.wo_a.out << ", wo_b " << a.wo_b.out << "x" << a.wo_b.in << ") do not match the shard's " << s.num_heads
        << " heads / " << s.num_groups << " groups";
    DSV4_CHECK_ARG(m.shared.w1.out == s.shared_width && m.shared.w3.out == s.shared_width &&
                   m.shared.w2.in == s.shared_width && static_cast<int64_t>(m.experts.size()) == s.num_experts)
        << name << ": MoE views (shared w1 rows " << m.shared.w1.out << ", w2 columns " << m.shared.w2.in << ", "
        << m.experts.size() << " experts) do not match the shard (shared width " << s.shared_width << ", "
        << s.num_experts << " experts)";
    if (!parallel_.deterministic) return;
    // Deterministic mode slices wo_b per output group and the shared w2 per 128 columns: refuse here, not
    // mid-forward, a format whose scale blocks those slices would cut.
    for (int64_t g = 0; g < s.num_groups; ++g) kernels::column_slice(a.wo_b, g * Ro, Ro);
    for (int64_t c0 = 0; c0 < s.shared_width; c0 += model_detail::kSharedChunk) {
      kernels::column_slice(m.shared.w2, c0, std::min(model_detail::kSharedChunk, s.shared_width - c0));
    }
  };
  for (size_t l = 0; l < weights_.layers.size(); ++l) check_layer(weights_.layers[l], "layer " + std::to_string(l));
  for (size_t i = 0; i < weights_.mtp.size(); ++i) check_layer(weights_.mtp[i].block, "mtp " + std::to_string(i));
}

struct Model::Prepared {
  Batch batch;
  std::exception_ptr error;
};

void Model::agree_on_replica(std::exception_ptr& error, int64_t rows) const {
  // Every rank of a TP group, and of a CP group, must take the same decision, or its peers would wait in a
  // collective it never joins. TP then CP: after both, every rank of the replica knows of any member's refusal.
  agree_on_group(parallel_.tp, "TP", error, rows);
  agree_on_group(parallel_.cp, "CP", error, rows);
}

void Model::agree_on_group(parallel::Communicator* group, const char* name, std::exception_ptr& error,
                           int64_t rows) const {
  if (group == nullptr || group->size() == 1) return;
  const int64_t mine[2] = {error ? 0 : 1, error ? 0 : rows};
  std::vector<int64_t> all(2 * static_cast<size_t>(group->size()));
  group->all_gather(mine, all.data(), 2, DType::kI64, parallel::kDefaultStream);
  if (error) return;
  for (int q = 0; q < group->size(); ++q) {
    if (all[2 * q] == 0) {
      error = make_error(ErrorCode::kInvalidArgument, std::string("forward: ") + name + " rank " +
                                                          std::to_string(q) + " refused the batch (see its error)");
      return;
    }
    if (all[2 * q + 1] != rows) {
      error = make_error(ErrorCode::kInvalidArgument,
                         std::string("forward: the ranks of a ") + name + " group passed different batches (" +
                             std::to_string(rows) + " rows here, " + std::to_string(all[2 * q + 1]) + " on " + name +
                             " rank " + std::to_string(q) + ")");
      return;
    }
  }
}

void Model::refuse(const std::exception_ptr& error, bool mtp, bool pipelined) {
  if (!error) return;
  if (pipelined) {
    // Both micro-batches idle: B's EP peers expect this rank on the second EP group too.
    run_pipelined(Batch{}, false, LogitsRows::kAll);
  } else if (parallel_.ep->size() > 1) {
    // The EP peers (other DP replicas) are about to exchange rows with this rank in every MoE layer: take
    // part with no rows, then report the error.
    Ctx ctx{config_, *backend_, numerics_, parallel_, weights_.shard, *dispatcher_};
    Batch idle;
    if (mtp) {
      model_detail::block_forward(ctx, weights_.mtp[0].block, config_.num_layers, 0, false, idle, nullptr);
    } else {
      for (int64_t l = 0; l < config_.num_layers; ++l) {
        model_detail::block_forward(ctx, weights_.layers[l], l, config_.compress_ratio(l), config_.is_hash_layer(l),
                                    idle, nullptr);
      }
    }
  }
  std::rethrow_exception(error);
}

Model::Prepared Model::prepare(std::span<const SequenceChunk> chunks) const {
  const ModelConfig& cfg = config_;
  Prepared p;
  Batch& b = p.batch;
  try {
    for (const SequenceChunk& c : chunks) {
      DSV4_CHECK_ARG(c.state != nullptr) << "forward: null sequence state";
      DSV4_CHECK_ARG(!c.tokens.empty()) << "forward: empty prompt (a chunk needs at least one token)";
      DSV4_CHECK_ARG(static_cast<int64_t>(c.state->layers.size()) >= cfg.num_layers)
          << "forward: sequence state was not made by this model";
      const int64_t end = c.state->length + static_cast<int64_t>(c.tokens.size());
      DSV4_CHECK_ARG(cfg.max_position_embeddings <= 0 || end <= cfg.max_position_embeddings)
          << "forward: sequence length " << end << " exceeds max_position_embeddings " << cfg.max_position_embeddings;
      for (size_t i = 0; i < c.tokens.size(); ++i) {
        DSV4_CHECK_ARG(c.tokens[i] >= 0 && c.tokens[i] < cfg.vocab_size)
            << "forward: token id " << c.tokens[i] << " at index " << i << " is outside the vocabulary [0, "
            << cfg.vocab_size << ")";
      }
      for (const Segment& s : b.segments) {
        DSV4_CHECK_ARG(s.state != c.state) << "forward: the same sequence appears twice in one batch";
      }
      Segment seg{c.state, c.state->length, static_cast<int64_t>(c.tokens.size()), b.rows};
      b.segments.push_back(seg);
      for (int64_t i = 0; i < seg.count; ++i) {
        b.positions.push_back(seg.start + i);
        b.tokens.push_back(c.tokens[i]);
      }
      b.rows += seg.count;
    }
    // Every row page the chunks will fill, taken before any state changes: an exhausted pool fails here
    // (Error kResourceExhausted, agreed over the TP group like any other refusal).
    for (const Segment& s : b.segments) reserve_sequence_rows(*s.state, s.start + s.count);
  } catch (const Error&) {
    p.error = std::current_exception();
  }
  agree_on_replica(p.error, p.error ? 0 : b.rows);
  if (p.error) p.batch = Batch{};
  return p;
}

ForwardOutput Model::forward(std::span<const SequenceChunk> chunks, bool want_hidden, LogitsRows logits_rows) {
  Prepared p = prepare(chunks);
  const bool pipelined = decide_pipeline(p.batch);
  refuse(p.error, false, pipelined);
  ForwardOutput out = pipelined ? run_pipelined(p.batch, want_hidden, logits_rows)
                                : run_batch(parallel_, *dispatcher_, p.batch, want_hidden, logits_rows, nullptr, nullptr);
  for (const Segment& s : p.batch.segments) s.state->length += s.count;
  return out;
}

ForwardOutput Model::run_batch(const ModelParallel& par, parallel::MoeDispatcher& dispatcher, const Batch& whole,
                               bool want_hidden, LogitsRows logits_rows, model_detail::StateHandover* release_state,
                               model_detail::StateHandover* acquire_state) {
  const ModelConfig& cfg = config_;
  const int64_t n = cfg.hc_mult, D = cfg.hidden_size, V = weights_.shard.vocab_rows();

  // Context parallelism splits every chunk over the CP group (this rank runs its sub-block); deterministic
  // mode takes the same path with a one-rank split on every layout, so that its attention merges the same
  // fixed partials whatever the CP size (context_parallel_attention.cc).
  const int P = par.cp != nullptr ? par.cp->size() : 1;
  const int cp_rank = P > 1 ? par.cp->rank() : 0;
  const bool split = P > 1 || par.deterministic;
  Batch mine;
  if (split) mine = model_detail::cp_local_batch(whole, cp_rank, P);
  const Batch& b = split ? mine : whole;

  Ctx ctx{cfg, *backend_, numerics_, par, weights_.shard, dispatcher, release_state, acquire_state};
  std::vector<float> X(b.rows * n * D);
  embed_rows(ctx, weights_.embed, b.tokens.data(), b.rows, n, X.data());
  const bool micro_batch = release_state != nullptr || acquire_state != nullptr;
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    // Test switch (DSV4_FAULT_INJECT, rank = the CP rank): a micro-batch failing mid-forward must end the job.
    if (micro_batch) {
      parallel::maybe_inject_fault(release_state != nullptr ? "pipeline_a_layer" : "pipeline_b_layer", cp_rank);
    }
    model_detail::block_forward(ctx, weights_.layers[l], l, cfg.compress_ratio(l), cfg.is_hash_layer(l), b, X.data());
    // An idle micro-batch A attends nowhere: release the slot here too.
    if (release_state != nullptr) release_state->release(l);
  }
  // Every CP rank returns the whole batch's output: the rows of the others are gathered.
  ForwardOutput out;
  out.vocab_begin = weights_.shard.vocab_begin;
  if (want_hidden) {
    out.hidden = Tensor(DType::kF32, Shape{whole.rows, n, D});
    if (split) {
      model_detail::cp_gather_rows(ctx, *b.cp, X.data(), n * D, out.hidden.as<float>());
    } else {
      std::copy(X.begin(), X.end(), out.hidden.as<float>());
    }
  }
  if (logits_rows == LogitsRows::kAll) {
    out.logits = Tensor(DType::kF32, Shape{whole.rows, V});
    std::vector<float> local(split ? b.rows * V : 0);
    float* dst = split ? local.data() : out.logits.as<float>();
    if (b.rows > 0) {
      model_detail::head_forward(ctx, weights_.hc_head, weights_.norm, weights_.head, X.data(), b.rows, dst);
    }
    if (split) model_detail::cp_gather_rows(ctx, *b.cp, local.data(), V, out.logits.as<float>());
  } else {
    // The last token of every chunk is on the last CP rank: it runs the head and shares the rows (unless
    // every chunk is replicated: then every rank has them).
    const int64_t nseg = static_cast<int64_t>(whole.segments.size());
    bool everywhere = true;
    for (size_t s = 0; s < whole.segments.size() && split; ++s) everywhere = everywhere && b.cp->replicated(s);
    out.logits = Tensor(DType::kF32, Shape{nseg, V});
    if (nseg > 0 && (everywhere || cp_rank == P - 1)) {
      std::vector<float> last(nseg * n * D);
      for (int64_t i = 0; i < nseg; ++i) {
        const Segment& s = b.segments[i];
        std::copy_n(X.data() + (s.row + s.count - 1) * n * D, n * D, last.data() + i * n * D);
      }
      model_detail::head_forward(ctx, weights_.hc_head, weights_.norm, weights_.head, last.data(), nseg,
                                 out.logits.as<float>());
    }
    if (P > 1 && nseg > 0 && !everywhere) {
      parallel::CpExchangeTimer timer(nseg * V * static_cast<int64_t>(sizeof(float)));
      par.cp->broadcast(out.logits.as<float>(), static_cast<size_t>(nseg * V), DType::kF32, P - 1,
                        parallel::kDefaultStream);
    }
  }
  return out;
}

Tensor Model::mtp_draft(SequenceState& state, const Tensor& hidden, std::span<const int32_t> next_tokens) {
  const ModelConfig& cfg = config_;
  const int64_t n = cfg.hc_mult, D = cfg.hidden_size, V = weights_.shard.vocab_rows();
  int64_t T = static_cast<int64_t>(next_tokens.size());
  // The MTP block exists on every rank or on none (the same checkpoint): no agreement needed for this one.
  DSV4_CHECK_ARG(has_mtp()) << "mtp_draft: the checkpoint has no MTP block";
  std::exception_ptr error;
  try {
    DSV4_CHECK_ARG(hidden.shape() == (Shape{T, n, D}))
        << "mtp_draft: hidden " << hidden.shape().str() << " does not match " << T << " next tokens";
    if (T > 0) {
      DSV4_CHECK_ARG(static_cast<int64_t>(state.layers.size()) > cfg.num_layers)
          << "mtp_draft: sequence state has no MTP slot";
    }
    for (int32_t t : next_tokens) {
      DSV4_CHECK_ARG(t >= 0 && t < cfg.vocab_size) << "mtp_draft: token id " << t << " outside the vocabulary";
    }
  } catch (const Error&) {
    error = std::current_exception();
  }
  agree_on_replica(error, error ? 0 : T);
  refuse(error, true);

  const MtpWeights& m = weights_.mtp[0];
  Ctx ctx{cfg, *backend_, numerics_, parallel_, weights_.shard, *dispatcher_};
  // U_j = W_h hnorm(H_j) + W_e enorm(Embed[x_{t+1}]); the e-term is shared by the four streams.
  std::vector<float> e(T * D), he(T * n * D), U(T * n * D), ee(T * D);
  embed_rows(ctx, weights_.embed, next_tokens.data(), T, 1, e.data());
  Batch b;
  if (T > 0) {
    model_detail::rms_norm(ctx, &m.enorm, e.data(), e.data(), T, D, D, D);
    model_detail::linear(ctx, m.e_proj, e.data(), T, D, ee.data(), D);
    model_detail::rms_norm(ctx, &m.hnorm, hidden.as<const float>(), he.data(), T * n, D, D, D);
    model_detail::linear(ctx, m.h_proj, he.data(), T * n, D, U.data(), D);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t j = 0; j < n; ++j) {
        float* dst = U.data() + (t * n + j) * D;
        for (int64_t c = 0; c < D; ++c) dst[c] += ee[t * D + c];
      }
    }
    b.segments.push_back(Segment{&state, state.mtp_length, T, 0});
    b.rows = T;
    for (int64_t i = 0; i < T; ++i) {
      b.positions.push_back(state.mtp_length + i);
      b.tokens.push_back(next_tokens[i]);
    }
  }
  // The MTP block's own state lives in the slot after the main layers; Segment.start follows mtp_length.
  model_detail::block_forward(ctx, m.block, cfg.num_layers, 0, false, b, U.data());
  Tensor logits(DType::kF32, Shape{T, V});
  if (T > 0) {
    model_detail::head_forward(ctx, m.hc_head, m.norm, weights_.head, U.data(), T, logits.as<float>());
    state.mtp_length += T;
  }
  return logits;
}

}  // namespace dsv4
