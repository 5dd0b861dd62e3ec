// One rank's shard of a checkpoint: ownership (ModelShard, the model's ShardPlan) and the loader.
//
// The loader copies the owned byte ranges out of the checkpoint's memory mappings (memcpy per strided run)
// rather than pread()ing the files: Checkpoint already maps and validates every shard file and hands out
// views, so the copy needs no second path to the files and their offsets. With the reads requested up front
// (see will_need) the kernel reads only the pages the owned runs touch; column-split tensors are the exception
// (a rank's part of a row is shorter than a page, so every rank reads their whole pages, and copies only
// its columns). After load_shard returns, the weights no longer point into the mapping (weights.storage
// owns every byte), so the checkpoint may be closed and its page cache dropped.
//
// Ownership has one source of truth: parallel::ShardPlan::shard() on the specs built by plan_tensors()
// below. load_shard builds the same specs (with the dtypes the files actually store: the spec lets
// compressor.ape and the MTP norms be F32 or BF16, all replicated) and reads exactly each spec's range, so
// bytes_read == ShardPlan::bytes_for_rank by construction, and the test checks it.
#include "runtime/model/shard_load.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <numeric>
#include <string_view>
#include <unordered_map>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/expected_tensors.h"
#include "runtime/checkpoint/validate.h"
#include "runtime/core/error.h"
#include "runtime/model/model_parallel.h"

namespace dsv4 {
namespace {

using parallel::SplitKind;
using parallel::TensorSpec;

// The name inside a block ("attn.wq_b.weight" for "layers.3.attn.wq_b.weight"), or the whole name for
// global tensors.
std::string_view local_name(std::string_view name) {
  for (std::string_view block : {"layers.", "mtp."}) {
    if (!name.starts_with(block)) continue;
    const size_t dot = name.find('.', block.size());
    if (dot != std::string_view::npos) return name.substr(dot + 1);
  }
  return name;
}

// How a tensor is split (see shard_load.h and model_parallel.h): TP-split tensors are the head-indexed
// (wq_b rows, attn_sink), group-indexed (wo_a rows, wo_b columns) and shared-expert (w1/w3 rows, w2 columns)
// ones, with their FP8 scale grids split the same way in 128-blocks; embed and head are vocabulary-split;
// routed experts belong to one ep rank; everything else is replicated.
SplitKind split_of(const ExpectedTensor& t) {
  if (t.expert >= 0) return SplitKind::kExpert;
  if (t.layer < 0) {
    return (t.name == "embed.weight" || t.name == "head.weight") ? SplitKind::kVocabSplit : SplitKind::kReplicated;
  }
  const std::string_view n = local_name(t.name);
  for (std::string_view rows : {"attn.wq_b.", "attn.wo_a.", "ffn.shared_experts.w1.", "ffn.shared_experts.w3."}) {
    if (n.starts_with(rows)) return SplitKind::kRowSplit;
  }
  if (n == "attn.attn_sink") return SplitKind::kRowSplit;
  for (std::string_view cols : {"attn.wo_b.", "ffn.shared_experts.w2."}) {
    if (n.starts_with(cols)) return SplitKind::kColumnSplit;
  }
  return SplitKind::kReplicated;
}

// A rank holding no vocabulary row would have an empty embedding / head shard, which neither the sharded
// embedding nor the candidate merge of sampling expects: refuse the layout.
void check_vocab_split(const ModelConfig& config, int tp) {
  const int64_t V = config.vocab_size;
  const int64_t per = (V + tp - 1) / tp;
  DSV4_CHECK_ARG(per * (tp - 1) < V) << "invalid parallel layout: tp=" << tp << " splits the vocabulary of " << V
                                     << " into ceil(" << V << "/" << tp << ") = " << per
                                     << "-row shards, which leaves the last tp rank without rows";
}

void check_dims(const ModelConfig& config, const parallel::Mesh& mesh) {
  const parallel::MeshModelDims want = mesh_dims(config), have = mesh.dims();
  DSV4_CHECK_ARG(want.num_heads == have.num_heads && want.o_groups == have.o_groups &&
                 want.num_experts == have.num_experts && want.dense_ffn_width == have.dense_ffn_width &&
                 want.fp8_block == have.fp8_block)
      << "the mesh " << mesh.str() << " was made for other model dims (heads " << have.num_heads << ", groups "
      << have.o_groups << ", experts " << have.num_experts << ", ffn " << have.dense_ffn_width
      << ") than the config's (heads " << want.num_heads << ", groups " << want.o_groups << ", experts "
      << want.num_experts << ", ffn " << want.dense_ffn_width << "): create it with mesh_dims(config)";
  check_vocab_split(config, mesh.config().tp);
}

// The model's specs; `dtype_of(t)` chooses the dtype (the config's, or what a checkpoint stores).
template <typename DtypeOf>
parallel::ShardPlan plan_tensors(const ModelConfig& config, const parallel::Mesh& mesh, DtypeOf dtype_of) {
  check_dims(config, mesh);
  parallel::ShardPlan plan(mesh);
  for (const ExpectedTensor& t : expected_tensors(config)) {
    TensorSpec spec;
    spec.name = t.name;
    spec.shape.assign(t.shape.begin(), t.shape.end());
    spec.dtype = dtype_of(t);
    spec.split = split_of(t);
    spec.expert = spec.split == SplitKind::kExpert ? static_cast<int>(t.expert) : -1;
    // An FP8 weight's shard must cover whole 128-blocks so that its scale grid splits with it (the scale
    // tensor itself then splits evenly, one scale row / column per block).
    const bool split = spec.split == SplitKind::kRowSplit || spec.split == SplitKind::kColumnSplit ||
                       spec.split == SplitKind::kVocabSplit;
    spec.align = (split && t.role == TensorRole::kFp8Weight) ? config.fp8_block : 1;
    plan.add(std::move(spec));
  }
  return plan;
}

bool same_shard(const ModelShard& a, const ModelShard& b) {
  return a.tp_rank == b.tp_rank && a.tp_size == b.tp_size && a.ep_rank == b.ep_rank && a.ep_size == b.ep_size &&
         a.vocab_begin == b.vocab_begin && a.vocab_end == b.vocab_end && a.head_begin == b.head_begin &&
         a.num_heads == b.num_heads && a.group_begin == b.group_begin && a.num_groups == b.num_groups &&
         a.shared_begin == b.shared_begin && a.shared_width == b.shared_width && a.first_expert == b.first_expert &&
         a.num_experts == b.num_experts;
}

// A mesh in which some rank holds exactly `shard`: tp consecutive ranks, ep-blocks over lcm(tp, ep) ranks
// (dp = lcm / tp). Rank r has tp_rank r % tp and ep_rank r % ep, so the rank exists iff the two coordinates
// agree modulo gcd(tp, ep), which every real layout satisfies (both are residues of one world rank).
std::pair<parallel::Mesh, int> mesh_for_shard(const ModelConfig& config, const ModelShard& shard) {
  DSV4_CHECK_ARG(shard.tp_size >= 1 && shard.ep_size >= 1 && shard.tp_rank >= 0 && shard.tp_rank < shard.tp_size &&
                 shard.ep_rank >= 0 && shard.ep_rank < shard.ep_size)
      << "model shard: tp rank " << shard.tp_rank << " of " << shard.tp_size << ", ep rank " << shard.ep_rank << " of "
      << shard.ep_size;
  parallel::MeshConfig mc;
  mc.tp = shard.tp_size;
  mc.ep = shard.ep_size;
  mc.world_size = std::lcm(mc.tp, mc.ep);
  mc.dp = mc.world_size / mc.tp;
  parallel::Mesh mesh = parallel::Mesh::create(mc, mesh_dims(config));
  for (int r = 0; r < mc.world_size; ++r) {
    if (r % mc.tp != shard.tp_rank || r % mc.ep != shard.ep_rank) continue;
    const ModelShard expect = model_shard_for_rank(config, mesh, r);
    DSV4_CHECK_ARG(same_shard(expect, shard))
        << "model shard (tp rank " << shard.tp_rank << "/" << shard.tp_size << ", ep rank " << shard.ep_rank << "/"
        << shard.ep_size << ") does not match the slices the mesh gives that position: make it with "
           "model_shard_for_rank";
    return {mesh, r};
  }
  DSV4_THROW(kInvalidArgument) << "model shard: tp rank " << shard.tp_rank << " of " << shard.tp_size
                               << " and ep rank " << shard.ep_rank << " of " << shard.ep_size
                               << " are not the coordinates of any one rank";
}

void check_tensor_set(const Checkpoint& checkpoint) {
  ValidateOptions vopt;
  vopt.scan_scales = false;  // the loader reads only its shard; scanning every scale would read them all
  const ValidationReport report = validate_checkpoint(checkpoint, vopt);
  if (report.ok()) return;
  std::string first;
  for (size_t i = 0; i < report.issues.size() && i < 3; ++i) {
    const CheckpointIssue& is = report.issues[i];
    first += std::string(i ? "; " : "") + std::string(issue_kind_name(is.kind)) + " " + is.tensor +
             (is.detail.empty() ? "" : " (" + is.detail + ")");
  }
  DSV4_THROW(kInvalidCheckpoint) << "checkpoint " << checkpoint.dir().string() << " does not match its config.json: "
                                 << report.issues.size() << " issue(s): " << first;
}

constexpr uint64_t kTensorAlign = 64;  // every shard tensor starts on a cache line (F32 / vector loads)

// Storage reads follow ownership: before copying, every owned run is requested with MADV_WILLNEED, which
// allocates its page-cache pages and starts reading exactly those; the copy's page faults then find them in
// the cache and trigger no read-around of their own (a fault on an uncached page reads up to the device's
// read-ahead window around it, 8 MiB here, i.e. neighbouring tensors that belong to other ranks). Measured
// with bench/shard_load_bench --cold (docs/PERFORMANCE.md): the storage bytes read during load_shard never
// exceeded the owned bytes (with Checkpoint::open's header reads added: within 0.5% on small-1b), against
// 1.14-1.31x without the advice on small-1b at ep = 2 and 4. Advice is best effort: a failing madvise
// changes what is read from storage, never what is copied.
uint64_t page_size() {
  static const uint64_t size = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

// The kernel caps one WILLNEED request at the device's read-ahead size (read_ahead_kb, e.g. 8 MiB) and drops
// the rest, so long runs are requested in chunks below any usual cap.
constexpr uint64_t kAdviceChunk = uint64_t{1} << 20;

void will_need(const void* data, uint64_t bytes) {
  auto begin = reinterpret_cast<uintptr_t>(data) / page_size() * page_size();
  const auto end = reinterpret_cast<uintptr_t>(data) + bytes;
  while (begin < end) {
    const uintptr_t stop = std::min<uintptr_t>(end, begin + kAdviceChunk);
    ::madvise(reinterpret_cast<void*>(begin), static_cast<size_t>(stop - begin), MADV_WILLNEED);
    begin = stop;
  }
}

void will_need(const uint8_t* tensor, const parallel::StridedRange& r) {
  if (r.count == 0) return;
  // Runs shorter than a few pages share pages with their neighbours: request the span once.
  if (r.count == 1 || r.length < 16 * page_size()) {
    will_need(tensor + r.offset, (r.count - 1) * r.stride + r.length);
    return;
  }
  for (uint64_t i = 0; i < r.count; ++i) will_need(tensor + r.offset + i * r.stride, r.length);
}

}  // namespace

ModelShard model_shard_for_rank(const ModelConfig& config, const parallel::Mesh& mesh, int rank) {
  check_dims(config, mesh);
  const parallel::MeshCoord c = mesh.coord(rank);
  const int tp = mesh.config().tp;
  ModelShard s;
  s.tp_rank = c.tp_rank;
  s.tp_size = tp;
  s.ep_rank = c.ep_rank;
  s.ep_size = mesh.config().ep;
  s.num_heads = mesh.heads_per_tp_rank();
  s.head_begin = s.num_heads * c.tp_rank;
  s.num_groups = mesh.o_groups_per_tp_rank();
  s.group_begin = s.num_groups * c.tp_rank;
  s.shared_width = mesh.ffn_width_per_tp_rank();
  s.shared_begin = s.shared_width * c.tp_rank;
  const int64_t V = config.vocab_size, per = (V + tp - 1) / tp;
  s.vocab_begin = std::min(V, per * c.tp_rank);
  s.vocab_end = std::min(V, s.vocab_begin + per);
  s.num_experts = mesh.experts_per_ep_rank();
  s.first_expert = mesh.first_expert(c.ep_rank);
  return s;
}

parallel::ShardPlan model_shard_plan(const ModelConfig& config, const parallel::Mesh& mesh) {
  return plan_tensors(config, mesh, [](const ExpectedTensor& t) { return t.dtype; });
}

double even_share_bytes(const parallel::ShardPlan& plan) {
  const int tp = plan.mesh().config().tp, ep = plan.mesh().config().ep;
  double share = 0.0;
  for (const TensorSpec& spec : plan.tensors()) {
    int64_t elements = 1;
    for (int64_t d : spec.shape) elements *= d;
    int k = 1;
    if (spec.split == SplitKind::kExpert) k = ep;
    if (spec.split == SplitKind::kRowSplit || spec.split == SplitKind::kColumnSplit ||
        spec.split == SplitKind::kVocabSplit) {
      k = tp;
    }
    share += static_cast<double>(dtype_bytes(spec.dtype, elements)) / k;
  }
  return share;
}

ModelWeights load_shard(const Checkpoint& checkpoint, const ModelShard& shard, ShardLoadReport* report) {
  const auto start = std::chrono::steady_clock::now();
  const ModelConfig& config = checkpoint.config();
  check_tensor_set(checkpoint);
  const auto [mesh, rank] = mesh_for_shard(config, shard);
  // After validation every expected tensor exists with its expected shape; only the flexible float dtypes
  // may differ from the config's, and the plan must count the bytes as stored.
  const parallel::ShardPlan plan =
      plan_tensors(config, mesh, [&](const ExpectedTensor& t) { return checkpoint.tensor(t.name).dtype; });

  struct Slot {
    const TensorSpec* spec;
    parallel::TensorShard shard;
    uint64_t offset;  // in the storage buffer
  };
  std::vector<Slot> slots;
  slots.reserve(plan.tensors().size());
  uint64_t total = 0;
  for (const TensorSpec& spec : plan.tensors()) {
    parallel::TensorShard ts = plan.shard(spec, rank);
    if (!ts.owned) continue;
    slots.push_back(Slot{&spec, std::move(ts), total});
    total += (slots.back().shard.range.bytes() + kTensorAlign - 1) / kTensorAlign * kTensorAlign;
  }
  auto buffer = std::make_shared<Buffer>(std::max<uint64_t>(total, kTensorAlign));
  auto* base = static_cast<uint8_t*>(buffer->data());

  ShardLoadReport r;
  std::unordered_map<std::string, TensorView> views;
  views.reserve(slots.size());
  for (const Slot& slot : slots) {
    will_need(static_cast<const uint8_t*>(checkpoint.tensor(slot.spec->name).data), slot.shard.range);
  }
  for (const Slot& slot : slots) {
    const TensorView src = checkpoint.tensor(slot.spec->name);
    const parallel::StridedRange& range = slot.shard.range;
    DSV4_CHECK_CODE(src.nbytes() >= range.offset + (range.count ? (range.count - 1) * range.stride + range.length : 0),
                    ErrorCode::kInvalidCheckpoint)
        << "tensor " << slot.spec->name << ": its " << src.nbytes() << " bytes do not hold the planned range";
    const auto* from = static_cast<const uint8_t*>(src.data) + range.offset;
    uint8_t* to = base + slot.offset;
    for (uint64_t i = 0; i < range.count; ++i) std::memcpy(to + i * range.length, from + i * range.stride, range.length);
    r.bytes_read += range.bytes();
    ++r.tensors_read;
    views.emplace(slot.spec->name, TensorView{to, src.dtype, Shape(slot.shard.shape.begin(), slot.shard.shape.end())});
  }
  r.bytes_planned = plan.bytes_for_rank(rank);
  DSV4_CHECK(r.bytes_read == r.bytes_planned)
      << "shard load read " << r.bytes_read << " bytes but the plan gives this rank " << r.bytes_planned;

  const TensorLookup lookup = [&views](const std::string& name) -> std::optional<TensorView> {
    auto it = views.find(name);
    if (it == views.end()) return std::nullopt;
    return it->second;
  };
  ModelWeights w = bind_weights(config, lookup, shard);
  w.storage = std::shared_ptr<const void>(buffer, buffer->data());
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (report) *report = r;
  return w;
}

}  // namespace dsv4
