// Tensors: a non-owning view (pointer + dtype + shape, contiguous row-major) and an owning host buffer.
//
// Views are what kernels and the model pass around; they never own memory. Owners are Buffer (aligned host
// memory), a mapped checkpoint file, or a device pool. A view into an mmap'ed checkpoint is zero-copy.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "runtime/core/dtype.h"
#include "runtime/core/error.h"

namespace dsv4 {

/// Up to kMaxDims dimensions, stored inline (no allocation).
class Shape {
 public:
  static constexpr int kMaxDims = 6;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  template <typename It>
  Shape(It first, It last) {
    for (; first != last; ++first) push_back(static_cast<int64_t>(*first));
  }

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t& operator[](int i) { return dims_[i]; }
  int64_t numel() const;
  void push_back(int64_t dim);
  const int64_t* begin() const { return dims_.data(); }
  const int64_t* end() const { return dims_.data() + rank_; }
  bool operator==(const Shape& other) const;
  std::string str() const;  // "[129280, 4096]"

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

/// A non-owning view of contiguous row-major memory (host or device).
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;

  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return dtype_bytes(dtype, numel()); }
  int64_t dim(int i) const { return shape[i < 0 ? shape.rank() + i : i]; }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }

  /// Rows [first, first + count) along dimension 0, as a view (no copy). Not valid for packed 4-bit rows
  /// of odd width.
  TensorView rows(int64_t first, int64_t count) const;
};

/// Owning, 64-byte aligned host memory. Move-only. Never initialised unless asked: callers that need zeros
/// call fill_zero().
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t bytes);
  Buffer(Buffer&&) noexcept = default;
  Buffer& operator=(Buffer&&) noexcept = default;

  void* data() const { return data_.get(); }
  size_t size() const { return size_; }
  void fill_zero();

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> data_;
  size_t size_ = 0;
};

/// A host tensor that owns its memory.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Shape shape);  // uninitialised
  static Tensor zeros(DType dtype, Shape shape);

  const TensorView& view() const { return view_; }
  TensorView& view() { return view_; }
  void* data() const { return view_.data; }
  template <typename T>
  T* as() const {
    return view_.as<T>();
  }
  DType dtype() const { return view_.dtype; }
  const Shape& shape() const { return view_.shape; }
  int64_t numel() const { return view_.numel(); }
  size_t nbytes() const { return view_.nbytes(); }

 private:
  Buffer buffer_;
  TensorView view_;
};

}  // namespace dsv4
