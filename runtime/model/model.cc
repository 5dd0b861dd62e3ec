// Model: input validation, batch layout, embedding, the layer loop and the head.
#include "runtime/model/model.h"

#include <algorithm>
#include <cstring>

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
             Numerics numerics)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(std::move(backend)), numerics_(numerics) {
  DSV4_CHECK(backend_ != nullptr) << "Model needs a kernel backend";
  DSV4_CHECK(static_cast<int64_t>(weights_.layers.size()) == config_.num_layers) << "weights / config mismatch";
}

Model Model::from_checkpoint(const Checkpoint& checkpoint, Numerics numerics) {
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
    DSV4_THROW(kInvalidCheckpoint) << "checkpoint " << checkpoint.dir().string() << " does not match its config.json: "
                                   << report.issues.size() << " issue(s): " << first;
  }
  TensorLookup lookup = [&checkpoint](const std::string& name) -> std::optional<TensorView> {
    if (!checkpoint.has(name)) return std::nullopt;
    return checkpoint.tensor(name);
  };
  ModelWeights w = bind_weights(cfg, lookup);
  return Model(cfg, std::move(w), kernels::make_cpu_backend(), numerics);
}

SequenceState Model::new_sequence() const {
  SequenceState s;
  const int64_t slots = config_.num_layers + static_cast<int64_t>(weights_.mtp.size());
  s.layers.resize(slots);
  for (int64_t l = 0; l < slots; ++l) {
    LayerState& ls = s.layers[l];
    ls.ring.assign(config_.sliding_window * config_.head_dim, 0.0f);
    const int64_t ratio = l < config_.num_layers ? config_.compress_ratio(l) : 0;
    if (ratio != 0) ls.main.init(ratio, config_.head_dim, ratio == 4 ? 2 : 1);
    if (ratio == 4) ls.index.init(ratio, config_.index_head_dim, 2);
  }
  return s;
}

Tensor Model::prefill(SequenceState& state, std::span<const int32_t> tokens) {
  SequenceChunk chunk{&state, tokens};
  return forward(std::span<const SequenceChunk>(&chunk, 1)).logits;
}

Tensor Model::decode(SequenceState& state, int32_t token) { return prefill(state, std::span<const int32_t>(&token, 1)); }

namespace {

void embed_rows(const TensorView& embed, const int32_t* tokens, int64_t rows, int64_t n, int64_t D, float* X) {
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = X + r * n * D;
    if (embed.dtype == DType::kBF16) {
      const uint16_t* src = embed.as<const uint16_t>() + static_cast<int64_t>(tokens[r]) * D;
      for (int64_t c = 0; c < D; ++c) dst[c] = bf16_to_f32(src[c]);
    } else {
      std::memcpy(dst, embed.as<const float>() + static_cast<int64_t>(tokens[r]) * D, sizeof(float) * D);
    }
    for (int64_t j = 1; j < n; ++j) std::memcpy(dst + j * D, dst, sizeof(float) * D);
  }
}

}  // namespace

ForwardOutput Model::forward(std::span<const SequenceChunk> chunks, bool want_hidden, LogitsRows logits_rows) {
  const ModelConfig& cfg = config_;
  const int64_t n = cfg.hc_mult, D = cfg.hidden_size;
  Batch b;
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

  std::vector<float> X(b.rows * n * D);
  embed_rows(weights_.embed, b.tokens.data(), b.rows, n, D, X.data());
  Ctx ctx{cfg, *backend_, numerics_};
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    model_detail::block_forward(ctx, weights_.layers[l], l, cfg.compress_ratio(l), cfg.is_hash_layer(l), b, X.data());
  }
  ForwardOutput out;
  if (want_hidden) {
    out.hidden = Tensor(DType::kF32, Shape{b.rows, n, D});
    std::copy(X.begin(), X.end(), out.hidden.as<float>());
  }
  if (logits_rows == LogitsRows::kAll) {
    out.logits = Tensor(DType::kF32, Shape{b.rows, cfg.vocab_size});
    model_detail::head_forward(ctx, weights_.hc_head, weights_.norm, weights_.head, X.data(), b.rows,
                               out.logits.as<float>());
  } else {
    const int64_t nseg = static_cast<int64_t>(b.segments.size());
    std::vector<float> last(nseg * n * D);
    for (int64_t i = 0; i < nseg; ++i) {
      const Segment& s = b.segments[i];
      std::copy_n(X.data() + (s.row + s.count - 1) * n * D, n * D, last.data() + i * n * D);
    }
    out.logits = Tensor(DType::kF32, Shape{nseg, cfg.vocab_size});
    model_detail::head_forward(ctx, weights_.hc_head, weights_.norm, weights_.head, last.data(), nseg,
                               out.logits.as<float>());
  }
  for (const Segment& s : b.segments) s.state->length += s.count;
  return out;
}

Tensor Model::mtp_draft(SequenceState& state, const Tensor& hidden, std::span<const int32_t> next_tokens) {
  const ModelConfig& cfg = config_;
  DSV4_CHECK_ARG(has_mtp()) << "mtp_draft: the checkpoint has no MTP block";
  const int64_t n = cfg.hc_mult, D = cfg.hidden_size, T = static_cast<int64_t>(next_tokens.size());
  DSV4_CHECK_ARG(T > 0 && hidden.shape() == (Shape{T, n, D}))
      << "mtp_draft: hidden " << hidden.shape().str() << " does not match " << T << " next tokens";
  DSV4_CHECK_ARG(static_cast<int64_t>(state.layers.size()) > cfg.num_layers)
      << "mtp_draft: sequence state has no MTP slot";
  for (int32_t t : next_tokens) {
    DSV4_CHECK_ARG(t >= 0 && t < cfg.vocab_size) << "mtp_draft: token id " << t << " outside the vocabulary";
  }
  const MtpWeights& m = weights_.mtp[0];
  Ctx ctx{cfg, *backend_, numerics_};

  // U_j = W_h hnorm(H_j) + W_e enorm(Embed[x_{t+1}]); the e-term is shared by the four streams.
  std::vector<float> e(T * D), he(T * n * D), U(T * n * D), ee(T * D);
  embed_rows(weights_.embed, next_tokens.data(), T, 1, D, e.data());
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
  Batch b;
  b.segments.push_back(Segment{&state, state.mtp_length, T, 0});
  b.rows = T;
  for (int64_t i = 0; i < T; ++i) {
    b.positions.push_back(state.mtp_length + i);
    b.tokens.push_back(next_tokens[i]);
  }
  // The MTP block's own state lives in the slot after the main layers; Segment.start follows mtp_length.
  model_detail::block_forward(ctx, m.block, cfg.num_layers, 0, false, b, U.data());
  Tensor logits(DType::kF32, Shape{T, cfg.vocab_size});
  model_detail::head_forward(ctx, m.hc_head, m.norm, weights_.head, U.data(), T, logits.as<float>());
  state.mtp_length += T;
  return logits;
}

}  // namespace dsv4
