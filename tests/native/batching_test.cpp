// Standalone tests of csrc/batching (no Python): the ctest target batching_test
// (cmake -DBUILD_TESTING=ON; tests/native/ci.sh builds and runs it under ASan+UBSan in CI).
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "check.h"
#include "batching/batch.h"
#include "batching/buffers.h"
#include "batching/cuda_runtime.h"

using namespace mbexport;
using namespace mbexport::batching;

struct Corpus {
  std::vector<int32_t> ids;
  std::vector<int64_t> cu{0};
  void Add(std::vector<int32_t> seq) {
    ids.insert(ids.end(), seq.begin(), seq.end());
    cu.push_back(static_cast<int64_t>(ids.size()));
  }
  Sequences View() const { return Sequences{ids.data(), cu.data(), static_cast<int64_t>(cu.size()) - 1, nullptr}; }
};

// [CLS]=101 w... [SEP]=102 with `words` word ids 1000+i.
static std::vector<int32_t> Seq(int words, int seed) {
  std::vector<int32_t> s{101};
  for (int i = 0; i < words; ++i) s.push_back(1000 + seed * 10 + i);
  s.push_back(102);
  return s;
}

static void TestPlanPadded() {
  Corpus c;
  const int lens[] = {3, 10, 1, 30, 7, 7, 0, 60};
  for (int i = 0; i < 8; ++i) c.Add(Seq(lens[i], i));
  PlanOptions o;
  o.batch_tokens = 64;
  o.max_length = 32;
  Plan p;
  CHECK(MakePlan(c.View(), o, &p).ok());
  CHECK(p.truncated == 1);  // 62 tokens > 32
  // Longest first; each batch rows x padded(first) <= 64 (or one row).
  CHECK(p.order[0] == 3);  // 32 tokens, ties with the truncated 7: stable
  CHECK(p.order[1] == 7);
  CHECK(p.order[7] == 6);
  std::set<int64_t> seen(p.order.begin(), p.order.end());
  CHECK(seen.size() == 8);
  int64_t padded = 0;
  for (int64_t b = 0; b < p.batches(); ++b) {
    const int64_t rows = p.offsets[b + 1] - p.offsets[b];
    const int64_t width = RoundUp(EffectiveLength(c.View(), p.order[p.offsets[b]], 32), 8);
    CHECK(rows == 1 || rows * width <= 64);
    padded += rows * width;
  }
  CHECK(padded == p.padded_tokens);
  CHECK(p.offsets.back() == 8);
}

static void TestPlanPackedAndWindow() {
  Corpus c;
  for (int i = 0; i < 10; ++i) c.Add(Seq(i, i));  // lengths 2..11
  PlanOptions o;
  o.packed = true;
  o.batch_tokens = 20;
  o.window = 4;
  Plan p;
  CHECK(MakePlan(c.View(), o, &p).ok());
  CHECK(p.padded_tokens == p.real_tokens);
  // Windows [0,4) [4,8) [8,10): no batch crosses a boundary, each window sorted desc.
  CHECK(p.order[0] == 3 && p.order[3] == 0 && p.order[4] == 7 && p.order[8] == 9);
  for (int64_t b = 0; b < p.batches(); ++b) {
    int64_t used = 0;
    for (int64_t k = p.offsets[b]; k < p.offsets[b + 1]; ++k) used += c.cu[p.order[k] + 1] - c.cu[p.order[k]];
    CHECK(p.offsets[b + 1] - p.offsets[b] == 1 || used <= 20);
    CHECK(p.offsets[b] / 4 == (p.offsets[b + 1] - 1) / 4);
  }
}

static void TestGatherPaddedPacked() {
  Corpus c;
  c.Add(Seq(5, 0));  // 7 tokens
  c.Add(Seq(0, 1));  // 2 tokens: [CLS] [SEP] (empty text)
  c.Add(Seq(9, 2));  // 11 tokens -> truncated to 8
  std::vector<int32_t> types(c.ids.size(), 0);
  Sequences s = c.View();
  Batch b;
  const int64_t idx[] = {2, 0, 1};
  CHECK(GatherBatch(s, idx, 3, 8, &b).ok());
  CHECK(b.rows() == 3 && b.max_length == 8 && b.tokens() == 8 + 7 + 2);
  CHECK(b.input_ids[0] == 101 && b.input_ids[6] == 1025 && b.input_ids[7] == 102);  // head kept, [SEP] last
  CHECK(b.position_ids[8] == 0 && b.position_ids[14] == 6);
  const int64_t w = b.PaddedLength(8);
  CHECK(w == 8);
  std::vector<int64_t> ids(3 * w, -1), mask(3 * w, -1), tt(3 * w, -1);
  b.FillPadded(8, 0, ids.data(), mask.data(), tt.data());
  CHECK(ids[2 * w + 0] == 101 && ids[2 * w + 1] == 102 && ids[2 * w + 2] == 0);
  CHECK(mask[2 * w + 1] == 1 && mask[2 * w + 2] == 0 && mask[w + 6] == 1 && mask[w + 7] == 0);
  CHECK(std::accumulate(mask.begin(), mask.end(), int64_t{0}) == b.tokens());
  CHECK(std::accumulate(tt.begin(), tt.end(), int64_t{0}) == 0);
  // token_offset: a permutation of [0, rows*w); packed token k sits at padded position off[k].
  std::vector<int32_t> off(3 * w);
  b.FillTokenOffset(8, off.data());
  std::set<int32_t> uniq(off.begin(), off.end());
  CHECK(uniq.size() == off.size() && *uniq.rbegin() == 3 * w - 1);
  for (int64_t k = 0; k < b.tokens(); ++k) CHECK(mask[off[k]] == 1 && ids[off[k]] == b.input_ids[k]);
  for (int64_t k = b.tokens(); k < 3 * w; ++k) CHECK(mask[off[k]] == 0);
  // Pad multiple 1: no padding beyond the longest row.
  CHECK(b.PaddedLength(1) == 8);
  // Bad input.
  const int64_t bad[] = {3};
  CHECK(GatherBatch(s, bad, 1, 0, &b).code() == StatusCode::kInvalidArgument);
  std::vector<int64_t> cu_bad{0, 3, 3};
  Sequences sb{c.ids.data(), cu_bad.data(), 2, nullptr};
  PlanOptions o;
  Plan p;
  CHECK(MakePlan(sb, o, &p).code() == StatusCode::kInvalidArgument);
  o.max_length = 1;
  CHECK(MakePlan(s, o, &p).code() == StatusCode::kInvalidArgument);
}

// The packed view's token_offset is onnxruntime's (RemovePadding / PackedAttention): its documented
// example, lengths 1, 2, 4 padded to 4 -> 0 4 5 8 9 10 11, then the padding slots 1 2 3 6 7.
static void TestPackedTokenOffsetLayout() {
  Corpus c;
  c.Add({101});                     // 1 token (not a real text, but the layout does not care)
  c.Add({101, 102});                // 2
  c.Add({101, 7, 8, 102});          // 4
  Batch b;
  const int64_t idx[] = {0, 1, 2};
  CHECK(GatherBatch(c.View(), idx, 3, 0, &b).ok());
  CHECK(b.PaddedLength(4) == 4 && b.PaddedLength(1) == 4);
  int64_t cells = 0;
  CHECK(b.PaddedCells(4, INT32_MAX, 4, &cells).ok() && cells == 12);
  std::vector<int32_t> off(12, -1);
  b.FillTokenOffset(4, off.data());
  const std::vector<int32_t> want{0, 4, 5, 8, 9, 10, 11, 1, 2, 3, 6, 7};
  CHECK(off == want);
  CHECK((b.cu_seqlens == std::vector<int32_t>{0, 1, 3, 7}));
  CHECK((b.position_ids == std::vector<int32_t>{0, 0, 1, 0, 1, 2, 3}));
  // Padded to 8: the same real positions in 8-wide rows, then 17 padding slots.
  std::vector<int32_t> off8(24, -1);
  b.FillTokenOffset(8, off8.data());
  CHECK(off8[0] == 0 && off8[1] == 8 && off8[2] == 9 && off8[3] == 16 && off8[6] == 19 && off8[7] == 1);
  CHECK(off8[23] == 23);
}

// Sizes that cannot fit the packed arrays' int32 offsets are refused before anything is allocated.
static void TestPackedLimits() {
  const int32_t ids[] = {101, 102};
  // Two sequences claiming 2^30 + 1 tokens each: cumulative lengths past int32 (ids never read).
  const int64_t huge = (int64_t{1} << 30) + 1;
  std::vector<int64_t> cu{0, huge, 2 * huge};
  Sequences s{ids, cu.data(), 2, nullptr};
  Batch b;
  const int64_t idx[] = {0, 1};
  Status st = GatherBatch(s, idx, 2, 0, &b);
  CHECK(st.code() == StatusCode::kInvalidArgument && st.message().find("int32") != std::string::npos);
  // A packed plan with a budget of INT64_MAX over lengths summing near it: one batch, exact totals.
  PlanOptions o;
  o.packed = true;
  o.batch_tokens = INT64_MAX;
  Plan p;
  std::vector<int64_t> cu2{0, INT64_MAX / 2, INT64_MAX / 2 + INT64_MAX / 4};
  Sequences s2{ids, cu2.data(), 2, nullptr};
  CHECK(MakePlan(s2, o, &p).ok() && p.batches() == 1 && p.real_tokens == cu2[2]);
  // rows x padded past INT32_MAX cells: refused by PaddedCells (which Batcher.packed checks first).
  Batch wide;
  wide.indices = {0, 1, 2};
  wide.cu_seqlens = {0, 2, 4, 6};
  wide.max_length = 2;
  int64_t cells = 0;
  CHECK(wide.PaddedCells(1 << 30, INT32_MAX, 4, &cells).code() == StatusCode::kInvalidArgument);
}

static void TestScatter() {
  const float rows[] = {1, 1, 2, 2, 3, 3};
  const int64_t idx[] = {12, 10, 11};
  float out[6] = {};
  CHECK(ScatterRows(rows, idx, 3, 2, 10, out, 3).ok());
  CHECK(out[0] == 2 && out[2] == 3 && out[4] == 1);
  const int64_t bad[] = {13};
  CHECK(!ScatterRows(rows, bad, 1, 2, 10, out, 3).ok());
}

static void TestBuffersWithoutGpu() {
  std::unique_ptr<HostBuffer> h;
  CHECK(HostBuffer::Allocate(1000, nullptr, &h).ok());
  CHECK(!h->pinned() && h->size() == 1000 && reinterpret_cast<uintptr_t>(h->data()) % 64 == 0);
  static_cast<char*>(h->data())[999] = 1;
  h->Release();
  CHECK(h->released());
  h->Release();  // idempotent
  std::unique_ptr<DeviceBuffer> d;
  CHECK(DeviceBuffer::Allocate(8, nullptr, &d).code() == StatusCode::kCudaUnavailable);
  std::unique_ptr<CudaStager> st;
  CHECK(CudaStager::Create(nullptr, 64, 2, &st).code() == StatusCode::kCudaUnavailable);
  const CudaRuntime* cuda = nullptr;
  Status s = CudaRuntime::Load({"/nonexistent/libcudart.so.12"}, &cuda);
  if (s.ok()) {
    std::printf("CUDA runtime %s, %d device(s): staging round trip\n", cuda->path.c_str(), cuda->device_count);
    Corpus c;
    c.Add(Seq(3, 0));
    c.Add(Seq(20, 1));
    Batch b;
    const int64_t idx[] = {1, 0};
    CHECK(GatherBatch(c.View(), idx, 2, 0, &b).ok());
    CHECK(CudaStager::Create(cuda, 256, 2, &st).ok());
    int slot = -1;
    for (int k = 0; k < 5; ++k) CHECK(st->Stage(b, 8, 0, &slot).ok() && slot == k % 2);
    CHECK(st->Synchronize().ok());
    std::vector<int64_t> back(st->Rows(slot) * st->Width(slot));
    CHECK(cuda->MemcpyAsync(back.data(), st->DeviceInputIds(slot), back.size() * 8, CudaRuntime::kMemcpyDeviceToHost,
                            st->stream()) == 0);
    CHECK(st->Synchronize().ok());
    CHECK(back[0] == 101 && back[21] == 102 && back[24] == 101);
  } else {
    CHECK(s.code() == StatusCode::kCudaUnavailable);
    CHECK(s.message().find("/nonexistent/libcudart.so.12") != std::string::npos ||
          s.message().find("no usable GPU") != std::string::npos);
    CHECK(cuda == nullptr);
    std::printf("no CUDA (expected on CPU machines): %s\n", s.message().substr(0, 80).c_str());
  }
}

// Few mixed lengths (what a server coalesces): one long text must not pad the short ones to
// its length; the cut is the least padded tokens plus batch_overhead per batch.
static void TestPlanLeastCost() {
  Corpus c;
  c.Add(Seq(126, 0));                                  // 128 tokens
  for (int i = 0; i < 12; ++i) c.Add(Seq(7, i + 1));   // 9 tokens, padded to 16
  PlanOptions o;
  o.batch_tokens = 2048;
  o.max_length = 128;
  Plan p;
  CHECK(MakePlan(c.View(), o, &p).ok());  // default overhead 2048 / 128 = 16 tokens
  CHECK(p.batches() == 2);                // [128] [9 x 12]: 128 + 192 padded, not 13 x 128
  CHECK(p.offsets[1] == 1 && p.order[0] == 0);
  CHECK(p.padded_tokens == 128 + 12 * 16);
  o.batch_overhead = 10000;  // a run costs more than any padding: one batch
  CHECK(MakePlan(c.View(), o, &p).ok());
  CHECK(p.batches() == 1 && p.padded_tokens == 13 * 128);
  o.batch_overhead = 0;  // equal widths still share a batch (ties go to fewer runs)
  CHECK(MakePlan(c.View(), o, &p).ok());
  CHECK(p.batches() == 2);
  o.batch_tokens = 64;  // the budget still binds: 9-token rows, 4 per batch
  CHECK(MakePlan(c.View(), o, &p).ok());
  CHECK(p.batches() == 1 + 3);
  o.batch_overhead = INT64_MAX;  // cost overflow is an error, not a wrap
  CHECK(MakePlan(c.View(), o, &p).code() == StatusCode::kInvalidArgument);
  o.batch_overhead = -2;
  CHECK(MakePlan(c.View(), o, &p).code() == StatusCode::kInvalidArgument);
}

int main() {
  TestPlanPadded();
  TestPlanLeastCost();
  TestPlanPackedAndWindow();
  TestGatherPaddedPacked();
  TestPackedTokenOffsetLayout();
  TestPackedLimits();
  TestScatter();
  TestBuffersWithoutGpu();
  return mbexport_test::Finish("batching_test");
}
