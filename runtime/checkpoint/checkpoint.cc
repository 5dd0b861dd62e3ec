// Checkpoint::open: config.json, the index (or one model.safetensors), every shard mapped and its header
// validated (in parallel: a Pro checkpoint has 64 shards of ~2,300 header entries each), then the index and
// the shards cross-checked so that every tensor lives in exactly the shard the index names.
#include "runtime/checkpoint/checkpoint.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <functional>
#include <optional>
#include <thread>

#include "runtime/checkpoint/index.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"

namespace dsv4 {

struct Checkpoint::Impl {
  struct Slot {
    std::string_view name;  // into a shard's header
    const SafetensorsFile* file;
    const SafetensorsEntry* entry;
  };

  std::filesystem::path dir;
  ModelConfig config;
  std::vector<SafetensorsFile> shards;
  std::vector<Slot> slots;  // sorted by name
  uint64_t total_bytes = 0;

  const Slot* find(std::string_view name) const {
    auto it = std::lower_bound(slots.begin(), slots.end(), name,
                               [](const Slot& s, std::string_view n) { return s.name < n; });
    return (it != slots.end() && it->name == name) ? &*it : nullptr;
  }
};

namespace {

// Runs task(0..n-1) on up to 16 threads; returns each task's exception (null when it succeeded).
std::vector<std::exception_ptr> run_parallel(size_t n, const std::function<void(size_t)>& task) {
  std::vector<std::exception_ptr> errors(n);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) {
      try {
        task(i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const size_t hw = std::max(1u, std::thread::hardware_concurrency());
  const size_t num_threads = std::min<size_t>({hw, n, 16});
  std::vector<std::thread> threads;
  for (size_t t = 1; t < num_threads; ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  return errors;
}

// Explains why the shards and the index disagree (called only when they do, so it may be slow).
[[noreturn]] void report_mismatch(const CheckpointIndex& index, const std::vector<SafetensorsFile>& shards,
                                  const std::filesystem::path& index_path) {
  for (size_t s = 0; s < shards.size(); ++s) {
    for (const SafetensorsEntry& e : shards[s].entries()) {
      const CheckpointIndex::Entry* ie = index.find(e.name);
      DSV4_CHECK_CODE(ie != nullptr, ErrorCode::kInvalidCheckpoint)
          << shards[s].path().string() << ": tensor '" << e.name << "' is not listed in " << index_path.string();
      DSV4_CHECK_CODE(ie->shard == s, ErrorCode::kInvalidCheckpoint)
          << "tensor '" << e.name << "' is in " << shards[s].path().string() << " but " << index_path.string()
          << " maps it to " << index.shards()[ie->shard] << (shards[ie->shard].has(e.name) ? " (it is in both)" : "");
    }
  }
  DSV4_THROW(kInternal) << "index and shards disagree in a way not found";
}

}  // namespace

Checkpoint Checkpoint::open(const std::filesystem::path& dir) {
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  std::error_code ec;
  DSV4_CHECK_CODE(std::filesystem::is_directory(dir, ec), ErrorCode::kNotFound)
      << dir.string() << ": not a checkpoint directory";
  impl->config = load_model_config(dir / "config.json");

  const auto index_path = dir / kIndexFileName;
  const auto single_path = dir / kSingleShardFileName;
  if (std::filesystem::exists(index_path, ec)) {
    // The index is ~40% of the JSON of a Pro checkpoint: parse it while the files it will almost surely
    // name (every *.safetensors here) are opened. A file the index does not name is dropped, errors and all.
    std::vector<std::filesystem::path> candidates;
    for (const auto& de : std::filesystem::directory_iterator(dir, ec)) {
      if (de.path().extension() == ".safetensors" && de.is_regular_file(ec)) candidates.push_back(dir / de.path().filename());
    }
    std::sort(candidates.begin(), candidates.end());
    std::optional<CheckpointIndex> parsed;
    std::vector<std::optional<SafetensorsFile>> opened(candidates.size());
    const auto errors = run_parallel(candidates.size() + 1, [&](size_t i) {
      if (i == 0) {
        parsed.emplace(CheckpointIndex::load(index_path));
      } else {
        opened[i - 1].emplace(SafetensorsFile::open(candidates[i - 1]));
      }
    });
    if (errors[0]) std::rethrow_exception(errors[0]);
    const CheckpointIndex& index = *parsed;
    impl->shards.reserve(index.shards().size());
    for (uint32_t s = 0; s < index.shards().size(); ++s) {
      const std::filesystem::path path = dir / index.shards()[s];
      const auto it = std::lower_bound(candidates.begin(), candidates.end(), path);
      if (it != candidates.end() && *it == path) {
        const size_t c = static_cast<size_t>(it - candidates.begin());
        if (errors[c + 1]) std::rethrow_exception(errors[c + 1]);
        impl->shards.push_back(std::move(*opened[c]));
        continue;
      }
      if (!std::filesystem::exists(path, ec)) {
        auto e = std::find_if(index.entries().begin(), index.entries().end(),
                              [&](const CheckpointIndex::Entry& en) { return en.shard == s; });
        DSV4_THROW(kNotFound) << index_path.string() << ": shard " << index.shards()[s] << " (holding tensor '"
                              << e->name << "' and others) is absent from " << dir.string();
      }
      impl->shards.push_back(SafetensorsFile::open(path));  // a shard not named *.safetensors
    }
    opened.clear();  // unmaps files the index does not name

    // Every index entry must be found in the shard it names; with equal totals that is a bijection, so no
    // shard holds a tensor the index does not list (or lists elsewhere).
    size_t shard_total = 0;
    for (const auto& f : impl->shards) shard_total += f.entries().size();
    impl->slots.reserve(index.entries().size());
    for (const CheckpointIndex::Entry& ie : index.entries()) {
      const SafetensorsFile& file = impl->shards[ie.shard];
      const SafetensorsEntry* e = file.find(ie.name);
      DSV4_CHECK_CODE(e != nullptr, ErrorCode::kInvalidCheckpoint)
          << index_path.string() << " maps tensor '" << ie.name << "' to " << file.path().filename().string()
          << ", which does not contain it";
      impl->slots.push_back({e->name, &file, e});
    }
    if (shard_total != index.entries().size()) report_mismatch(index, impl->shards, index_path);
    for (const auto& s : impl->slots) impl->total_bytes += s.entry->nbytes();
    if (index.total_size() && *index.total_size() != impl->total_bytes) {
      // The field is informational in the format (writers compute it differently); the shards are the truth.
      DSV4_LOG(WARN) << index_path.string() << ": metadata.total_size " << *index.total_size()
                     << " differs from the " << impl->total_bytes << " bytes of tensor data in the shards";
    }
  } else if (std::filesystem::exists(single_path, ec)) {
    impl->shards.push_back(SafetensorsFile::open(single_path));
    const SafetensorsFile& file = impl->shards.front();
    impl->slots.reserve(file.entries().size());
    for (const SafetensorsEntry& e : file.entries()) {
      impl->slots.push_back({e.name, &file, &e});
      impl->total_bytes += e.nbytes();
    }
  } else {
    DSV4_THROW(kNotFound) << dir.string() << ": neither " << kIndexFileName << " nor " << kSingleShardFileName
                          << " is present";
  }
  return Checkpoint(std::move(impl));
}

Checkpoint::Checkpoint(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;
Checkpoint::~Checkpoint() = default;

const std::filesystem::path& Checkpoint::dir() const { return impl_->dir; }
const ModelConfig& Checkpoint::config() const { return impl_->config; }
bool Checkpoint::has(std::string_view name) const { return impl_->find(name) != nullptr; }

std::optional<TensorView> Checkpoint::find(std::string_view name) const {
  const Impl::Slot* s = impl_->find(name);
  if (s == nullptr) return std::nullopt;
  return s->file->view(*s->entry);
}

TensorView Checkpoint::tensor(std::string_view name) const {
  const Impl::Slot* s = impl_->find(name);
  DSV4_CHECK_CODE(s != nullptr, ErrorCode::kNotFound) << impl_->dir.string() << ": no tensor '" << name << "'";
  return s->file->view(*s->entry);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(impl_->slots.size());
  for (const auto& s : impl_->slots) out.emplace_back(s.name);
  return out;
}

size_t Checkpoint::num_tensors() const { return impl_->slots.size(); }

uint64_t Checkpoint::total_bytes() const { return impl_->total_bytes; }

}  // namespace dsv4
