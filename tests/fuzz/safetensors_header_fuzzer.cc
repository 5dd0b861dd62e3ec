// libFuzzer target for the checkpoint header parsers: each input is tried as a whole safetensors image
// (length prefix + header + data), as a bare JSON header, and as a model.safetensors.index.json. Any
// outcome other than success or a dsv4::Error (a crash, a sanitizer report, another exception type, a
// broken invariant of an accepted header) is a finding.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "runtime/checkpoint/index.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/core/error.h"

namespace {

// What an accepted header promises its users.
void check_header(const dsv4::SafetensorsHeader& h, uint64_t data_size) {
  uint64_t covered = 0;
  for (size_t i = 0; i < h.entries().size(); ++i) {
    const dsv4::SafetensorsEntry& e = h.entries()[i];
    if (e.begin > e.end || e.end > data_size) std::abort();
    if (e.nbytes() != dsv4::dtype_bytes(e.dtype, e.shape.numel())) std::abort();
    if (i > 0 && !(h.entries()[i - 1].name < e.name)) std::abort();
    if (h.find(e.name) != &e) std::abort();
    covered += e.nbytes();
  }
  if (covered > data_size) std::abort();  // no overlaps means the sizes fit in the data area
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    uint64_t data_offset = 0;
    const dsv4::SafetensorsHeader h =
        dsv4::parse_safetensors_image(std::span<const uint8_t>(data, size), "fuzz.safetensors", &data_offset);
    if (data_offset > size) std::abort();
    check_header(h, size - data_offset);
  } catch (const dsv4::Error&) {
  }
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    check_header(dsv4::parse_safetensors_header(text, 4096, "fuzz.json"), 4096);
  } catch (const dsv4::Error&) {
  }
  try {
    const dsv4::CheckpointIndex index = dsv4::CheckpointIndex::parse(text, "fuzz.index.json");
    for (const auto& e : index.entries()) {
      if (e.shard >= index.shards().size() || index.find(e.name) != &e) std::abort();
    }
  } catch (const dsv4::Error&) {
  }
  return 0;
}
