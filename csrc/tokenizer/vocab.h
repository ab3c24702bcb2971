// Vocabulary loading: vocab.txt -> token strings in id order, validated.
//
// Reads lines exactly as transformers' load_vocab does (UTF-8, universal newlines:
// "\n", "\r\n" and "\r" all end a line; a last line without newline counts), but
// refuses what the reference would silently accept wrongly: invalid UTF-8 and
// duplicate entries (which would make two ids share one string).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace mbexport {

// Parses the bytes of a vocab file; `name` is used in messages. kVocabError on
// invalid UTF-8 or duplicates (message names the line and the fix).
Status ParseVocab(std::string_view bytes, const std::string& name, std::vector<std::string>* tokens);
// The most bytes a vocab file may hold: the largest WordPiece vocabularies (250k tokens) take a few MiB.
// A longer file (a FIFO or device that never ends included) is refused before it is held whole.
constexpr size_t kMaxVocabFileBytes = size_t{64} << 20;
// Reads and parses a vocab file; kIoError when it cannot be read, kVocabError past kMaxVocabFileBytes.
Status ReadVocabFile(const std::string& path, std::vector<std::string>* tokens);

// Strict UTF-8 validation as Python's decoder applies it (no overlongs, no
// surrogates, <= U+10FFFF). Returns the byte offset of the first error, or npos.
size_t FindInvalidUtf8(std::string_view s);
// Decodes valid UTF-8 (callers validate first) into code points.
void DecodeUtf8(std::string_view s, std::u32string* out);
// Appends the UTF-8 encoding of cp.
inline void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace mbexport
