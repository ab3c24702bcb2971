// Python face of csrc/batching: Batcher (plan + padded/packed views), HostBuffer,
// CudaStager, cuda_runtime_info. Shims only; the GIL is released around core calls.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "batching/batch.h"
#include "batching/buffers.h"
#include "batching/cuda_runtime.h"
#include "bindings/bindings.h"
#include "common/limits.h"

namespace py = pybind11;

namespace mbexport::bindings {

namespace {

using batching::Batch;
using batching::CudaRuntime;
using batching::CudaStager;
using batching::HostBuffer;
using batching::Plan;
using batching::PlanOptions;
using batching::Sequences;

template <typename T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

const CudaRuntime* LoadCuda(const std::vector<std::string>& paths) {
  const CudaRuntime* cuda = nullptr;
  Check(CudaRuntime::Load(paths, &cuda));
  return cuda;
}

// Owns a copy of one window's tokens and its plan.
class PyBatcher {
 public:
  PyBatcher(const CArray<int32_t>& ids, const CArray<int64_t>& cu, const py::handle& max_length,
            const py::handle& batch_tokens, const py::handle& pad_multiple, bool packed, const py::handle& window,
            const py::handle& max_rows, int64_t pad_id, std::optional<CArray<int32_t>> type_ids)
      : ids_(ids.data(), ids.data() + ids.size()), cu_(cu.data(), cu.data() + cu.size()), pad_id_(pad_id) {
    if (ids.ndim() != 1 || cu.ndim() != 1 || cu.size() < 1) {
      ThrowStatus(Status(StatusCode::kInvalidArgument, "Batcher: ids and cu must be 1-D, cu with >= 1 entry"));
    }
    if (type_ids) {
      if (type_ids->size() != ids.size()) {
        ThrowStatus(Status(StatusCode::kInvalidArgument, "Batcher: type_ids must have the same length as ids"));
      }
      types_.assign(type_ids->data(), type_ids->data() + type_ids->size());
    }
    options_.max_length = IntArg(max_length, "Batcher: max_length", 0);
    options_.batch_tokens = IntArg(batch_tokens, "Batcher: batch_tokens", 1);
    options_.pad_multiple = static_cast<int32_t>(IntArg(pad_multiple, "Batcher: pad_multiple", 1, INT32_MAX));
    options_.packed = packed;
    options_.window = IntArg(window, "Batcher: window", 0);
    options_.max_rows = IntArg(max_rows, "Batcher: max_rows", 0);
    Status status = batching::ValidateSequences(View(), static_cast<int64_t>(ids_.size()));
    if (status.ok()) {
      py::gil_scoped_release release;
      status = batching::MakePlan(View(), options_, &plan_);
    }
    Check(status);
  }

  Sequences View() const {
    return Sequences{ids_.data(), cu_.data(), static_cast<int64_t>(cu_.size()) - 1,
                     types_.empty() ? nullptr : types_.data()};
  }

  // The batch at index `index` (IndexError outside [0, len)), its padded view checked to be
  // allocatable at `bytes_per_cell` bytes and at most `max_cells` cells.
  const Batch& Gather(const py::handle& index, int64_t max_cells, uint64_t bytes_per_cell) {
    const int64_t b = IndexArg(index, "Batcher: batch", plan_.batches());
    Status status;
    {
      py::gil_scoped_release release;
      status = batching::GatherBatch(View(), plan_.order.data() + plan_.offsets[b],
                                     plan_.offsets[b + 1] - plan_.offsets[b], options_.max_length, &batch_);
    }
    Check(status);
    int64_t cells = 0;
    Check(batch_.PaddedCells(options_.pad_multiple, max_cells, bytes_per_cell, &cells));
    return batch_;
  }

  py::tuple Padded(const py::handle& b) {
    const Batch& batch = Gather(b, kMaxOutputCells, 3 * sizeof(int64_t));
    const py::ssize_t rows = batch.rows(), width = batch.PaddedLength(options_.pad_multiple);
    py::array_t<int64_t> ids({rows, width}), mask({rows, width}), types({rows, width});
    int64_t *pi = ids.mutable_data(), *pm = mask.mutable_data(), *pt = types.mutable_data();
    {
      py::gil_scoped_release release;
      batch.FillPadded(options_.pad_multiple, pad_id_, pi, pm, pt);
    }
    return py::make_tuple(ToArray(std::vector(batch.indices)), ids, mask, types);
  }

  // The padding-free view for onnxruntime's PackedAttention: token_offset [rows, padded] is checked
  // to fit int32 positions (and memory) before anything is written; GIL released while copying.
  py::tuple Packed(const py::handle& b) {
    // bytes per cell: token_offset, plus at most one cell's worth each of ids, types and positions
    const Batch& batch = Gather(b, INT32_MAX, 4 * sizeof(int32_t));
    const py::ssize_t rows = batch.rows(), width = batch.PaddedLength(options_.pad_multiple);
    py::array_t<int32_t> offset({rows, width});
    int32_t* po = offset.mutable_data();
    std::vector<int64_t> indices;
    std::vector<int32_t> ids, types, positions, cu;
    {
      py::gil_scoped_release release;
      batch.FillTokenOffset(options_.pad_multiple, po);
      indices = batch.indices;
      ids = batch.input_ids;
      types = batch.token_type_ids;
      positions = batch.position_ids;
      cu = batch.cu_seqlens;
    }
    return py::make_tuple(ToArray(std::move(indices)), ToArray(std::move(ids)), ToArray(std::move(types)),
                          ToArray(std::move(positions)), offset, ToArray(std::move(cu)));
  }

  py::tuple Stage(const py::handle& b, CudaStager& stager) {
    const Batch& batch = Gather(b, stager.capacity_tokens(), 0);  // the stager's memory is allocated
    int slot = -1;
    Status status;
    {
      py::gil_scoped_release release;
      status = stager.Stage(batch, options_.pad_multiple, pad_id_, &slot);
    }
    Check(status);
    py::array_t<int32_t> lengths(batch.rows());
    for (int64_t r = 0; r < batch.rows(); ++r) lengths.mutable_data()[r] = batch.cu_seqlens[r + 1] - batch.cu_seqlens[r];
    return py::make_tuple(ToArray(std::vector(batch.indices)), slot, lengths);
  }

  const Plan& plan() const { return plan_; }
  const PlanOptions& options() const { return options_; }

 private:
  std::vector<int32_t> ids_;
  std::vector<int64_t> cu_;
  std::vector<int32_t> types_;
  int64_t pad_id_;
  PlanOptions options_;
  Plan plan_;
  Batch batch_;
};

// Minimal DLPack (v0.8 ABI) so torch/cupy can view staged device arrays without a copy.
struct DLDevice { int32_t device_type; int32_t device_id; };
struct DLDataType { uint8_t code; uint8_t bits; uint16_t lanes; };
struct DLTensor {
  void* data; DLDevice device; int32_t ndim; DLDataType dtype; int64_t* shape; int64_t* strides; uint64_t byte_offset;
};
struct DLManagedTensor { DLTensor dl_tensor; void* manager_ctx; void (*deleter)(DLManagedTensor*); };
constexpr int32_t kDLCUDA = 2;
constexpr uint8_t kDLInt = 0;

struct DLContext {
  int64_t shape[2];
  py::object owner;  // keeps the stager alive while the view exists
  DLManagedTensor tensor;
};

void DeleteDL(DLManagedTensor* t) {
  py::gil_scoped_acquire gil;
  delete static_cast<DLContext*>(t->manager_ctx);
}

// A staged slot index from Python: IndexError unless HasSlot.
int SlotArg(const CudaStager& stager, const py::handle& slot) {
  return static_cast<int>(IndexArg(slot, "CudaStager: slot", stager.slots()));
}

py::capsule DLPackOf(py::object stager_obj, const py::handle& slot_arg, const std::string& which) {
  CudaStager& stager = stager_obj.cast<CudaStager&>();
  const int slot = SlotArg(stager, slot_arg);
  void* data = which == "input_ids" ? stager.DeviceInputIds(slot)
               : which == "attention_mask" ? stager.DeviceAttentionMask(slot)
               : which == "token_type_ids" ? stager.DeviceTokenTypeIds(slot)
                                           : nullptr;
  if (data == nullptr) throw py::value_error("CudaStager: which must be input_ids, attention_mask or token_type_ids");
  auto* ctx = new DLContext{{stager.Rows(slot), stager.Width(slot)}, stager_obj, {}};
  ctx->tensor.dl_tensor = DLTensor{data, {kDLCUDA, 0}, 2, {kDLInt, 64, 1}, ctx->shape, nullptr, 0};
  ctx->tensor.manager_ctx = ctx;
  ctx->tensor.deleter = DeleteDL;
  return py::capsule(&ctx->tensor, "dltensor", [](PyObject* cap) {
    // Called when the capsule dies; a consumer renames it "used_dltensor" and owns the tensor.
    if (PyCapsule_IsValid(cap, "dltensor")) {
      auto* t = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
      t->deleter(t);
    }
  });
}

// Batcher: plans one window into batches and writes their tensors.
void RegisterBatcher(py::module_& m) {
  py::class_<PyBatcher>(m, "Batcher",
                        "Plans batches over one window of tokenized sequences (packed ids + cumulative lengths)\n"
                        "and writes each batch's padded or packed tensors. Order is longest first; `indices`\n"
                        "give each row's position in the window so outputs go back in input order.")
      .def(py::init<const CArray<int32_t>&, const CArray<int64_t>&, const py::handle&, const py::handle&,
                    const py::handle&, bool, const py::handle&, const py::handle&, int64_t,
                    std::optional<CArray<int32_t>>>(),
           py::arg("ids"), py::arg("cu"), py::kw_only(), py::arg("max_length") = 0,
           py::arg("batch_tokens") = batching::kDefaultBatchTokensCpu,
           py::arg("pad_multiple") = batching::kDefaultPadMultiple, py::arg("packed") = false,
           py::arg("window") = 0, py::arg("max_rows") = 0, py::arg("pad_id") = 0, py::arg("type_ids") = py::none())
      .def("__len__", [](const PyBatcher& b) { return b.plan().batches(); })
      .def_property_readonly("truncated", [](const PyBatcher& b) { return b.plan().truncated; })
      .def_property_readonly("real_tokens", [](const PyBatcher& b) { return b.plan().real_tokens; })
      .def_property_readonly("padded_tokens", [](const PyBatcher& b) { return b.plan().padded_tokens; })
      .def_property_readonly("order", [](const PyBatcher& b) { return ToArray(std::vector(b.plan().order)); })
      .def_property_readonly("offsets", [](const PyBatcher& b) { return ToArray(std::vector(b.plan().offsets)); })
      .def_property_readonly("pad_multiple", [](const PyBatcher& b) { return b.options().pad_multiple; })
      .def("padded", &PyBatcher::Padded, py::arg("batch"),
           "(indices, input_ids, attention_mask, token_type_ids): int64, the last three [rows, padded]")
      .def("packed", &PyBatcher::Packed, py::arg("batch"),
           "(indices, input_ids, token_type_ids, position_ids, token_offset, cu_seqlens): the batch without\n"
           "padding for onnxruntime's PackedAttention. indices int64 [rows]; ids, types, positions int32\n"
           "[tokens]; token_offset int32 [rows, padded] (padded position of each packed token, then of each\n"
           "padding slot); cu_seqlens int32 [rows + 1].")
      .def("stage", &PyBatcher::Stage, py::arg("batch"), py::arg("stager"),
           "Writes the padded batch into the stager's next pinned slot and copies it to the GPU\n"
           "asynchronously; returns (indices, slot, lengths).");
}

// HostBuffer: pinned or aligned host memory with the buffer protocol.
void RegisterHostBuffer(py::module_& m) {
  py::class_<HostBuffer, std::unique_ptr<HostBuffer>>(m, "HostBuffer", py::buffer_protocol(),
                                                       "Host memory for staging: page-locked when pinned=True\n"
                                                       "(needs the CUDA runtime), else 64-byte aligned pageable.")
      .def(py::init([](const py::handle& nbytes, bool pinned, std::vector<std::string> library_paths) {
             const auto bytes = static_cast<size_t>(IntArg(nbytes, "HostBuffer: nbytes", 0));
             std::unique_ptr<HostBuffer> out;
             Check(HostBuffer::Allocate(bytes, pinned ? LoadCuda(library_paths) : nullptr, &out));
             return out;
           }),
           py::arg("nbytes"), py::arg("pinned") = false, py::arg("library_paths") = std::vector<std::string>{})
      .def_property_readonly("nbytes", &HostBuffer::size)
      .def_property_readonly("pinned", &HostBuffer::pinned)
      .def_property_readonly("ptr", [](const HostBuffer& b) { return reinterpret_cast<uintptr_t>(b.data()); })
      .def_buffer([](HostBuffer& b) {
        return py::buffer_info(b.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(b.size())}, {1});
      });
}

// CudaStager: double-buffered host -> device staging, DLPack views.
void RegisterCudaStager(py::module_& m) {
  py::class_<CudaStager>(m, "CudaStager",
                         "Double-buffered pinned host -> device staging on one CUDA stream (see buffers.h).")
      .def(py::init([](const py::handle& capacity_tokens, const py::handle& slots,
                       std::vector<std::string> library_paths) {
             // Sizes first, so a bad one is reported on machines without CUDA too.
             const int64_t capacity = IntArg(capacity_tokens, "CudaStager: capacity_tokens", 1, kMaxOutputCells);
             const int count = static_cast<int>(IntArg(slots, "CudaStager: slots", 1, batching::kMaxStagerSlots));
             Check(CudaStager::ValidateSizes(capacity, count));
             std::unique_ptr<CudaStager> out;
             Check(CudaStager::Create(LoadCuda(library_paths), capacity, count, &out));
             return out;
           }),
           py::arg("capacity_tokens"), py::arg("slots") = 2,
           py::arg("library_paths") = std::vector<std::string>{})
      .def_property_readonly("stream_ptr", [](const CudaStager& s) { return reinterpret_cast<uintptr_t>(s.stream()); })
      .def_property_readonly("slots", &CudaStager::slots)
      .def_property_readonly("capacity_tokens", &CudaStager::capacity_tokens)
      .def("device_ptrs",
           [](const CudaStager& s, const py::handle& slot_arg) {
             const int slot = SlotArg(s, slot_arg);
             return py::make_tuple(reinterpret_cast<uintptr_t>(s.DeviceInputIds(slot)),
                                   reinterpret_cast<uintptr_t>(s.DeviceAttentionMask(slot)),
                                   reinterpret_cast<uintptr_t>(s.DeviceTokenTypeIds(slot)));
           })
      .def("shape",
           [](const CudaStager& s, const py::handle& slot_arg) {
             const int slot = SlotArg(s, slot_arg);
             return py::make_tuple(s.Rows(slot), s.Width(slot));
           })
      .def("synchronize", [](CudaStager& s) {
        Status status;
        {
          py::gil_scoped_release release;
          status = s.Synchronize();
        }
        Check(status);
      })
      .def("dlpack", &DLPackOf, py::arg("slot"), py::arg("which") = "input_ids",
           "A DLPack capsule viewing a staged device array (torch.utils.dlpack.from_dlpack).");
}

// cuda_runtime_info: loads libcudart and describes it.
void RegisterCudaRuntimeInfo(py::module_& m) {
  m.def(
      "cuda_runtime_info",
      [](std::vector<std::string> library_paths) {
        const CudaRuntime* cuda = LoadCuda(library_paths);
        py::dict d;
        d["path"] = cuda->path;
        d["runtime_version"] = cuda->runtime_version;
        d["driver_version"] = cuda->driver_version;
        d["device_count"] = cuda->device_count;
        return d;
      },
      py::arg("library_paths") = std::vector<std::string>{},
      "Loads libcudart (dlopen, once per process) and describes it; CudaUnavailableError says what is missing.");
}

// scatter_rows: a batch's outputs back in input order.
void RegisterScatterRows(py::module_& m) {
  m.def(
      "scatter_rows",
      [](const CArray<float>& rows, const CArray<int64_t>& indices, py::array_t<float, py::array::c_style> out,
         int64_t base) {
        if (rows.ndim() != 2 || out.ndim() != 2 || rows.shape(1) != out.shape(1) || indices.ndim() != 1 ||
            indices.size() != rows.shape(0)) {
          ThrowStatus(Status(StatusCode::kInvalidArgument,
                             "scatter_rows: rows [n, w], indices [n] and out [m, w] disagree in shape"));
        }
        if (!out.writeable()) ThrowStatus(Status(StatusCode::kInvalidArgument, "scatter_rows: out is read-only"));
        float* dst = out.mutable_data();
        Status status;
        {
          py::gil_scoped_release release;
          status = batching::ScatterRows(rows.data(), indices.data(), rows.shape(0), rows.shape(1), base, dst,
                                         out.shape(0));
        }
        Check(status);
      },
      py::arg("rows"), py::arg("indices"), py::arg("out").noconvert(), py::arg("base") = 0,
      "out[indices[r] - base] = rows[r]: puts a batch's outputs back in input order. out must be a\n"
      "C-contiguous, writeable float32 array (never a converted copy, whose writes would be lost).");
}

}  // namespace

void RegisterBatching(py::module_& m) {
  py::dict batch_tokens;
  batch_tokens["cpu"] = batching::kDefaultBatchTokensCpu;
  batch_tokens["cuda"] = batching::kDefaultBatchTokensCuda;
  m.attr("DEFAULT_BATCH_TOKENS") = batch_tokens;
  m.attr("DEFAULT_PAD_MULTIPLE") = batching::kDefaultPadMultiple;
  RegisterBatcher(m);
  RegisterHostBuffer(m);
  RegisterCudaStager(m);
  RegisterCudaRuntimeInfo(m);
  RegisterScatterRows(m);
}

}  // namespace mbexport::bindings
