// Post-processing: truncation (with stride/overflow), special tokens and padding,
// with the semantics of HF's BertTokenizer (tokenizers' truncate_encodings,
// Encoding::truncate, BertProcessing/TemplateProcessing and Encoding::merge_with).
//
//   single: [CLS] A [SEP]            type ids 0...0
//   pair:   [CLS] A [SEP] B [SEP]    type ids 0...0 1...1
//
// Overflow: a truncated sequence of length n with budget m and stride s becomes
// windows [0,m), [m-s, 2m-s), ... until one reaches n. Rows of a pair are ordered as
// merge_with orders them: (A0,B0), then for each Ai>0: (Ai,B0), (Ai,Bj>0)...; then
// (A0,Bj>0).
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"

namespace mbexport {

enum class Truncation { kNone, kLongestFirst, kOnlyFirst, kOnlySecond };
enum class Padding { kNone, kLongest, kMaxLength };

struct PostOptions {
  bool add_special_tokens = true;
  Truncation truncation = Truncation::kNone;
  int64_t max_length = -1;  // -1: none
  int64_t stride = 0;
  bool return_overflowing = false;
  Padding padding = Padding::kNone;
  int64_t pad_to_multiple_of = 0;  // 0: off
  int32_t cls_id = 0, sep_id = 0, pad_id = 0;
};

// Half-open token range of one sequence inside a row.
struct Span {
  uint32_t begin = 0, end = 0;
  uint32_t size() const { return end - begin; }
};

// One output row: which item, and which window of A (and B) it holds.
struct RowPlan {
  uint32_t item;
  Span a, b;
  bool has_b;
  uint32_t length;  // tokens including specials, before padding
};

// kInvalidArgument unless max_length >= -1, stride >= 0 and pad_to_multiple_of >= 0.
Status ValidatePostOptions(const PostOptions& opt);

// Appends the rows of one item (na tokens in A; nb in B when has_b) to rows.
// kInvalidArgument (message says what to change) when the options cannot apply or the
// rows would pass kMaxOutputCells (a pair's overflow windows multiply).
Status PlanRows(uint32_t item, uint32_t na, bool has_b, uint32_t nb, const PostOptions& opt,
                std::vector<RowPlan>* rows);

// Row width after padding, given the longest row; false when it overflows int64.
bool PaddedWidth(int64_t longest, const PostOptions& opt, int64_t* width);

}  // namespace mbexport
