// Host and device buffers for feeding a GPU session, and the double-buffered stager.
//
// HostBuffer   page-locked (cudaMallocHost) when given a CudaRuntime, so async
//              copies really are asynchronous; otherwise 64-byte aligned pageable
//              memory (the CPU path, and how the lifecycle is tested without a GPU).
//              Owns its memory; freed by the destructor, or early by Release().
// DeviceBuffer cudaMalloc'd memory; owns it.
// CudaStager   `slots` (default 2) sets of {pinned ids/mask/types, device ids/mask/
//              types, event} on one stream. Stage() writes a batch's padded view
//              straight into the next slot's pinned memory, enqueues the three
//              host->device copies and records the slot's event; it first waits on
//              that slot's previous event, so pinned memory is never overwritten
//              while a copy from it is in flight. With two slots the next batch is
//              built and copied while the current one runs. Device pointers are bound
//              to onnxruntime by IO binding; the session must run on stream() (CUDA EP
//              option user_compute_stream) so copies and compute are ordered.
//
// Example:
//   const CudaRuntime* cuda; Status s = CudaRuntime::Load({}, &cuda);   // kCudaUnavailable without a GPU
//   std::unique_ptr<CudaStager> st; CudaStager::Create(cuda, 16384, 2, &st);
//   int slot; st->Stage(batch, 8, 0, &slot);  // then bind st->DeviceInputIds(slot) ...
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "batching/batch.h"
#include "batching/cuda_runtime.h"
#include "common/status.h"

namespace mbexport::batching {

class HostBuffer {
 public:
  // kInvalidArgument when bytes cannot be rounded up to the alignment, kResourceExhausted
  // when the machine cannot give them (common/limits.h CheckAllocation).
  static Status Allocate(size_t bytes, const CudaRuntime* cuda, std::unique_ptr<HostBuffer>* out);
  ~HostBuffer();
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  bool pinned() const { return cuda_ != nullptr; }
  bool released() const { return data_ == nullptr; }
  void Release();

 private:
  HostBuffer(void* data, size_t size, const CudaRuntime* cuda) : data_(data), size_(size), cuda_(cuda) {}
  void* data_;
  size_t size_;
  const CudaRuntime* cuda_;
};

class DeviceBuffer {
 public:
  static Status Allocate(size_t bytes, const CudaRuntime* cuda, std::unique_ptr<DeviceBuffer>* out);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  DeviceBuffer(void* data, size_t size, const CudaRuntime* cuda) : data_(data), size_(size), cuda_(cuda) {}
  void* data_;
  size_t size_;
  const CudaRuntime* cuda_;
};

// Staging slots: two give double buffering; more only pin more memory.
inline constexpr int kMaxStagerSlots = 16;

class CudaStager {
 public:
  // capacity_tokens: the largest rows x padded length a batch may have (the plan's budget).
  static Status Create(const CudaRuntime* cuda, int64_t capacity_tokens, int slots,
                       std::unique_ptr<CudaStager>* out);
  // The checks Create applies to its sizes, without CUDA: capacity_tokens in [1, kMaxOutputCells],
  // slots in [1, kMaxStagerSlots], and the pinned memory (slots x 3 x 8 x capacity bytes) available.
  static Status ValidateSizes(int64_t capacity_tokens, int slots);
  ~CudaStager();

  Status Stage(const Batch& batch, int32_t pad_multiple, int64_t pad_id, int* slot);
  Status Synchronize();

  int slots() const { return static_cast<int>(slots_.size()); }
  int64_t capacity_tokens() const { return capacity_; }
  void* stream() const { return stream_; }
  bool HasSlot(int slot) const { return slot >= 0 && slot < slots(); }
  // Device arrays of the slot, int64 [rows, padded] as last staged. The slot must satisfy HasSlot.
  void* DeviceInputIds(int slot) const { return slots_[slot].device[0]->data(); }
  void* DeviceAttentionMask(int slot) const { return slots_[slot].device[1]->data(); }
  void* DeviceTokenTypeIds(int slot) const { return slots_[slot].device[2]->data(); }
  int64_t Rows(int slot) const { return slots_[slot].rows; }
  int64_t Width(int slot) const { return slots_[slot].width; }

 private:
  struct Slot {
    std::unique_ptr<HostBuffer> host[3];
    std::unique_ptr<DeviceBuffer> device[3];
    void* event = nullptr;
    bool in_flight = false;
    int64_t rows = 0;
    int64_t width = 0;
  };
  CudaStager(const CudaRuntime* cuda, int64_t capacity) : cuda_(cuda), capacity_(capacity) {}
  const CudaRuntime* cuda_;
  int64_t capacity_;
  void* stream_ = nullptr;
  std::vector<Slot> slots_;
  int next_ = 0;
};

}  // namespace mbexport::batching
