#include "tokenizer/vocab.h"

#include <fstream>
#include <unordered_map>

namespace mbexport {

size_t FindInvalidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    char32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return i;
    i += len;
  }
  return std::string_view::npos;
}

void DecodeUtf8(std::string_view s, std::u32string* out) {
  out->clear();
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      out->push_back(c);
      ++i;
      continue;
    }
    int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    char32_t cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (int k = 1; k < len && i + k < n; ++k) cp = (cp << 6) | (p[i + k] & 0x3F);
    out->push_back(cp);
    i += len;
  }
}

Status ParseVocab(std::string_view bytes, const std::string& name, std::vector<std::string>* tokens) {
  tokens->clear();
  size_t bad = FindInvalidUtf8(bytes);
  if (bad != std::string_view::npos) {
    size_t line = 1;
    for (size_t i = 0; i < bad; ++i) line += bytes[i] == '\n';
    return Status(StatusCode::kVocabError, "vocab file " + name + " is not valid UTF-8 (line " + std::to_string(line) +
                                               ", byte " + std::to_string(bad) + "); re-save it as UTF-8");
  }
  std::unordered_map<std::string_view, size_t> seen;
  size_t i = 0, n = bytes.size();
  while (i < n) {
    size_t j = i;
    while (j < n && bytes[j] != '\n' && bytes[j] != '\r') ++j;
    tokens->emplace_back(bytes.substr(i, j - i));
    if (j < n && bytes[j] == '\r' && j + 1 < n && bytes[j + 1] == '\n') ++j;
    i = j + 1;
  }
  seen.reserve(tokens->size());
  for (size_t k = 0; k < tokens->size(); ++k) {
    auto [it, inserted] = seen.emplace((*tokens)[k], k);
    if (!inserted)
      return Status(StatusCode::kVocabError, "vocab file " + name + " has a duplicate entry '" + (*tokens)[k] +
                                                 "' on lines " + std::to_string(it->second + 1) + " and " +
                                                 std::to_string(k + 1) + "; remove one so every token has one id");
  }
  return Status::Ok();
}

Status ReadVocabFile(const std::string& path, std::vector<std::string>* tokens) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status(StatusCode::kIoError,
                  "vocab file " + path + " cannot be read; pass a BERT directory with vocab.txt or the vocab file itself");
  std::string bytes;
  std::vector<char> chunk(size_t{1} << 16);
  while (in.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || in.gcount() > 0) {
    if (bytes.size() + static_cast<size_t>(in.gcount()) > kMaxVocabFileBytes)
      return Status(StatusCode::kVocabError, "vocab file " + path + " is over " +
                                                 std::to_string(kMaxVocabFileBytes >> 20) +
                                                 " MiB, more than any WordPiece vocabulary; pass the model's vocab.txt");
    bytes.append(chunk.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad())
    return Status(StatusCode::kIoError, "vocab file " + path + " could not be read to its end; check the file");
  return ParseVocab(bytes, path, tokens);
}

}  // namespace mbexport
