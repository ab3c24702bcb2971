#include "tokenizer/encode_batch.h"

#include <algorithm>
#include <atomic>
#include <string>

#include "common/limits.h"

namespace mbexport {

namespace {

// Items per work unit: small enough to balance, large enough to amortise the atomic.
constexpr size_t kGrain = 16;

// Tokenizes every text (and pair) into per-item Encoded; returns the lowest-index error. Texts
// stop at stop_after ids (Tokenizer::Encode), pairs never.
Status EncodeAll(const Tokenizer& tok, const std::vector<TextView>& a, const std::vector<TextView>* b,
                 bool offsets, int64_t threads, size_t stop_after, std::vector<Encoded>* ea,
                 std::vector<Encoded>* eb) {
  const size_t n = a.size();
  if (b && b->size() != n)
    return Status(StatusCode::kInvalidArgument, "text and text_pair must have the same number of items");
  ea->resize(n);
  if (b) eb->resize(n);
  std::vector<Status> errors(n);
  std::atomic<bool> failed{false};
  const size_t workers = WorkerCount(n, threads, kGrain);
  std::vector<Scratch> scratch(workers);
  Status run = ParallelFor(n, workers, kGrain, "tokenizing " + std::to_string(n) + " texts",
                           [&](size_t begin, size_t end, size_t w) {
    Scratch& sc = scratch[w];
    for (size_t i = begin; i < end; ++i) {
      Status st = tok.Encode(a[i], offsets, &(*ea)[i], &sc, stop_after);
      if (st.ok() && b) {
        st = tok.Encode((*b)[i], offsets, &(*eb)[i], &sc);
        if (!st.ok()) st = Status(st.code(), "text_pair " + std::string("item ") + std::to_string(i) + ": " + st.message());
      } else if (!st.ok()) {
        st = Status(st.code(), "item " + std::to_string(i) + ": " + st.message());
      }
      if (!st.ok()) {
        errors[i] = st;
        failed = true;
      }
    }
  });
  if (!run.ok()) return run;
  if (failed)
    for (const Status& st : errors)
      if (!st.ok()) return st;
  return Status::Ok();
}

// Encodes every text (and pair) in parallel, then plans the output rows each item becomes.
Status EncodeAndPlan(const Tokenizer& tok, const std::vector<TextView>& a, const std::vector<TextView>* b,
                     const PostOptions& po, bool offsets, int64_t threads, size_t stop_after,
                     std::vector<Encoded>* ea, std::vector<Encoded>* eb, std::vector<RowPlan>* rows) {
  Status st = ValidatePostOptions(po);
  if (!st.ok()) return st;
  if (a.size() > UINT32_MAX)
    return Status(StatusCode::kInvalidArgument, "more than 2**32 texts in one call; pass them in smaller batches");
  st = EncodeAll(tok, a, b, offsets, threads, stop_after, ea, eb);
  if (!st.ok()) return st;
  rows->reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const size_t na = (*ea)[i].ids.size(), nb = b ? (*eb)[i].ids.size() : 0;
    if (na > kMaxTextTokens || nb > kMaxTextTokens)
      return Status(StatusCode::kInvalidArgument, std::string(na > kMaxTextTokens ? "" : "text_pair ") + "item " +
                                                      std::to_string(i) + " has more than 2**30 tokens; split it");
    st = PlanRows(static_cast<uint32_t>(i), static_cast<uint32_t>(na), b != nullptr, static_cast<uint32_t>(nb), po,
                  rows);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace

Status EncodeBatch(const Tokenizer& tok, const std::vector<TextView>& texts_a, const std::vector<TextView>* texts_b,
                   const BatchOptions& options, BatchResult* out) {
  const PostOptions& po = options.post;
  std::vector<Encoded> ea, eb;
  std::vector<RowPlan> rows;
  Status st = EncodeAndPlan(tok, texts_a, texts_b, po, options.offsets, options.threads, SIZE_MAX, &ea, &eb,
                            &rows);
  if (!st.ok()) return st;
  int64_t longest = 0;
  for (const RowPlan& r : rows) longest = std::max<int64_t>(longest, r.length);
  int64_t width = 0, cells = 0;
  const int64_t row_count = static_cast<int64_t>(rows.size());
  const bool width_ok = PaddedWidth(longest, po, &width);
  if (!width_ok || !CheckedMul(row_count, width, &cells) || cells > kMaxOutputCells) {
    std::string cause;
    if (po.padding == Padding::kMaxLength && po.max_length >= 0) cause = "max_length=" + std::to_string(po.max_length);
    if (po.pad_to_multiple_of > 0)
      cause += (cause.empty() ? "" : ", ") + std::string("pad_to_multiple_of=") + std::to_string(po.pad_to_multiple_of);
    return Status(StatusCode::kInvalidArgument,
                  "the padded output would be " + std::to_string(row_count) + " rows x " +
                      (width_ok ? std::to_string(width) : std::string("over 2**63")) + " tokens" +
                      (cause.empty() ? "" : " (" + cause + ")") + ", more than 2**31 cells per array; lower max_length or pad_to_multiple_of");
  }
  // int64 arrays: ids, types, mask (+ special mask, + 2 per cell of offsets) and 2 per row.
  const uint64_t arrays = 3 + (options.special_tokens_mask ? 1 : 0) + (options.offsets ? 2 : 0);
  st = CheckAllocation(8 * (arrays * static_cast<uint64_t>(cells) + 2 * rows.size()),
                       "the padded output (" + std::to_string(row_count) + " x " + std::to_string(width) + ")");
  if (!st.ok()) return st;
  out->rows = static_cast<int64_t>(rows.size());
  out->width = width;
  out->input_ids.assign(cells, po.pad_id);
  out->token_type_ids.assign(cells, 0);
  out->attention_mask.assign(cells, 0);
  if (options.special_tokens_mask) out->special_tokens_mask.assign(cells, 1);
  if (options.offsets) out->offsets.assign(cells * 2, 0);
  out->overflow_to_sample_mapping.resize(rows.size());
  out->lengths.resize(rows.size());
  return ParallelFor(rows.size(), WorkerCount(rows.size(), options.threads, kGrain), kGrain, "padding the output",
                     [&](size_t begin, size_t end, size_t) {
    for (size_t r = begin; r < end; ++r) {
      const RowPlan& p = rows[r];
      out->overflow_to_sample_mapping[r] = p.item;
      out->lengths[r] = p.length;
      const size_t base = r * static_cast<size_t>(width);
      int64_t* ids = out->input_ids.data() + base;
      int64_t* types = out->token_type_ids.data() + base;
      int64_t* mask = out->attention_mask.data() + base;
      int64_t* special = options.special_tokens_mask ? out->special_tokens_mask.data() + base : nullptr;
      int64_t* offs = options.offsets ? out->offsets.data() + base * 2 : nullptr;
      size_t k = 0;
      auto put_special = [&](int32_t id, int64_t type) {
        ids[k] = id;
        types[k] = type;
        mask[k] = 1;
        ++k;
      };
      auto put_seq = [&](const Encoded& e, const Span& s, int64_t type) {
        for (uint32_t t = s.begin; t < s.end; ++t) {
          ids[k] = e.ids[t];
          types[k] = type;
          mask[k] = 1;
          if (special) special[k] = 0;
          if (offs) {
            offs[2 * k] = e.offsets[t].start;
            offs[2 * k + 1] = e.offsets[t].end;
          }
          ++k;
        }
      };
      if (po.add_special_tokens) put_special(po.cls_id, 0);
      put_seq(ea[p.item], p.a, 0);
      if (po.add_special_tokens) put_special(po.sep_id, 0);
      if (p.has_b) {
        put_seq(eb[p.item], p.b, 1);
        if (po.add_special_tokens) put_special(po.sep_id, 1);
      }
    }
  });
}

Status EncodePacked(const Tokenizer& tok, const std::vector<TextView>& texts_a, const std::vector<TextView>* texts_b,
                    const PostOptions& post, int64_t threads, PackedResult* out) {
  PostOptions po = post;
  po.truncation = po.max_length >= 0 ? Truncation::kLongestFirst : Truncation::kNone;
  po.return_overflowing = false;
  const bool add_special_tokens = po.add_special_tokens;
  std::vector<Encoded> ea, eb;
  std::vector<RowPlan> rows;
  // A single text longer than max_length keeps max_length of its ids: reading it past the first word
  // boundary beyond that changes nothing, so a huge text costs its prefix.
  const size_t stop_after = !texts_b && po.max_length >= 0 ? static_cast<size_t>(po.max_length) : SIZE_MAX;
  Status st = EncodeAndPlan(tok, texts_a, texts_b, po, false, threads, stop_after, &ea, &eb, &rows);
  if (!st.ok()) return st;
  const size_t n = texts_a.size();
  out->cu_seqlens.assign(n + 1, 0);
  out->max_len = 0;
  for (size_t i = 0; i < n; ++i) {
    out->cu_seqlens[i + 1] = out->cu_seqlens[i] + rows[i].length;
    out->max_len = std::max<int64_t>(out->max_len, rows[i].length);
  }
  st = CheckAllocation(8 * static_cast<uint64_t>(out->cu_seqlens[n]), "the packed ids");
  if (!st.ok()) return st;
  out->ids.resize(static_cast<size_t>(out->cu_seqlens[n]));
  out->type_ids.resize(out->ids.size());
  return ParallelFor(n, WorkerCount(n, threads, kGrain), kGrain, "packing the output",
                     [&](size_t begin, size_t end, size_t) {
    for (size_t i = begin; i < end; ++i) {
      const RowPlan& p = rows[i];
      int32_t* ids = out->ids.data() + out->cu_seqlens[i];
      int32_t* types = out->type_ids.data() + out->cu_seqlens[i];
      size_t k = 0;
      auto put = [&](int32_t id, int32_t type) {
        ids[k] = id;
        types[k++] = type;
      };
      if (add_special_tokens) put(po.cls_id, 0);
      for (uint32_t t = p.a.begin; t < p.a.end; ++t) put(ea[i].ids[t], 0);
      if (add_special_tokens) put(po.sep_id, 0);
      if (p.has_b) {
        for (uint32_t t = p.b.begin; t < p.b.end; ++t) put(eb[i].ids[t], 1);
        if (add_special_tokens) put(po.sep_id, 1);
      }
    }
  });
}

}  // namespace mbexport
