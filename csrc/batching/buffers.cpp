#include "batching/buffers.h"

#include <cstdlib>
#include <string>

#include "common/limits.h"

namespace mbexport::batching {

namespace {
constexpr size_t kAlignment = 64;  // a cache line; also what AVX-512 loads like
}

Status HostBuffer::Allocate(size_t bytes, const CudaRuntime* cuda, std::unique_ptr<HostBuffer>* out) {
  int64_t rounded = 0;
  if (bytes > static_cast<size_t>(INT64_MAX) ||
      !CheckedRoundUp(static_cast<int64_t>(bytes), static_cast<int64_t>(kAlignment), &rounded)) {
    return Status(StatusCode::kInvalidArgument, "host buffer: " + std::to_string(bytes) + " bytes is too large");
  }
  const size_t size = bytes == 0 ? kAlignment : static_cast<size_t>(rounded);
  Status checked = CheckAllocation(size, "host buffer");
  if (!checked.ok()) return checked;
  void* data = nullptr;
  if (cuda != nullptr) {
    Status status = cuda->StatusOf(cuda->MallocHost(&data, size), "cudaMallocHost");
    if (!status.ok()) return status;
  } else {
    data = std::aligned_alloc(kAlignment, size);
    if (data == nullptr) {
      return Status(StatusCode::kResourceExhausted, "host buffer: cannot allocate " + std::to_string(size) + " bytes");
    }
  }
  out->reset(new HostBuffer(data, bytes, cuda));
  return Status::Ok();
}

void HostBuffer::Release() {
  if (data_ == nullptr) return;
  if (cuda_ != nullptr) {
    cuda_->FreeHost(data_);
  } else {
    std::free(data_);
  }
  data_ = nullptr;
  size_ = 0;
}

HostBuffer::~HostBuffer() { Release(); }

Status DeviceBuffer::Allocate(size_t bytes, const CudaRuntime* cuda, std::unique_ptr<DeviceBuffer>* out) {
  if (cuda == nullptr) return Status(StatusCode::kCudaUnavailable, "device buffer: no CUDA runtime loaded");
  void* data = nullptr;
  Status status = cuda->StatusOf(cuda->Malloc(&data, bytes == 0 ? 1 : bytes), "cudaMalloc");
  if (!status.ok()) return status;
  out->reset(new DeviceBuffer(data, bytes, cuda));
  return Status::Ok();
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cuda_->Free(data_);
}

Status CudaStager::ValidateSizes(int64_t capacity_tokens, int slots) {
  if (capacity_tokens < 1 || capacity_tokens > kMaxOutputCells) {
    return Status(StatusCode::kInvalidArgument, "stager: capacity_tokens must be between 1 and 2**31, got " +
                                                    std::to_string(capacity_tokens));
  }
  if (slots < 1 || slots > kMaxStagerSlots) {
    return Status(StatusCode::kInvalidArgument, "stager: slots must be between 1 and " +
                                                    std::to_string(kMaxStagerSlots) + ", got " +
                                                    std::to_string(slots));
  }
  // Both bounded above: at most 16 x 3 x 8 x 2**31 bytes, no overflow.
  return CheckAllocation(static_cast<uint64_t>(slots) * 3 * sizeof(int64_t) * static_cast<uint64_t>(capacity_tokens),
                         "stager: " + std::to_string(slots) + " slots of " + std::to_string(capacity_tokens) +
                             " tokens of pinned memory");
}

Status CudaStager::Create(const CudaRuntime* cuda, int64_t capacity_tokens, int slots,
                          std::unique_ptr<CudaStager>* out) {
  Status valid = ValidateSizes(capacity_tokens, slots);
  if (!valid.ok()) return valid;
  if (cuda == nullptr) return Status(StatusCode::kCudaUnavailable, "stager: no CUDA runtime loaded");
  std::unique_ptr<CudaStager> stager(new CudaStager(cuda, capacity_tokens));
  Status status = cuda->StatusOf(cuda->StreamCreateWithFlags(&stager->stream_, CudaRuntime::kStreamNonBlocking),
                              "cudaStreamCreateWithFlags");
  if (!status.ok()) return status;
  stager->slots_.resize(slots);
  const size_t bytes = sizeof(int64_t) * static_cast<size_t>(capacity_tokens);
  for (Slot& slot : stager->slots_) {
    for (int k = 0; k < 3; ++k) {
      if (!(status = HostBuffer::Allocate(bytes, cuda, &slot.host[k])).ok()) return status;
      if (!(status = DeviceBuffer::Allocate(bytes, cuda, &slot.device[k])).ok()) return status;
    }
    status = cuda->StatusOf(cuda->EventCreateWithFlags(&slot.event, CudaRuntime::kEventDisableTiming),
                         "cudaEventCreateWithFlags");
    if (!status.ok()) return status;
  }
  *out = std::move(stager);
  return Status::Ok();
}

CudaStager::~CudaStager() {
  if (stream_ != nullptr) cuda_->StreamSynchronize(stream_);
  for (Slot& slot : slots_) {
    if (slot.event != nullptr) cuda_->EventDestroy(slot.event);
  }
  slots_.clear();  // buffers free themselves
  if (stream_ != nullptr) cuda_->StreamDestroy(stream_);
}

Status CudaStager::Stage(const Batch& batch, int32_t pad_multiple, int64_t pad_id, int* slot_index) {
  const int64_t width = batch.PaddedLength(pad_multiple);
  int64_t cells = 0;
  if (!batch.PaddedCells(pad_multiple, kMaxOutputCells, 0, &cells).ok() || cells > capacity_) {
    return Status(StatusCode::kInvalidArgument, "stager: batch of " + std::to_string(batch.rows()) + " x " +
                                                    std::to_string(width) + " tokens exceeds capacity " +
                                                    std::to_string(capacity_) + "; raise batch_tokens capacity");
  }
  Slot& slot = slots_[next_];
  Status status;
  if (slot.in_flight && !(status = cuda_->StatusOf(cuda_->EventSynchronize(slot.event), "cudaEventSynchronize")).ok()) {
    return status;
  }
  batch.FillPadded(pad_multiple, pad_id, static_cast<int64_t*>(slot.host[0]->data()),
                   static_cast<int64_t*>(slot.host[1]->data()), static_cast<int64_t*>(slot.host[2]->data()));
  const size_t bytes = sizeof(int64_t) * static_cast<size_t>(cells);
  for (int k = 0; k < 3; ++k) {
    status = cuda_->StatusOf(cuda_->MemcpyAsync(slot.device[k]->data(), slot.host[k]->data(), bytes,
                                             CudaRuntime::kMemcpyHostToDevice, stream_),
                          "cudaMemcpyAsync");
    if (!status.ok()) return status;
  }
  if (!(status = cuda_->StatusOf(cuda_->EventRecord(slot.event, stream_), "cudaEventRecord")).ok()) return status;
  slot.in_flight = true;
  slot.rows = batch.rows();
  slot.width = width;
  *slot_index = next_;
  next_ = (next_ + 1) % static_cast<int>(slots_.size());
  return Status::Ok();
}

Status CudaStager::Synchronize() { return cuda_->StatusOf(cuda_->StreamSynchronize(stream_), "cudaStreamSynchronize"); }

}  // namespace mbexport::batching
