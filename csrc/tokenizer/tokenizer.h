// Tokenizer: BERT's BasicTokenizer + WordPiece, equal to transformers'
// BertTokenizerLegacy (== Google's tokenization.py plus HF's special-token split).
//
// Stages, in the reference's order, each on one whitespace token at a time (which is
// equivalent to the reference's whole-text passes, see docs/TOKENIZER.md):
//   added-token split (raw text; [CLS] etc. written in the text stay whole)
//   -> clean text (drop NUL, U+FFFD, C* except \t\n\r; whitespace splits)
//   -> CJK spacing -> NFC -> never_split check -> lower (+final sigma) -> strip accents
//   -> punctuation split -> WordPiece (words > max_input_chars_per_word -> [UNK]).
// Offsets are half-open code point ranges into the original text ("start inclusive,
// end exclusive"), as Python's str indexes it.
//
// Built once by Tokenizer::Create; Encode is const and keeps its state in a
// caller-owned Scratch, so one Tokenizer serves any number of threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/status.h"
#include "tokenizer/wordpiece.h"
#include "unicode/normalize.h"

namespace mbexport {

// The reference's word length limit (WordpieceTokenizer.max_input_chars_per_word):
// longer words become one [UNK]; it also bounds WordPiece's per-word work.
constexpr int kDefaultMaxInputCharsPerWord = 100;

struct TokenizerConfig {
  bool lowercase = true;             // do_lower_case
  int strip_accents = -1;            // -1: unset (follows lowercase), 0: False, 1: True
  bool tokenize_chinese_chars = true;
  int max_input_chars_per_word = kDefaultMaxInputCharsPerWord;
  std::string unk_token = "[UNK]";
  // Added tokens split out of the raw text before anything else (HF tokens_trie), with ids.
  std::vector<std::string> added_tokens;
  std::vector<int32_t> added_token_ids;
  // BasicTokenizer never_split: all special tokens plus the config's never_split.
  std::vector<std::string> never_split;
  // The config's never_split alone: such tokens skip WordPiece (looked up whole).
  std::vector<std::string> never_split_whole;
};

// A text as fixed-width code points: width 1 (Latin-1), 2 (UCS-2) or 4 (UTF-32);
// the layout of a CPython str (PEP 393), so no transcoding is needed.
struct TextView {
  const void* data = nullptr;
  size_t length = 0;  // code points
  int width = 1;
};

struct Offset {
  int32_t start;  // inclusive, code points
  int32_t end;    // exclusive
};

// Ids (and offsets when requested) of one text, without special tokens.
struct Encoded {
  std::vector<int32_t> ids;
  std::vector<Offset> offsets;
};

// Per-thread reusable buffers of Encode; create one per thread.
struct Scratch {
  std::vector<unicode::Char> token, tmp_a, tmp_b;
  std::string word;
  std::vector<uint32_t> byte_char;
  std::vector<ByteRange> ranges;
};

class Tokenizer {
 public:
  // kVocabError when the unk token is missing from the vocabulary.
  static Status Create(std::vector<std::string> vocab, TokenizerConfig config, std::unique_ptr<const Tokenizer>* out);

  // Tokenizes one text. kEncodingError on a lone surrogate (message names the position), anywhere
  // in the text. With stop_after, tokenizing ends at the first word boundary (whitespace, a CJK
  // character, an added token) with more than stop_after ids: nothing after a boundary changes the
  // ids before it, so a caller that truncates to stop_after gets the same ids from a huge text at
  // the cost of its prefix (the rest is only scanned for surrogates).
  Status Encode(const TextView& text, bool with_offsets, Encoded* out, Scratch* scratch,
                size_t stop_after = SIZE_MAX) const;
  // UTF-8 convenience (C++ tests and fuzzing); kEncodingError on invalid UTF-8.
  Status EncodeUtf8(const std::string& text, bool with_offsets, Encoded* out, Scratch* scratch) const;

  const std::vector<std::string>& vocab() const { return vocab_; }
  int32_t unk_id() const { return unk_id_; }
  // Vocabulary id of a token string, -1 when absent.
  int32_t TokenToId(const std::string& token) const { return wordpiece_->Find(token); }
  const TokenizerConfig& config() const { return config_; }

 private:
  template <bool kOffsets, typename CharT>
  Status EncodeImpl(const CharT* s, size_t n, Encoded* out, Scratch* sc, size_t stop_after) const;
  template <bool kOffsets>
  void FlushToken(bool nonascii, Encoded* out, Scratch* sc) const;
  template <bool kOffsets>
  void EmitWord(const std::vector<unicode::Char>& chars, size_t a, size_t b, bool slow, Encoded* out,
                Scratch* sc) const;
  bool IsNeverSplit(const std::vector<unicode::Char>& chars, Scratch* sc, bool* whole) const;
  size_t MatchAdded(const void* data, int width, size_t i, size_t n, int32_t* id) const;

  std::vector<std::string> vocab_;
  TokenizerConfig config_;
  bool strip_ = false;  // strip accents (after lowering when lowercase)
  int32_t unk_id_ = -1;
  std::unique_ptr<const WordPiece> wordpiece_;
  std::vector<std::u32string> added_;  // sorted longest first
  std::vector<int32_t> added_ids_;
  uint64_t added_first_ascii_[2] = {0, 0};
  bool added_nonascii_first_ = false;
  std::unordered_set<std::string> never_split_, never_split_whole_;
  std::unordered_set<char32_t> never_split_first_;
  uint64_t never_split_first_ascii_[2] = {0, 0};  // ASCII first chars, a fast pre-check
  uint16_t ascii_flags_[128];
};

}  // namespace mbexport
