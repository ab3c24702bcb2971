// Fuzz target for the native tokenizer core (csrc/tokenizer, csrc/unicode).
//
// With clang: built with -fsanitize=fuzzer this is a libFuzzer target. With gcc (no
// libFuzzer) MBEXPORT_STANDALONE_FUZZ adds a main() that runs seed inputs and a
// seeded mutation loop for a given time, so ASan/UBSan still see millions of inputs:
//   fuzz_tokenizer [seconds] [seed]
//
// Each input drives: a vocabulary built from its first line (the WordPiece builder on
// odd tokens), encoding as UTF-8 and as raw 1/2/4-byte code units (lone surrogates,
// values past U+10FFFF), and a batch with options taken from its first bytes. Checked
// invariants: ids in range, offsets 0 <= start <= end <= length, batch shapes; hostile sizes
// (max_length 2**62, negative stride, ...) come back as kInvalidArgument/kResourceExhausted.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tokenizer/encode_batch.h"
#include "tokenizer/tokenizer.h"

using namespace mbexport;

namespace {

// The input being run, written to crash-input.bin when an invariant fails (to reproduce:
// fuzz_tokenizer 0 0 crash-input.bin).
const uint8_t* g_input = nullptr;
size_t g_input_size = 0;

[[noreturn]] void Fail(const char* what, int line) {
  std::fprintf(stderr, "invariant failed: %s (line %d); input saved to crash-input.bin\n", what, line);
  if (FILE* f = std::fopen("crash-input.bin", "wb")) {
    std::fwrite(g_input, 1, g_input_size, f);
    std::fclose(f);
  }
  std::abort();
}

#define FUZZ_CHECK(cond) \
  do {                   \
    if (!(cond)) Fail(#cond, __LINE__); \
  } while (0)

const std::vector<std::string>& BaseVocab() {
  static const std::vector<std::string> v = {
      "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "ab", "abc", "##b", "##c", "##bc", "#", "##", "###",
      "un", "##aff", "##able", "é", "e", "##é", "σ", "ς", "##σ", "##ς", "中", "i", "##i", "\xcc\x87", "##x", "x",
      ",", ".", "[", "]", "the", "##s", "\xf0\x9f\x98\x80", "ǰ", "가", "##가"};
  return v;
}

void CheckEncoded(const Encoded& e, size_t length, size_t vocab, bool offsets) {
  for (int32_t id : e.ids) FUZZ_CHECK(id >= 0 && static_cast<size_t>(id) < vocab);
  if (offsets) {
    FUZZ_CHECK(e.offsets.size() == e.ids.size());
    for (const Offset& o : e.offsets) FUZZ_CHECK(o.start >= 0 && o.start <= o.end && static_cast<size_t>(o.end) <= length);
  }
}

void RunOne(const uint8_t* data, size_t size) {
  g_input = data;
  g_input_size = size;
  if (size < 4) return;
  const uint8_t flags = data[0], opt = data[1], maxlen = data[2], stride = data[3];
  data += 4;
  size -= 4;
  // Vocabulary: the base plus the first input line's tab-separated fields (when valid UTF-8).
  std::vector<std::string> vocab = BaseVocab();
  size_t nl = 0;
  while (nl < size && nl < 64 && data[nl] != '\n') ++nl;
  if (nl < size && data[nl] == '\n') {
    std::string line(reinterpret_cast<const char*>(data), nl);
    size_t start = 0;
    while (start <= line.size()) {
      size_t tab = line.find('\t', start);
      if (tab == std::string::npos) tab = line.size();
      vocab.push_back(line.substr(start, tab - start));
      start = tab + 1;
    }
  }
  TokenizerConfig cfg;
  cfg.lowercase = flags & 1;
  cfg.strip_accents = (flags >> 1) % 3 - 1;
  cfg.tokenize_chinese_chars = flags & 8;
  cfg.max_input_chars_per_word = (flags & 16) ? 5 : 100;
  cfg.added_tokens = {"[CLS]", "[SEP]", "[MASK]", "\xe4\xb8\xad"};
  cfg.added_token_ids = {2, 3, 4, 24};
  cfg.never_split = {"[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]"};
  if (flags & 32) cfg.never_split_whole = {"##", "a#b"};
  std::unique_ptr<const Tokenizer> tok;
  Status st = Tokenizer::Create(vocab, cfg, &tok);
  if (!st.ok()) {
    FUZZ_CHECK(st.code() == StatusCode::kVocabError || st.code() == StatusCode::kInvalidArgument);
    return;
  }
  const size_t vsize = vocab.size();
  Scratch sc;
  Encoded e;
  std::string text(reinterpret_cast<const char*>(data), size);
  st = tok->EncodeUtf8(text, true, &e, &sc);
  if (st.ok()) CheckEncoded(e, text.size(), vsize, true);
  // Raw code units of each width (surrogates and out-of-range values included).
  for (int width : {1, 2, 4}) {
    size_t n = size / width;
    std::vector<uint8_t> aligned(data, data + n * width);
    TextView v{aligned.data(), n, width};
    Encoded e2;
    st = tok->Encode(v, (opt & 1) != 0, &e2, &sc);
    if (st.ok()) CheckEncoded(e2, n, vsize, (opt & 1) != 0);
    else FUZZ_CHECK(st.code() == StatusCode::kEncodingError && width > 1);
    // Stopping past stop_after ids keeps a prefix of the full ids, longer than stop_after unless whole,
    // and refuses exactly the texts a full read refuses.
    Encoded stopped;
    const size_t stop_after = maxlen % 24;
    Status st_stopped = tok->Encode(v, false, &stopped, &sc, stop_after);
    FUZZ_CHECK(st_stopped.ok() == st.ok());
    if (st.ok()) {
      FUZZ_CHECK(stopped.ids.size() <= e2.ids.size());
      FUZZ_CHECK(std::equal(stopped.ids.begin(), stopped.ids.end(), e2.ids.begin()));
      FUZZ_CHECK(stopped.ids.size() > stop_after || stopped.ids.size() == e2.ids.size());
    }
  }
  // A batch: split the text into up to 8 items, pairs when asked.
  std::vector<uint32_t> cps;
  {
    size_t n = size / 4;
    cps.resize(n);
    std::memcpy(cps.data(), data, n * 4);
    for (uint32_t& c : cps) c %= 0x110000;
    for (uint32_t& c : cps) if (c >= 0xD800 && c <= 0xDFFF) c = 'x';
  }
  std::vector<TextView> a, b;
  size_t items = 1 + opt % 8, per = cps.size() / items + 1;
  for (size_t k = 0; k < items; ++k) {
    size_t s = std::min(cps.size(), k * per), t = std::min(cps.size(), s + per);
    size_t mid = s + (t - s) / 2;
    a.push_back({cps.data() + s, mid - s, 4});
    b.push_back({cps.data() + mid, t - mid, 4});
  }
  BatchOptions bo;
  bo.post.add_special_tokens = opt & 2;
  bo.post.truncation = static_cast<Truncation>((opt >> 2) % 4);
  bo.post.max_length = (opt & 64) ? -1 : maxlen % 40;
  bo.post.stride = stride % 8;
  bo.post.return_overflowing = opt & 16;
  bo.post.padding = static_cast<Padding>((opt >> 5) % 3);
  bo.post.pad_to_multiple_of = stride % 5;
  bo.post.cls_id = 2;
  bo.post.sep_id = 3;
  bo.offsets = flags & 64;
  bo.special_tokens_mask = flags & 128;
  bo.threads = 1 + maxlen % 3;
  if (maxlen >= 240) {  // now and then a hostile size: an error status, never a crash or a huge allocation
    static const int64_t kHostile[] = {-2, -1, INT32_MAX, int64_t{1} << 31, int64_t{1} << 62, INT64_MAX};
    const int64_t h = kHostile[stride % 6];
    switch ((maxlen - 240) % 4) {
      case 0: bo.post.max_length = h; break;
      case 1: bo.post.stride = h; break;
      case 2: bo.post.pad_to_multiple_of = h; break;
      default: bo.threads = h; break;
    }
  }
  BatchResult r;
  st = EncodeBatch(*tok, a, (opt & 128) ? &b : nullptr, bo, &r);
  if (!st.ok()) {
    FUZZ_CHECK(st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kResourceExhausted);
    return;
  }
  FUZZ_CHECK(r.input_ids.size() == static_cast<size_t>(r.rows * r.width));
  FUZZ_CHECK(r.lengths.size() == static_cast<size_t>(r.rows));
  for (int64_t len : r.lengths) FUZZ_CHECK(len <= r.width);
  for (int64_t id : r.input_ids) FUZZ_CHECK(id >= 0 && static_cast<size_t>(id) < vsize);
  PackedResult p;
  st = EncodePacked(*tok, a, nullptr, bo.post, bo.threads, &p);
  if (st.ok()) FUZZ_CHECK(p.cu_seqlens.size() == a.size() + 1 && p.ids.size() == static_cast<size_t>(p.cu_seqlens.back()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  RunOne(data, size);
  return 0;
}

#ifdef MBEXPORT_STANDALONE_FUZZ
int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 10.0;
  std::mt19937_64 rng(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1);
  const std::vector<std::string> seeds = {
      "\x01\x03\x10\x02" "a\tab\t##b\nHello, [CLS] wörld! ΟΔΟΣ İstanbul 中文 e\xcc\x81 \xef\xac\x81 \x00\x7f",
      "\x0f\xff\x05\x03" "un\t##aff\nunaffable abcabc #a##b x[SEP]y \xe2\x80\x8b \xf0\x9f\x98\x80",
      "\x2a\x91\x21\x07" "\nᄀ\xe1\x85\xa1\xe1\x86\xa8 가 ǰ̣ Α\xcc\x81Σ ΣΣ σ\xcd\x85 \xef\xbf\xbd",
      "\x40\x55\x09\x01" "\n" + std::string(300, 'a') + " " + std::string(150, 'x'),
  };
  const char* interesting[] = {"\xcc\x81", "\xce\xa3", "\xc4\xb0", "[CLS]", "##", " ", "\xe4\xb8\xad", "\xed\xa0\x80",
                               "\xf4\x8f\xbf\xbf", "\x00", "\xe1\x84\x80", "\xe1\x85\xa1", "\xcd\x85", "\t"};
  uint64_t execs = 0;
  if (argc > 3) {  // replay files
    for (int k = 3; k < argc; ++k) {
      FILE* f = std::fopen(argv[k], "rb");
      if (!f) continue;
      std::string buf;
      char chunk[4096];
      size_t got;
      while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0) buf.append(chunk, got);
      std::fclose(f);
      RunOne(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
      ++execs;
    }
    std::printf("fuzz_tokenizer: replayed %llu inputs, 0 crashes\n", static_cast<unsigned long long>(execs));
    return 0;
  }
  for (const std::string& s : seeds) {
    RunOne(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    ++execs;
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::string cur;
  while (std::chrono::steady_clock::now() < end) {
    for (int burst = 0; burst < 64; ++burst) {
      cur = seeds[rng() % seeds.size()];
      int edits = 1 + rng() % 8;
      for (int k = 0; k < edits; ++k) {
        size_t pos = cur.empty() ? 0 : rng() % cur.size();
        switch (rng() % 5) {
          case 0: if (!cur.empty()) cur[pos] = static_cast<char>(rng()); break;
          case 1: cur.insert(pos, interesting[rng() % (sizeof interesting / sizeof *interesting)]); break;
          case 2: if (!cur.empty()) cur.erase(pos, 1 + rng() % 4); break;
          case 3: cur.insert(pos, seeds[rng() % seeds.size()].substr(0, rng() % 40)); break;
          default: cur.insert(pos, 1, static_cast<char>(rng() % 128)); break;
        }
      }
      RunOne(reinterpret_cast<const uint8_t*>(cur.data()), cur.size());
      ++execs;
    }
  }
  std::printf("fuzz_tokenizer: %llu executions, 0 crashes\n", static_cast<unsigned long long>(execs));
  return 0;
}
#endif
