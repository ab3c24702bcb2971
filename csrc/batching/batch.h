// Batching: from tokenized sequences to the tensors a BERT session takes.
//
// Contract between the tokenizer and the runtime (as TEI's `Batch`):
//   Sequences  a read-only view of the tokenizer's packed output: sequence i is
//              ids[cu[i], cu[i+1]) (start inclusive, end exclusive), [CLS]..[SEP]
//              included. Not owned; must outlive every call that takes it.
//   Plan       which sequences go together: `order` is a permutation of [0, n),
//              batch b holds order[offsets[b], offsets[b+1]). Sorted by length
//              (longest first) within each window of `window` sequences, never across
//              a window boundary; padded batches are cut where they cost the least
//              padded tokens plus a fixed cost per batch, each within the token budget.
//   Batch      one batch, packed (no padding): ids, type ids, position ids,
//              cu_seqlens, and `indices` (each row's position in Sequences) so
//              outputs can be scattered back into input order. Padded or
//              PackedAttention views are written on demand into caller memory
//              (numpy arrays or pinned host buffers), never allocated here.
//
// Truncation keeps the first max_length - 1 tokens and the last one ([SEP]),
// which equals BERT's truncation of the word pieces to max_length - 2 followed by
// [CLS] ... [SEP]. Example, max_length 4: [CLS] a b c d [SEP] -> [CLS] a b [SEP].
//
// Everything here is single-threaded, allocation-light and free of Python; the
// binding releases the GIL around it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/status.h"

namespace mbexport::batching {

// Rows are padded to a multiple of this so tensor cores / SIMD kernels see aligned
// shapes and onnxruntime reuses a few shapes instead of one per length.
inline constexpr int32_t kDefaultPadMultiple = 8;
// Default padded-token budget per batch, per device; the one definition (the Embedder and the CLI
// read them through the binding). CPU: small batches keep activations in cache (MiniLM, 2 cores:
// 1k-2k tokens ran 5-15% faster than 4k-8k at S = 32..128); GPU: large batches fill the device.
inline constexpr int64_t kDefaultBatchTokensCpu = 2048;
inline constexpr int64_t kDefaultBatchTokensCuda = 65536;

struct Sequences {
  const int32_t* ids = nullptr;       // packed token ids
  const int64_t* cu = nullptr;        // count + 1 offsets, cu[0] == 0, non-decreasing
  int64_t count = 0;
  const int32_t* type_ids = nullptr;  // same layout as ids; null = all zeros
};

// Checks cu: starts at 0, non-decreasing, every sequence non-empty, ids in range
// when `total_ids` >= 0 (cu[count] must equal it).
Status ValidateSequences(const Sequences& seqs, int64_t total_ids);

struct PlanOptions {
  int64_t max_length = 0;                    // 0 = no truncation; else >= 2
  int64_t batch_tokens = kDefaultBatchTokensCpu;  // budget: padded tokens (or real tokens when packed)
  int64_t max_rows = 0;                      // 0 = no cap on rows per batch
  int64_t window = 0;                        // sort window in sequences; 0 = all at once
  int32_t pad_multiple = kDefaultPadMultiple;  // 1 = no padding beyond the longest row; >= 1
  bool packed = false;                       // budget counts real tokens (no padding at all)
  // Fixed cost of running one padded batch, in padded tokens (the plan splits a batch only where
  // that saves more padding than this); -1 = batch_tokens / kBatchOverheadDivisor, which scales
  // with the device: the budget is what fills it (2048 on CPU -> 16 tokens, about what one more
  // onnxruntime run of MiniLM costs on 2 cores; 65536 on a GPU -> 512).
  int64_t batch_overhead = -1;
};

inline constexpr int64_t kBatchOverheadDivisor = 128;

inline int64_t BatchOverhead(const PlanOptions& options) {
  return options.batch_overhead >= 0 ? options.batch_overhead
                                     : std::max<int64_t>(1, options.batch_tokens / kBatchOverheadDivisor);
}

struct Plan {
  std::vector<int64_t> order;    // permutation of [0, count)
  std::vector<int64_t> offsets;  // batches + 1 entries
  int64_t truncated = 0;         // sequences longer than max_length
  int64_t real_tokens = 0;       // after truncation
  int64_t padded_tokens = 0;     // rows x padded length, summed (== real_tokens when packed)
  int64_t batches() const { return static_cast<int64_t>(offsets.size()) - 1; }
};

Status MakePlan(const Sequences& seqs, const PlanOptions& options, Plan* plan);

// Length of sequence i after truncation to max_length (0 = none).
inline int64_t EffectiveLength(const Sequences& seqs, int64_t i, int64_t max_length) {
  const int64_t n = seqs.cu[i + 1] - seqs.cu[i];
  return (max_length > 0 && n > max_length) ? max_length : n;
}

// n (a sequence length, < 2**62) rounded up to a multiple of `multiple` (<= 2**31).
inline int64_t RoundUp(int64_t n, int64_t multiple) {
  return multiple <= 1 ? n : (n + multiple - 1) / multiple * multiple;
}

struct Batch {
  std::vector<int32_t> input_ids;       // total tokens
  std::vector<int32_t> token_type_ids;  // total tokens
  std::vector<int32_t> position_ids;    // total tokens, 0..len-1 per row
  std::vector<int32_t> cu_seqlens;      // rows + 1
  std::vector<int64_t> indices;         // rows: position in Sequences
  int32_t max_length = 0;               // longest row

  int64_t rows() const { return static_cast<int64_t>(indices.size()); }
  int64_t tokens() const { return cu_seqlens.empty() ? 0 : cu_seqlens.back(); }
  int64_t PaddedLength(int32_t pad_multiple) const { return RoundUp(max_length, pad_multiple); }
  // rows() x PaddedLength(pad_multiple) into *cells, checked before a caller allocates a view:
  // kInvalidArgument past `max_cells` (kMaxOutputCells, or INT32_MAX for the int32 token_offset),
  // kResourceExhausted when `bytes_per_cell` x cells cannot be allocated.
  Status PaddedCells(int32_t pad_multiple, int64_t max_cells, uint64_t bytes_per_cell, int64_t* cells) const;

  // Padded view: three row-major [rows, PaddedLength(pad_multiple)] int64 arrays.
  // Padding: id pad_id, mask 0, type 0. Any pointer may be null to skip it.
  void FillPadded(int32_t pad_multiple, int64_t pad_id, int64_t* input_ids_out, int64_t* attention_mask_out,
                  int64_t* token_type_ids_out) const;
  // onnxruntime PackedAttention's `token_offset` [rows, padded] (as its RemovePadding op writes it):
  // the padded position r * padded + j of each real token in packed order, then those of the
  // padding slots, row by row. Example, lengths 1, 2, 4 padded to 4:
  //   0 4 5 8 9 10 11 | 1 2 3 6 7
  // so entry k < tokens() is where packed token k sits in the padded [rows, padded] layout.
  // Needs PaddedCells(pad_multiple, INT32_MAX, ...) ok first (every position fits int32).
  void FillTokenOffset(int32_t pad_multiple, int32_t* out) const;
};

// Gathers sequences `indices[0..rows)` into `batch` (reusing its capacity),
// truncating each to max_length (0 = none).
Status GatherBatch(const Sequences& seqs, const int64_t* indices, int64_t rows, int64_t max_length, Batch* batch);

// Scatters `rows` output rows of `width` floats into `out` at the rows' original
// positions: out[indices[r] - base] = rows_in[r]. Rows outside [base, base+out_rows) are an
// error (checked before any row is written, with checked arithmetic: any int64 index is safe).
Status ScatterRows(const float* rows_in, const int64_t* indices, int64_t rows, int64_t width, int64_t base,
                   float* out, int64_t out_rows);

}  // namespace mbexport::batching
