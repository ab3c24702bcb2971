// Unicode facts the BERT normalizer needs, generated from Python's unicodedata by
// csrc/unicode/gen_tables.py (tables in unicode_tables.cpp; do not edit those by hand).
//
// Layout: a two-stage lookup. kStage1[cp >> 8] names a 256-entry block of kStage2,
// whose entry is an index into kRecords; equal blocks and equal records are shared.
// Example: Lookup(U+00C9 'É') has kHasLower|kHasNfd, lower = {U+00E9},
// nfd = {U+0045, U+0301}, ccc = 0.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mbexport::unicode {

// Per code point flags (bit values fixed by gen_tables.py).
enum Flag : uint16_t {
  kControl = 1 << 0,        // removed by BERT _clean_text (Cc/Cf/Cn/Co/Cs except \t\n\r, NUL, U+FFFD)
  kWhitespace = 1 << 1,     // BERT _is_whitespace: becomes a space
  kIsSpace = 1 << 2,        // Python str.isspace(): whitespace_tokenize splits on it
  kPunct = 1 << 3,          // BERT _is_punctuation: P* or ASCII symbol ranges
  kCjk = 1 << 4,            // BERT _is_chinese_char
  kMn = 1 << 5,             // category Mn: dropped by strip_accents
  kCased = 1 << 6,          // Cased, for the final-sigma rule of str.lower()
  kCaseIgnorable = 1 << 7,  // Case_Ignorable, for the final-sigma rule
  kNfcMaybe = 1 << 8,       // a string containing it may change under NFC
  kHasLower = 1 << 9,       // str.lower() of the code point differs from it
  kHasNfd = 1 << 10,        // NFD of the code point differs (Hangul excluded: algorithmic)
};

struct Record {
  uint16_t flags;
  uint8_t ccc;        // canonical combining class
  uint8_t lower_len;  // code points of str.lower() in kSeqPool, 0 when unchanged
  uint32_t lower_off;
  uint8_t nfd_len;    // code points of NFD in kSeqPool, 0 when unchanged
  uint32_t nfd_off;
};

extern const char kUnicodeVersion[];
extern const uint16_t kStage1[];
extern const uint16_t kStage2[];
extern const Record kRecords[];
extern const uint32_t kSeqPool[];
extern const size_t kNumCompositions;
extern const uint64_t kCompositionKeys[];    // (first << 21) | second, sorted
extern const uint32_t kCompositionValues[];  // the primary composite

constexpr char32_t kMaxCodePoint = 0x10FFFF;

inline const Record& Lookup(char32_t cp) {
  if (cp > kMaxCodePoint) cp = 0xFFFF;  // a noncharacter: control, no mappings
  return kRecords[kStage2[static_cast<size_t>(kStage1[cp >> 8]) * 256 + (cp & 0xFF)]];
}

}  // namespace mbexport::unicode
