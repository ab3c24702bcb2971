#include "tokenizer/post_processor.h"

#include <algorithm>
#include <string>

#include "common/limits.h"

namespace mbexport {

namespace {

// Encoding::truncate: windows of at most max_len tokens, each starting max_len - stride
// after the previous; the first is kept, the rest overflow.
Status Windows(uint32_t n, int64_t max_len, int64_t stride, std::vector<Span>* out) {
  out->clear();
  if (max_len >= n) {
    out->push_back({0, n});
    return Status::Ok();
  }
  if (max_len == 0) {
    out->push_back({0, 0});
    out->push_back({0, n});
    return Status::Ok();
  }
  if (stride >= max_len)
    return Status(StatusCode::kInvalidArgument,
                  "stride (" + std::to_string(stride) + ") must be smaller than the tokens left for the text (" +
                      std::to_string(max_len) + " after special tokens); lower stride or raise max_length");
  const uint32_t step = static_cast<uint32_t>(max_len - stride);
  for (uint32_t start = 0;; start += step) {
    uint32_t stop = static_cast<uint32_t>(std::min<int64_t>(start + max_len, n));
    out->push_back({start, stop});
    if (stop == n) break;
  }
  return Status::Ok();
}

}  // namespace

Status ValidatePostOptions(const PostOptions& opt) {
  if (opt.max_length < -1)
    return Status(StatusCode::kInvalidArgument, "max_length must be >= 0, got " + std::to_string(opt.max_length));
  if (opt.stride < 0)
    return Status(StatusCode::kInvalidArgument, "stride must be >= 0, got " + std::to_string(opt.stride));
  if (opt.pad_to_multiple_of < 0)
    return Status(StatusCode::kInvalidArgument,
                  "pad_to_multiple_of must be >= 0 (0: off), got " + std::to_string(opt.pad_to_multiple_of));
  return Status::Ok();
}

Status PlanRows(uint32_t item, uint32_t na, bool has_b, uint32_t nb, const PostOptions& opt,
                std::vector<RowPlan>* rows) {
  std::vector<Span> wa{{0, na}}, wb{{0, nb}};
  const int64_t added = opt.add_special_tokens ? (has_b ? 3 : 2) : 0;
  if (opt.truncation != Truncation::kNone && opt.max_length >= 0) {
    const int64_t budget = opt.max_length - added;
    if (budget < 0)
      return Status(StatusCode::kInvalidArgument, "max_length " + std::to_string(opt.max_length) +
                                                      " is too low to hold the special tokens; raise max_length");
    const int64_t total = na + (has_b ? nb : 0);
    Status st;
    if (budget == 0) {
      st = Windows(na, 0, opt.stride, &wa);
      if (st.ok() && has_b) st = Windows(nb, 0, opt.stride, &wb);
    } else if (total > budget) {
      const int64_t to_remove = total - budget;
      if (opt.truncation == Truncation::kLongestFirst) {
        if (!has_b) {
          st = Windows(na, total - to_remove, opt.stride, &wa);
        } else {
          int64_t n1 = na, n2 = nb;
          bool swap = n1 > n2;
          if (swap) std::swap(n1, n2);
          n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
          if (n1 + n2 > budget) {
            n1 = budget / 2;
            n2 = n1 + budget % 2;
          }
          if (swap) std::swap(n1, n2);
          st = Windows(na, n1, opt.stride, &wa);
          if (st.ok()) st = Windows(nb, n2, opt.stride, &wb);
        }
      } else {
        const bool first = opt.truncation == Truncation::kOnlyFirst;
        if (!first && !has_b)
          return Status(StatusCode::kInvalidArgument,
                        "truncation='only_second' needs a text_pair; use truncation=True for single texts");
        const uint32_t target = first ? na : nb;
        if (target <= to_remove)
          return Status(StatusCode::kInvalidArgument,
                        std::string("item ") + std::to_string(item) + ": the " + (first ? "first" : "second") +
                            " sequence is too short to remove " + std::to_string(to_remove) +
                            " tokens; use truncation='longest_first' or raise max_length");
        st = Windows(target, target - to_remove, opt.stride, first ? &wa : &wb);
      }
    }
    if (!st.ok()) return st;
  }
  // A pair's windows multiply: every A window meets every B window.
  const uint64_t count = opt.return_overflowing ? wa.size() * (has_b ? wb.size() : 1) : 1;
  if (rows->size() + count > static_cast<uint64_t>(kMaxOutputCells))
    return Status(StatusCode::kInvalidArgument,
                  "item " + std::to_string(item) + ": return_overflowing_tokens with max_length " +
                      std::to_string(opt.max_length) + " and stride " + std::to_string(opt.stride) + " makes " +
                      std::to_string(count) + " rows, more than 2**31 in one call; raise max_length or split the text");
  Status mem = CheckAllocation((rows->size() + count) * sizeof(RowPlan), "the overflowing rows");
  if (!mem.ok()) return mem;
  auto push = [&](const Span& a, const Span& b) {
    uint32_t len = a.size() + (has_b ? b.size() : 0) + static_cast<uint32_t>(added);
    rows->push_back({item, a, has_b ? b : Span{}, has_b, len});
  };
  push(wa[0], wb[0]);
  if (!opt.return_overflowing) return Status::Ok();
  for (size_t i = 1; i < wa.size(); ++i) {
    push(wa[i], wb[0]);
    if (has_b)
      for (size_t j = 1; j < wb.size(); ++j) push(wa[i], wb[j]);
  }
  if (has_b)
    for (size_t j = 1; j < wb.size(); ++j) push(wa[0], wb[j]);
  return Status::Ok();
}

bool PaddedWidth(int64_t longest, const PostOptions& opt, int64_t* width) {
  int64_t w = longest;
  if (opt.padding == Padding::kMaxLength && opt.max_length >= 0) w = std::max(w, opt.max_length);
  if (opt.padding == Padding::kNone) {
    *width = w;
    return true;
  }
  return CheckedRoundUp(w, opt.pad_to_multiple_of, width);
}

}  // namespace mbexport
