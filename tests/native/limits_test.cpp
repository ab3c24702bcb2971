// C++ tests of the native limits (ctest target limits_test; tests/native/ci.sh runs it under
// ASan+UBSan): checked sizes, ParallelFor's clamping and worker exceptions, the tokenizer's
// refusal of hostile options, ScatterRows on extreme indices, HostBuffer sizes, and CudaStager
// slot bounds and capacity, the stager driven by a host-memory stand-in for libcudart (the real
// one needs a GPU; tests/test_batching.py covers it where one is present).
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "batching/batch.h"
#include "batching/buffers.h"
#include "common/limits.h"
#include "common/parallel.h"
#include "tokenizer/encode_batch.h"
#include "tokenizer/tokenizer.h"

using namespace mbexport;
using namespace mbexport::batching;

static bool Contains(const Status& s, const char* text) { return s.message().find(text) != std::string::npos; }

static void TestCheckedArithmetic() {
  int64_t out = 0;
  CHECK(!CheckedMul<int64_t>(int64_t{1} << 62, 4, &out));
  CHECK(CheckedMul<int64_t>(int64_t{1} << 31, 4, &out) && out == int64_t{1} << 33);
  CHECK(!CheckedAdd<int64_t>(INT64_MAX, 1, &out));
  CHECK(!CheckedSub<int64_t>(INT64_MIN, 1, &out));
  CHECK(CheckedRoundUp(13, 8, &out) && out == 16);
  CHECK(CheckedRoundUp(16, 8, &out) && out == 16);
  CHECK(CheckedRoundUp(5, 0, &out) && out == 5);
  CHECK(!CheckedRoundUp(INT64_MAX - 2, 8, &out));
  CHECK(CheckAllocation(1 << 20, "small").ok());
  const Status big = CheckAllocation(uint64_t{1} << 62, "a test buffer");
  CHECK(big.code() == StatusCode::kResourceExhausted && Contains(big, "a test buffer needs"));
}

static void TestParallelFor() {
  // 5000 threads asked: never more workers than CPUs (nor chunks).
  const size_t workers = WorkerCount(100000, 5000, 16);
  CHECK(workers >= 1 && workers <= static_cast<size_t>(UsableCpus()));
  CHECK(WorkerCount(3, 5000, 16) == 1);
  CHECK(WorkerCount(0, 0, 16) == 1);
  std::vector<int> seen(100000, 0);
  std::mutex mu;
  std::set<size_t> ids;
  Status st = ParallelFor(seen.size(), workers, 16, "test", [&](size_t b, size_t e, size_t w) {
    for (size_t i = b; i < e; ++i) ++seen[i];
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(w);
  });
  CHECK(st.ok());
  for (int v : seen) CHECK(v == 1);
  CHECK(!ids.empty() && *ids.rbegin() < workers);

  // A worker exception comes back as a Status after every thread joined; the others stop early.
  // Several workers (more than CPUs, as WorkerCount never gives) so one that throws is not the caller.
  std::atomic<size_t> done{0};
  st = ParallelFor(100000, 4, 16, "the test loop", [&](size_t b, size_t e, size_t w) {
    if (w == 1 || b == 512) throw std::bad_alloc();
    done += e - b;
  });
  CHECK(st.code() == StatusCode::kResourceExhausted && Contains(st, "the test loop ran out of memory"));
  CHECK(done < 100000);
  st = ParallelFor(64, 2, 16, "the test loop", [&](size_t b, size_t, size_t) {
    if (b == 32) throw std::runtime_error("boom");
  });
  CHECK(st.code() == StatusCode::kInternal && Contains(st, "the test loop failed: boom"));
  st = ParallelFor(64, 2, 16, "x", [&](size_t, size_t, size_t) { throw 42; });
  CHECK(st.code() == StatusCode::kInternal && Contains(st, "unknown exception"));
}

static void TestTokenizerOptions() {
  std::unique_ptr<const Tokenizer> tok;
  CHECK(Tokenizer::Create({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"}, TokenizerConfig{}, &tok).ok());
  std::u32string texts[] = {U"a b", U"b", U"a a a a a"};
  std::vector<TextView> views;
  for (const auto& t : texts) views.push_back({t.data(), t.size(), 4});
  auto run = [&](auto set) {
    BatchOptions o;
    o.post.cls_id = 2;
    o.post.sep_id = 3;
    set(o);
    BatchResult r;
    return EncodeBatch(*tok, views, nullptr, o, &r);
  };
  Status st = run([](BatchOptions& o) {
    o.post.padding = Padding::kMaxLength;
    o.post.truncation = Truncation::kLongestFirst;
    o.post.max_length = int64_t{1} << 62;
  });
  CHECK(st.code() == StatusCode::kInvalidArgument && Contains(st, "3 rows x 4611686018427387904 tokens"));
  st = run([](BatchOptions& o) {
    o.post.padding = Padding::kLongest;
    o.post.pad_to_multiple_of = INT64_MAX;
  });
  CHECK(st.code() == StatusCode::kInvalidArgument && Contains(st, "more than 2**31 cells"));
  st = run([](BatchOptions& o) {  // the row width itself overflows int64
    o.post.padding = Padding::kMaxLength;
    o.post.max_length = INT64_MAX - 1;
    o.post.pad_to_multiple_of = 4;
  });
  CHECK(st.code() == StatusCode::kInvalidArgument && Contains(st, "3 rows x over 2**63 tokens"));
  st = run([](BatchOptions& o) {
    o.post.padding = Padding::kLongest;
    o.post.pad_to_multiple_of = -3;
  });
  CHECK(st.code() == StatusCode::kInvalidArgument && Contains(st, "pad_to_multiple_of must be >= 0"));
  st = run([](BatchOptions& o) {
    o.post.truncation = Truncation::kLongestFirst;
    o.post.max_length = 4;
    o.post.stride = -(int64_t{1} << 32) + 2;
    o.post.return_overflowing = true;
  });
  CHECK(st.code() == StatusCode::kInvalidArgument && Contains(st, "stride must be >= 0"));
  st = run([](BatchOptions& o) {
    o.post.padding = Padding::kLongest;
    o.threads = 5000;
  });
  CHECK(st.ok());
}

static void TestScatterExtremes() {
  const float rows[] = {1, 2};
  float out[4] = {};
  const int64_t idx[][2] = {{INT64_MIN, 1}, {INT64_MAX, -1}, {INT64_MIN, INT64_MAX}, {0, INT64_MIN}};
  for (const auto& [index, base] : idx) {
    CHECK(ScatterRows(rows, &index, 1, 2, base, out, 2).code() == StatusCode::kInvalidArgument);
  }
  const int64_t half_bad[] = {0, 7};
  float two_rows[] = {1, 2, 3, 4};
  CHECK(!ScatterRows(two_rows, half_bad, 2, 2, 0, out, 2).ok());
  for (float v : out) CHECK(v == 0);  // nothing written before the bad index was found
}

static void TestHostBufferSizes() {
  std::unique_ptr<HostBuffer> h;
  CHECK(HostBuffer::Allocate(SIZE_MAX, nullptr, &h).code() == StatusCode::kInvalidArgument);
  CHECK(HostBuffer::Allocate(static_cast<size_t>(INT64_MAX), nullptr, &h).code() == StatusCode::kInvalidArgument);
  CHECK(HostBuffer::Allocate(size_t{1} << 62, nullptr, &h).code() == StatusCode::kResourceExhausted);
  CHECK(h == nullptr);
  CHECK(HostBuffer::Allocate(100, nullptr, &h).ok() && h->size() == 100);
}

// libcudart's entry points over host memory: enough for CudaStager's bookkeeping.
namespace fake {
int DeviceCount(int* n) {
  *n = 1;
  return 0;
}
int SetDevice(int) { return 0; }
int Version(int* v) {
  *v = 12000;
  return 0;
}
const char* ErrorString(int) { return "fake error"; }
int MallocAny(void** p, size_t n) {
  *p = std::malloc(n);
  return *p != nullptr ? 0 : 2;  // 2: cudaErrorMemoryAllocation
}
int FreeAny(void* p) {
  std::free(p);
  return 0;
}
int Copy(void* dst, const void* src, size_t n, int, void*) {
  std::memcpy(dst, src, n);
  return 0;
}
int stream_token = 0, event_token = 0;  // non-null handles
int StreamCreate(void** s, unsigned) {
  *s = &stream_token;
  return 0;
}
int HandleOp(void*) { return 0; }
int EventCreate(void** e, unsigned) {
  *e = &event_token;
  return 0;
}
int EventRecord(void*, void*) { return 0; }
}  // namespace fake

static CudaRuntime FakeCuda() {
  CudaRuntime rt;
  rt.GetDeviceCount = fake::DeviceCount;
  rt.SetDevice = fake::SetDevice;
  rt.RuntimeGetVersion = fake::Version;
  rt.DriverGetVersion = fake::Version;
  rt.GetErrorString = fake::ErrorString;
  rt.MallocHost = fake::MallocAny;
  rt.FreeHost = fake::FreeAny;
  rt.Malloc = fake::MallocAny;
  rt.Free = fake::FreeAny;
  rt.MemcpyAsync = fake::Copy;
  rt.StreamCreateWithFlags = fake::StreamCreate;
  rt.StreamDestroy = fake::HandleOp;
  rt.StreamSynchronize = fake::HandleOp;
  rt.EventCreateWithFlags = fake::EventCreate;
  rt.EventRecord = fake::EventRecord;
  rt.EventSynchronize = fake::HandleOp;
  rt.EventDestroy = fake::HandleOp;
  return rt;
}

static void TestCudaStagerBounds() {
  const CudaRuntime cuda = FakeCuda();
  std::unique_ptr<CudaStager> st;
  CHECK(CudaStager::ValidateSizes(int64_t{1} << 62, 2).code() == StatusCode::kInvalidArgument);
  CHECK(CudaStager::ValidateSizes(64, 0).code() == StatusCode::kInvalidArgument);
  CHECK(CudaStager::ValidateSizes(64, 1 << 20).code() == StatusCode::kInvalidArgument);
  CHECK(CudaStager::Create(&cuda, int64_t{1} << 62, 2, &st).code() == StatusCode::kInvalidArgument);
  CHECK(CudaStager::Create(&cuda, 64, 2, &st).ok());
  CHECK(!st->HasSlot(-1) && st->HasSlot(0) && st->HasSlot(1) && !st->HasSlot(2));

  std::vector<int32_t> ids{101, 5, 102, 101, 6, 7, 8, 102};
  std::vector<int64_t> cu{0, 3, 8};
  Sequences seqs{ids.data(), cu.data(), 2, nullptr};
  Batch batch;
  const int64_t order[] = {1, 0};
  CHECK(GatherBatch(seqs, order, 2, 0, &batch).ok());
  int slot = -1;
  CHECK(st->Stage(batch, 8, 0, &slot).ok() && slot == 0);
  CHECK(st->Rows(0) == 2 && st->Width(0) == 8);
  const auto* staged = static_cast<const int64_t*>(st->DeviceInputIds(0));
  CHECK(staged[0] == 101 && staged[4] == 102 && staged[5] == 0 && staged[8] == 101 && staged[10] == 102 &&
        staged[11] == 0);
  // 2 rows x 64 padded = 128 cells > capacity 64: refused, not written past the buffers.
  const Status over = st->Stage(batch, 64, 0, &slot);
  CHECK(over.code() == StatusCode::kInvalidArgument && Contains(over, "exceeds capacity 64"));
  // A pad multiple that makes rows x width overflow is refused the same way.
  CHECK(st->Stage(batch, INT32_MAX, 0, &slot).code() == StatusCode::kInvalidArgument);
  int64_t cells = 0;
  CHECK(batch.PaddedCells(INT32_MAX, kMaxOutputCells, 24, &cells).code() == StatusCode::kInvalidArgument);
  CHECK(batch.PaddedCells(8, kMaxOutputCells, 24, &cells).ok() && cells == 16);
}

int main() {
  TestCheckedArithmetic();
  TestParallelFor();
  TestTokenizerOptions();
  TestScatterExtremes();
  TestHostBufferSizes();
  TestCudaStagerBounds();
  return mbexport_test::Finish("limits_test");
}
