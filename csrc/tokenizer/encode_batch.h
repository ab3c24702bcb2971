// Batch encoding: many texts (optionally pairs) -> padded int64 arrays in HF's
// layout, or packed int32 ids + cumulative lengths for the runtime.
//
// Work is spread by ParallelFor (common/parallel.h) over min(threads, CPUs, inputs /
// grain) workers that pull chunks with one atomic index; results land at the input's
// position, so order is the input order whatever the thread count. No call takes a
// lock or touches Python: the binding releases the GIL around the whole call and wraps
// the vectors below as numpy arrays without copying.
//
// Sizes are checked before anything is allocated from them (common/limits.h): a text
// of more than kMaxTextTokens tokens, an output array of more than kMaxOutputCells
// cells, or one the machine's memory cannot hold, is a Status, never a crash.
#pragma once

#include <cstdint>
#include <vector>

#include "common/parallel.h"
#include "common/status.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/tokenizer.h"

namespace mbexport {

// Tokens one text (or pair member) may have: rows count tokens in uint32.
inline constexpr size_t kMaxTextTokens = size_t{1} << 30;

struct BatchOptions {
  PostOptions post;
  bool offsets = false;
  bool special_tokens_mask = false;
  int64_t threads = 0;  // <= 0: UsableCpus(); clamped to it
};

// Row-major [rows, width] arrays (offsets: [rows, width, 2]); empty when not requested.
struct BatchResult {
  int64_t rows = 0, width = 0;
  std::vector<int64_t> input_ids, token_type_ids, attention_mask, special_tokens_mask, offsets;
  std::vector<int64_t> overflow_to_sample_mapping;  // [rows]
  std::vector<int64_t> lengths;                     // [rows] tokens before padding
};

// texts_b is null for single texts, else the same length as texts_a. Errors name the
// failing item ("item 3: ..."; "text_pair item 3: ..."), the lowest index first.
Status EncodeBatch(const Tokenizer& tok, const std::vector<TextView>& texts_a, const std::vector<TextView>* texts_b,
                   const BatchOptions& options, BatchResult* out);

// The runtime's contract: for text i, its tokens are ids[cu_seqlens[i]:cu_seqlens[i+1]]
// ([CLS] A [SEP] (B [SEP]) when add_special_tokens), truncated longest_first to
// max_length (< 0: no limit); type_ids alike.
struct PackedResult {
  std::vector<int32_t> ids, type_ids;
  std::vector<int64_t> cu_seqlens;  // [n + 1], cu_seqlens[0] == 0
  int64_t max_len = 0;
};
// Uses post.add_special_tokens, max_length, cls_id and sep_id; truncation is longest_first.
Status EncodePacked(const Tokenizer& tok, const std::vector<TextView>& texts_a, const std::vector<TextView>* texts_b,
                    const PostOptions& post, int64_t threads, PackedResult* out);

}  // namespace mbexport
