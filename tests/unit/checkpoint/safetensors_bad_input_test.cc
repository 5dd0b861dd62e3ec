// Malformed safetensors files and indexes: each must be rejected with an Error naming the file and the
// tensor, never a crash. Files are written byte by byte so every field can be broken on its own.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/index.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/core/error.h"
#include "tests/support/test_paths.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// 8-byte little-endian length, the header text, then `data_size` bytes of data.
std::string image(const std::string& header, size_t data_size, uint64_t declared_length = UINT64_MAX) {
  const uint64_t n = declared_length == UINT64_MAX ? header.size() : declared_length;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  out += header;
  for (size_t i = 0; i < data_size; ++i) out += static_cast<char>(i & 0x7F);
  return out;
}

class SafetensorsBadInput : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::scratch_dir("safetensors_bad_input"); }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes `bytes` to a file and expects open() to throw `code` with every piece of `needles` in the message.
  void expect_open_error(const std::string& bytes, ErrorCode code, std::vector<std::string> needles) {
    const fs::path path = dir_ / "bad.safetensors";
    write_bytes(path, bytes);
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << "no error for " << needles.front();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_NE(e.message().find(path.string()), std::string::npos) << "file not named: " << e.message();
      for (const auto& n : needles) EXPECT_NE(e.message().find(n), std::string::npos) << "'" << n << "' not in: " << e.message();
    }
  }

  fs::path dir_;
};

TEST_F(SafetensorsBadInput, GoodFileGivesZeroCopyViews) {
  const std::string h =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[16,24]},)"
      R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"e":{"dtype":"F8_E8M0","shape":[0],"data_offsets":[24,24]}})";
  const fs::path path = dir_ / "good.safetensors";
  write_bytes(path, image(h, 24));
  SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.entries().size(), 3u);
  EXPECT_EQ(f.entries()[0].name, "a");  // sorted by name
  ASSERT_EQ(f.header().metadata().size(), 1u);
  EXPECT_EQ(f.header().metadata()[0].second, "pt");
  TensorView b = f.tensor("b");
  EXPECT_EQ(b.dtype, DType::kBF16);
  EXPECT_EQ(b.shape, Shape({2, 2}));
  EXPECT_EQ(static_cast<const uint8_t*>(b.data), f.bytes(*f.find("a")).data() + 16);  // a pointer into the mapping
  EXPECT_EQ(static_cast<const uint8_t*>(b.data)[0], 16);
  try {
    f.tensor("zz");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(e.message().find("'zz'"), std::string::npos);
  }
}

TEST_F(SafetensorsBadInput, TruncatedFile) {
  expect_open_error("\x10\x00\x00", ErrorCode::kInvalidCheckpoint, {"truncated"});
  // A valid header whose data area was cut short: the offsets now run past it.
  const std::string h = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  expect_open_error(image(h, 10), ErrorCode::kInvalidCheckpoint, {"'w'", "run past the data area of 10 bytes"});
}

TEST_F(SafetensorsBadInput, HeaderLengthBeyondFile) {
  expect_open_error(image("{}", 0, 1000), ErrorCode::kInvalidCheckpoint, {"header length 1000", "past the end"});
  expect_open_error(image("{}", 0, 1ull << 40), ErrorCode::kInvalidCheckpoint, {"exceeds the limit"});
}

TEST_F(SafetensorsBadInput, OffsetsOutOfRangeOrReversed) {
  expect_open_error(image(R"({"x":{"dtype":"I8","shape":[4],"data_offsets":[8,12]}})", 10),
                    ErrorCode::kInvalidCheckpoint, {"tensor 'x'", "run past"});
  expect_open_error(image(R"({"x":{"dtype":"I8","shape":[0],"data_offsets":[6,4]}})", 10),
                    ErrorCode::kInvalidCheckpoint, {"tensor 'x'", "end before they begin"});
  expect_open_error(image(R"({"x":{"dtype":"I8","shape":[2],"data_offsets":[0,2,4]}})", 10),
                    ErrorCode::kInvalidCheckpoint, {"tensor 'x'", "more than 2"});
  expect_open_error(image(R"({"x":{"dtype":"I8","shape":[2],"data_offsets":[-1,1]}})", 10),
                    ErrorCode::kInvalidCheckpoint, {"tensor 'x'", "negative"});
}

TEST_F(SafetensorsBadInput, Overlapping) {
  const std::string h = R"({"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("second":{"dtype":"I8","shape":[4],"data_offsets":[6,10]}})";
  expect_open_error(image(h, 16), ErrorCode::kInvalidCheckpoint, {"tensor 'second'", "overlaps tensor 'first'"});
}

TEST_F(SafetensorsBadInput, UnknownDtype) {
  expect_open_error(image(R"({"q":{"dtype":"F8_E5M3","shape":[2],"data_offsets":[0,2]}})", 2),
                    ErrorCode::kInvalidCheckpoint, {"tensor 'q'", "unknown dtype 'F8_E5M3'"});
}

TEST_F(SafetensorsBadInput, SizeDoesNotMatchDtypeTimesShape) {
  expect_open_error(image(R"({"w":{"dtype":"BF16","shape":[3,2],"data_offsets":[0,10]}})", 16),
                    ErrorCode::kInvalidCheckpoint, {"tensor 'w'", "holds 10 bytes", "needs 12"});
  // A shape whose byte count overflows 64 bits.
  expect_open_error(image(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
                    ErrorCode::kInvalidCheckpoint, {"tensor 'w'", "overflows"});
}

TEST_F(SafetensorsBadInput, DuplicateTensor) {
  const std::string h = R"({"w":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},)"
                        R"("w":{"dtype":"I8","shape":[2],"data_offsets":[2,4]}})";
  expect_open_error(image(h, 4), ErrorCode::kInvalidCheckpoint, {"tensor 'w'", "listed twice"});
}

TEST_F(SafetensorsBadInput, MalformedJson) {
  expect_open_error(image(R"({"w":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},})", 2),
                    ErrorCode::kInvalidCheckpoint, {"malformed JSON", "tensor 'w'"});
  expect_open_error(image(R"({"w":{"dtype":"I8","sha)", 2), ErrorCode::kInvalidCheckpoint, {"malformed JSON"});
  expect_open_error(image("[1,2]", 0), ErrorCode::kInvalidCheckpoint, {"not a JSON object"});
  expect_open_error(image(R"({"w":5})", 0), ErrorCode::kInvalidCheckpoint, {"tensor 'w'", "not an object"});
  expect_open_error(image(R"({"w":{"dtype":"I8","shape":[2]}})", 2), ErrorCode::kInvalidCheckpoint,
                    {"tensor 'w'", "missing 'data_offsets'"});
  expect_open_error(image(R"({"w":{"dtype":"I8","shape":[2],"data_offsets":[0,2],"extra":1}})", 2),
                    ErrorCode::kInvalidCheckpoint, {"tensor 'w'", "unknown field 'extra'"});
  expect_open_error(image(R"({"w":{"dtype":"I8","shape":[2.5],"data_offsets":[0,2]}})", 2),
                    ErrorCode::kInvalidCheckpoint, {"tensor 'w'", "non-integer"});
  expect_open_error(image(R"({"__metadata__":{"k":3}})", 0), ErrorCode::kInvalidCheckpoint, {"__metadata__", "'k'"});
}

// ---- index resolution ----------------------------------------------------------------------------------

class CheckpointIndexBadInput : public SafetensorsBadInput {
 protected:
  // A directory with config.json (configs/models/tiny.json) and the given index and shards.
  void make_dir(const std::string& index, const std::vector<std::pair<std::string, std::string>>& shards) {
    fs::copy_file(testing::source_dir() / "configs/models/tiny.json", dir_ / "config.json",
                  fs::copy_options::overwrite_existing);
    if (!index.empty()) write_bytes(dir_ / "model.safetensors.index.json", index);
    for (const auto& [name, bytes] : shards) write_bytes(dir_ / name, bytes);
  }
  void expect_checkpoint_error(ErrorCode code, std::vector<std::string> needles) {
    try {
      Checkpoint::open(dir_);
      ADD_FAILURE() << "no error for " << needles.front();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      for (const auto& n : needles) EXPECT_NE(e.message().find(n), std::string::npos) << "'" << n << "' not in: " << e.message();
    }
  }
  static std::string shard(const std::vector<std::string>& names) {
    std::string h = "{";
    for (size_t i = 0; i < names.size(); ++i) {
      h += (i ? "," : "") + ("\"" + names[i] + "\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[" +
                             std::to_string(i) + "," + std::to_string(i + 1) + "]}");
    }
    return image(h + "}", names.size());
  }
};

TEST_F(CheckpointIndexBadInput, ResolvesTensorsThroughTheIndex) {
  make_dir(R"({"metadata":{"total_size":3,"other":[1,{"x":2}]},"weight_map":{"a":"s1","b":"s1","c":"s2"},"extra":{}})",
           {{"s1", shard({"a", "b"})}, {"s2", shard({"c"})}});
  Checkpoint ckpt = Checkpoint::open(dir_);
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ckpt.total_bytes(), 3u);
  EXPECT_EQ(ckpt.tensor("c").as<uint8_t>()[0], 0);
  EXPECT_EQ(ckpt.tensor("b").as<uint8_t>()[0], 1);
  EXPECT_EQ(ckpt.config().hidden_size, 256);
}

TEST_F(CheckpointIndexBadInput, ShardInIndexButAbsent) {
  make_dir(R"({"weight_map":{"a":"s1","c":"gone.safetensors"}})", {{"s1", shard({"a"})}});
  expect_checkpoint_error(ErrorCode::kNotFound, {"gone.safetensors", "'c'", "absent"});
}

TEST_F(CheckpointIndexBadInput, MissingTensorInItsShard) {
  make_dir(R"({"weight_map":{"a":"s1","b":"s1"}})", {{"s1", shard({"a"})}});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {"tensor 'b'", "s1", "does not contain it"});
}

TEST_F(CheckpointIndexBadInput, TensorNotInIndex) {
  make_dir(R"({"weight_map":{"a":"s1"}})", {{"s1", shard({"a", "stray"})}});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {"tensor 'stray'", "not listed"});
}

TEST_F(CheckpointIndexBadInput, TensorInTwoShards) {
  make_dir(R"({"weight_map":{"a":"s1","b":"s2"}})", {{"s1", shard({"a", "b"})}, {"s2", shard({"b"})}});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {"tensor 'b'", "s1", "s2", "in both"});
}

TEST_F(CheckpointIndexBadInput, DuplicateTensorInIndex) {
  make_dir(R"({"weight_map":{"a":"s1","a":"s2"}})", {{"s1", shard({"a"})}, {"s2", shard({"a"})}});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {"tensor 'a'", "listed twice"});
}

TEST_F(CheckpointIndexBadInput, MalformedIndex) {
  make_dir(R"({"weight_map":{"a":"s1",}})", {{"s1", shard({"a"})}});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {"model.safetensors.index.json", "malformed JSON", "'a'"});
  make_dir(R"({"weight_map":["a"]})", {});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {"weight_map is an array"});
  make_dir(R"({"weight_map":{"a":"../s1"}})", {});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {"tensor 'a'", "not a plain file name"});
  make_dir(R"({"weight_map":{"a":3}})", {});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {"tensor 'a'", "not a shard file name"});
  make_dir(R"({"metadata":{"total_size":-4},"weight_map":{}})", {});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {"total_size"});
  make_dir(R"({"metadata":{}})", {});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {"no weight_map"});
}

TEST_F(CheckpointIndexBadInput, BadShardIsNamed) {
  make_dir(R"({"weight_map":{"a":"s1","b":"s2"}})", {{"s1", shard({"a"})}, {"s2", "\x01\x02"}});
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {(dir_ / "s2").string(), "truncated"});
}

TEST_F(CheckpointIndexBadInput, StrayFileIsIgnoredButNamedShardErrorsCount) {
  // Files ending in .safetensors are opened while the index parses; one the index does not name is dropped.
  make_dir(R"({"weight_map":{"a":"model-1.safetensors"}})",
           {{"model-1.safetensors", shard({"a"})}, {"stray.safetensors", "garbage"}});
  EXPECT_EQ(Checkpoint::open(dir_).names(), (std::vector<std::string>{"a"}));
  write_bytes(dir_ / "model-1.safetensors", image("{", 0));
  expect_checkpoint_error(ErrorCode::kInvalidCheckpoint, {(dir_ / "model-1.safetensors").string(), "malformed JSON"});
}

TEST_F(CheckpointIndexBadInput, SingleFileWithoutIndexAndNeither) {
  make_dir("", {{"model.safetensors", shard({"x", "y"})}});
  EXPECT_EQ(Checkpoint::open(dir_).names(), (std::vector<std::string>{"x", "y"}));
  fs::remove(dir_ / "model.safetensors");
  expect_checkpoint_error(ErrorCode::kNotFound, {"neither"});
}

}  // namespace
}  // namespace dsv4
