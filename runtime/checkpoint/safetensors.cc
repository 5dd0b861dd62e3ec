// Mapping a safetensors file: open, fstat, mmap read-only and private, then validate the header in place.
#include "runtime/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/core/error.h"

namespace dsv4 {

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile file;
  file.path_ = path;
  const std::string origin = path.string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    DSV4_CHECK_CODE(err != ENOENT, ErrorCode::kNotFound) << origin << ": no such file";
    DSV4_THROW(kIo) << origin << ": cannot open: " << std::strerror(err);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    DSV4_THROW(kIo) << origin << ": cannot stat: " << std::strerror(err);
  }
  file.size_ = static_cast<uint64_t>(st.st_size);
  if (file.size_ > 0) {
    // MAP_PRIVATE + PROT_READ: pages are shared with the page cache and never written back; nothing is read
    // until a view is touched, so opening costs only the header pages.
    void* p = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    ::close(fd);
    DSV4_CHECK_CODE(p != MAP_FAILED, ErrorCode::kIo) << origin << ": mmap failed: " << std::strerror(err);
    file.base_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  // On a throw below, `file`'s destructor unmaps.
  file.header_ = parse_safetensors_image(std::span<const uint8_t>(file.base_, file.size_), origin, &file.data_offset_);
  return file;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      header_(std::move(other.header_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      data_offset_(other.data_offset_) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    header_ = std::move(other.header_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    data_offset_ = other.data_offset_;
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() { unmap(); }

void SafetensorsFile::unmap() {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
  base_ = nullptr;
}

TensorView SafetensorsFile::view(const SafetensorsEntry& entry) const {
  TensorView v;
  // The mapping is read-only; TensorView carries a mutable pointer for uniformity with owned buffers.
  v.data = const_cast<uint8_t*>(base_ + data_offset_ + entry.begin);
  v.dtype = entry.dtype;
  v.shape = entry.shape;
  return v;
}

TensorView SafetensorsFile::tensor(std::string_view name) const {
  const SafetensorsEntry* e = find(name);
  DSV4_CHECK_CODE(e != nullptr, ErrorCode::kNotFound) << path_.string() << ": no tensor '" << name << "'";
  return view(*e);
}

std::span<const uint8_t> SafetensorsFile::bytes(const SafetensorsEntry& entry) const {
  return std::span<const uint8_t>(base_ + data_offset_ + entry.begin, entry.nbytes());
}

}  // namespace dsv4
