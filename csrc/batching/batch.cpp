#include "batching/batch.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "common/limits.h"

namespace mbexport::batching {

Status ValidateSequences(const Sequences& seqs, int64_t total_ids) {
  if (seqs.count < 0 || (seqs.count > 0 && (seqs.cu == nullptr || seqs.ids == nullptr))) {
    return Status(StatusCode::kInvalidArgument, "batcher: sequences view is empty or null");
  }
  if (seqs.count == 0) return Status::Ok();
  if (seqs.cu[0] != 0) {
    return Status(StatusCode::kInvalidArgument,
                  "batcher: cumulative lengths must start at 0, got " + std::to_string(seqs.cu[0]));
  }
  for (int64_t i = 0; i < seqs.count; ++i) {
    if (seqs.cu[i + 1] <= seqs.cu[i]) {
      return Status(StatusCode::kInvalidArgument,
                    "batcher: sequence " + std::to_string(i) +
                        " is empty or cumulative lengths decrease; every sequence needs [CLS] and [SEP]");
    }
  }
  if (total_ids >= 0 && seqs.cu[seqs.count] != total_ids) {
    return Status(StatusCode::kInvalidArgument, "batcher: cumulative lengths end at " +
                                                    std::to_string(seqs.cu[seqs.count]) + " but there are " +
                                                    std::to_string(total_ids) + " ids");
  }
  return Status::Ok();
}

namespace {

// Cuts the sorted window order[w0, w1) into padded batches of least estimated work: the sum over
// batches of rows x padded width (the padded tokens the model computes) plus a fixed cost per
// batch (kernel launches, the run call), each batch within batch_tokens and max_rows (or one row).
// A greedy fill (as many rows as the first row's width allows) pads a few short texts to the
// longest one whenever the window's lengths are mixed and few, as when a server coalesces a
// handful of requests; this exact dynamic program splits such a batch where padding costs more
// than another batch. O((w1 - w0) x rows per batch), rows <= batch_tokens / pad_multiple.
Status PlanPaddedWindow(const std::vector<int64_t>& length, const PlanOptions& options, int64_t w0, int64_t w1,
                        Plan* plan) {
  const int64_t m = w1 - w0;
  const int64_t overhead = BatchOverhead(options);
  std::vector<int64_t> width(m), cost(m + 1, 0), cut(m + 1, 0);
  for (int64_t k = 0; k < m; ++k) width[k] = RoundUp(length[plan->order[w0 + k]], options.pad_multiple);
  const Status overflow(StatusCode::kInvalidArgument, "batcher: padded token count overflows int64; lower batch_tokens");
  for (int64_t j = 1; j <= m; ++j) {
    cost[j] = -1;
    // Batch [i, j): width[i] is its widest row (longest first), so its cells grow as i falls.
    for (int64_t i = j - 1; i >= 0; --i) {
      const int64_t rows = j - i;
      int64_t cells = 0, total = 0;
      if (!CheckedMul(rows, width[i], &cells)) break;
      if (rows > 1 && (cells > options.batch_tokens || (options.max_rows > 0 && rows > options.max_rows))) break;
      if (!CheckedAdd(cost[i], cells, &total) || !CheckedAdd(total, overhead, &total)) return overflow;
      if (cost[j] < 0 || total <= cost[j]) {  // ties: the larger batch (fewer runs)
        cost[j] = total;
        cut[j] = i;
      }
    }
  }
  std::vector<int64_t> ends;
  for (int64_t j = m; j > 0; j = cut[j]) ends.push_back(j);
  for (auto it = ends.rbegin(); it != ends.rend(); ++it) {
    const int64_t start = plan->offsets.back() - w0, end = *it;
    int64_t cells = 0;
    if (!CheckedMul(end - start, width[start], &cells) ||
        !CheckedAdd(plan->padded_tokens, cells, &plan->padded_tokens))
      return overflow;
    plan->offsets.push_back(w0 + end);
  }
  return Status::Ok();
}

}  // namespace

Status MakePlan(const Sequences& seqs, const PlanOptions& options, Plan* plan) {
  if (options.max_length == 1 || options.max_length < 0) {
    return Status(StatusCode::kInvalidArgument, "batcher: max_length must be 0 (no limit) or >= 2, got " +
                                                    std::to_string(options.max_length));
  }
  if (options.batch_tokens < 1 || options.pad_multiple < 1 || options.max_rows < 0 || options.window < 0 ||
      options.batch_overhead < -1) {
    return Status(StatusCode::kInvalidArgument,
                  "batcher: batch_tokens and pad_multiple must be >= 1, max_rows and window >= 0, "
                  "batch_overhead >= -1");
  }
  Status status = ValidateSequences(seqs, -1);
  if (!status.ok()) return status;

  const int64_t n = seqs.count;
  std::vector<int64_t> length(n);
  plan->truncated = 0;
  plan->real_tokens = 0;
  plan->padded_tokens = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t raw = seqs.cu[i + 1] - seqs.cu[i];
    length[i] = EffectiveLength(seqs, i, options.max_length);
    plan->truncated += raw != length[i];
    plan->real_tokens += length[i];
  }

  plan->order.resize(n);
  std::iota(plan->order.begin(), plan->order.end(), int64_t{0});
  plan->offsets.assign(1, 0);
  const int64_t window = options.window > 0 ? options.window : std::max<int64_t>(n, 1);
  for (int64_t w0 = 0; w0 < n; w0 += window) {
    const int64_t w1 = std::min(n, w0 + window);
    // Longest first: the first row of a batch fixes its padded length, and the
    // biggest batch runs first, so an out-of-memory shows at once.
    std::stable_sort(plan->order.begin() + w0, plan->order.begin() + w1,
                     [&](int64_t a, int64_t b) { return length[a] > length[b]; });
    if (!options.packed) {
      status = PlanPaddedWindow(length, options, w0, w1, plan);
      if (!status.ok()) return status;
      continue;
    }
    int64_t start = w0;
    while (start < w1) {
      int64_t end = start + 1;
      int64_t used = length[plan->order[start]];
      int64_t next = 0;
      while (end < w1 && CheckedAdd(used, length[plan->order[end]], &next) && next <= options.batch_tokens &&
             (options.max_rows == 0 || end - start < options.max_rows)) {
        used = next;
        ++end;
      }
      plan->padded_tokens += used;
      plan->offsets.push_back(end);
      start = end;
    }
  }
  return Status::Ok();
}

Status GatherBatch(const Sequences& seqs, const int64_t* indices, int64_t rows, int64_t max_length, Batch* batch) {
  if (rows < 0 || (rows > 0 && indices == nullptr)) {
    return Status(StatusCode::kInvalidArgument, "batcher: batch needs a non-negative row count and indices");
  }
  if (max_length == 1 || max_length < 0) {
    return Status(StatusCode::kInvalidArgument, "batcher: max_length must be 0 (no limit) or >= 2");
  }
  batch->indices.assign(indices, indices + rows);
  batch->cu_seqlens.assign(1, 0);
  batch->input_ids.clear();
  batch->token_type_ids.clear();
  batch->position_ids.clear();
  batch->max_length = 0;
  int64_t total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = indices[r];
    if (i < 0 || i >= seqs.count) {
      return Status(StatusCode::kInvalidArgument, "batcher: row index " + std::to_string(i) +
                                                      " outside [0, " + std::to_string(seqs.count) + ")");
    }
    const int64_t len = EffectiveLength(seqs, i, max_length);
    if (len <= 0) return Status(StatusCode::kInvalidArgument, "batcher: sequence " + std::to_string(i) + " is empty");
    if (!CheckedAdd(total, len, &total) || total > INT32_MAX) {  // cu_seqlens and positions are int32
      return Status(StatusCode::kInvalidArgument,
                    "batcher: a batch of more than 2^31 - 1 tokens does not fit int32 offsets; lower batch_tokens");
    }
    batch->cu_seqlens.push_back(static_cast<int32_t>(total));
    batch->max_length = std::max<int32_t>(batch->max_length, static_cast<int32_t>(len));
  }
  batch->input_ids.resize(total);
  batch->token_type_ids.resize(total);
  batch->position_ids.resize(total);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = indices[r];
    const int64_t begin = seqs.cu[i];
    const int64_t raw = seqs.cu[i + 1] - begin;
    const int64_t len = batch->cu_seqlens[r + 1] - batch->cu_seqlens[r];
    int32_t* ids = batch->input_ids.data() + batch->cu_seqlens[r];
    int32_t* types = batch->token_type_ids.data() + batch->cu_seqlens[r];
    // Keep the head and the final token ([SEP]) when truncating.
    std::memcpy(ids, seqs.ids + begin, sizeof(int32_t) * (len == raw ? len : len - 1));
    if (len != raw) ids[len - 1] = seqs.ids[begin + raw - 1];
    if (seqs.type_ids != nullptr) {
      std::memcpy(types, seqs.type_ids + begin, sizeof(int32_t) * (len == raw ? len : len - 1));
      if (len != raw) types[len - 1] = seqs.type_ids[begin + raw - 1];
    } else {
      std::fill(types, types + len, 0);
    }
    std::iota(batch->position_ids.data() + batch->cu_seqlens[r],
              batch->position_ids.data() + batch->cu_seqlens[r] + len, 0);
  }
  return Status::Ok();
}

Status Batch::PaddedCells(int32_t pad_multiple, int64_t max_cells, uint64_t bytes_per_cell, int64_t* cells) const {
  const int64_t width = PaddedLength(pad_multiple);
  if (!CheckedMul(rows(), width, cells) || *cells > max_cells) {
    return Status(StatusCode::kInvalidArgument, "batcher: a batch of " + std::to_string(rows()) + " rows x " +
                                                    std::to_string(width) + " padded tokens is over " +
                                                    std::to_string(max_cells) + " cells; lower batch_tokens, "
                                                    "max_rows or pad_multiple");
  }
  return CheckAllocation(bytes_per_cell * static_cast<uint64_t>(*cells),
                         "the padded batch (" + std::to_string(rows()) + " x " + std::to_string(width) + ")");
}

void Batch::FillPadded(int32_t pad_multiple, int64_t pad_id, int64_t* input_ids_out, int64_t* attention_mask_out,
                       int64_t* token_type_ids_out) const {
  const int64_t width = PaddedLength(pad_multiple);
  for (int64_t r = 0; r < rows(); ++r) {
    const int64_t begin = cu_seqlens[r];
    const int64_t len = cu_seqlens[r + 1] - begin;
    const int64_t row = r * width;
    if (input_ids_out != nullptr) {
      std::copy(input_ids.begin() + begin, input_ids.begin() + begin + len, input_ids_out + row);
      std::fill(input_ids_out + row + len, input_ids_out + row + width, pad_id);
    }
    if (attention_mask_out != nullptr) {
      std::fill(attention_mask_out + row, attention_mask_out + row + len, 1);
      std::fill(attention_mask_out + row + len, attention_mask_out + row + width, 0);
    }
    if (token_type_ids_out != nullptr) {
      std::copy(token_type_ids.begin() + begin, token_type_ids.begin() + begin + len, token_type_ids_out + row);
      std::fill(token_type_ids_out + row + len, token_type_ids_out + row + width, 0);
    }
  }
}

void Batch::FillTokenOffset(int32_t pad_multiple, int32_t* out) const {
  const int64_t width = PaddedLength(pad_multiple);
  // Real tokens first: out[k] = padded position of packed token k; then the padding slots.
  int32_t* next = out;
  for (int64_t r = 0; r < rows(); ++r) {
    const int64_t len = cu_seqlens[r + 1] - cu_seqlens[r];
    for (int64_t j = 0; j < len; ++j) *next++ = static_cast<int32_t>(r * width + j);
  }
  for (int64_t r = 0; r < rows(); ++r) {
    const int64_t len = cu_seqlens[r + 1] - cu_seqlens[r];
    for (int64_t j = len; j < width; ++j) *next++ = static_cast<int32_t>(r * width + j);
  }
}

Status ScatterRows(const float* rows_in, const int64_t* indices, int64_t rows, int64_t width, int64_t base,
                   float* out, int64_t out_rows) {
  if (rows < 0 || width < 0 || out_rows < 0)
    return Status(StatusCode::kInvalidArgument, "batcher: scatter sizes must be >= 0");
  for (int64_t r = 0; r < rows; ++r) {  // all checked first: an error leaves `out` untouched
    int64_t dst = 0;
    if (!CheckedSub(indices[r], base, &dst) || dst < 0 || dst >= out_rows) {
      return Status(StatusCode::kInvalidArgument,
                    "batcher: scatter index " + std::to_string(indices[r]) + " (row " + std::to_string(r) +
                        ") is outside the output block of " + std::to_string(out_rows) + " rows starting at " +
                        std::to_string(base));
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out + (indices[r] - base) * width, rows_in + r * width, sizeof(float) * width);
  }
  return Status::Ok();
}

}  // namespace mbexport::batching
