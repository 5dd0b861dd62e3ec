#include "runtime/core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace dsv4 {

Shape::Shape(std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) push_back(d);
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

void Shape::push_back(int64_t dim) {
  DSV4_CHECK_ARG(rank_ < kMaxDims) << "tensor rank above " << kMaxDims;
  DSV4_CHECK_ARG(dim >= 0) << "negative dimension " << dim;
  dims_[rank_++] = dim;
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i) {
    if (dims_[i] != other.dims_[i]) return false;
  }
  return true;
}

std::string Shape::str() const {
  std::ostringstream out;
  out << '[';
  for (int i = 0; i < rank_; ++i) out << (i ? ", " : "") << dims_[i];
  out << ']';
  return out.str();
}

TensorView TensorView::rows(int64_t first, int64_t count) const {
  DSV4_CHECK(shape.rank() >= 1 && first >= 0 && count >= 0 && first + count <= shape[0])
      << "rows(" << first << ", " << count << ") of " << shape.str();
  int64_t row_elems = shape[0] == 0 ? 0 : numel() / shape[0];
  DSV4_CHECK(dtype_bits(dtype) >= 8 || row_elems % 2 == 0) << "packed 4-bit rows of odd width";
  TensorView out = *this;
  out.shape[0] = count;
  out.data = static_cast<char*>(data) + dtype_bytes(dtype, first * row_elems);
  return out;
}

void Buffer::Free::operator()(void* p) const { std::free(p); }

Buffer::Buffer(size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  DSV4_CHECK_CODE(p != nullptr, ErrorCode::kResourceExhausted) << "cannot allocate " << bytes << " bytes of host memory";
  data_.reset(p);
}

void Buffer::fill_zero() {
  if (size_ != 0) std::memset(data_.get(), 0, size_);
}

Tensor::Tensor(DType dtype, Shape shape) : buffer_(dtype_bytes(dtype, shape.numel())) {
  view_.data = buffer_.data();
  view_.dtype = dtype;
  view_.shape = shape;
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t(dtype, shape);
  t.buffer_.fill_zero();
  return t;
}

}  // namespace dsv4
