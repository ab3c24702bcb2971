#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>

#include "tokenizer/vocab.h"
#include "unicode/unicode_tables.h"

namespace mbexport {

using unicode::Char;

Status Tokenizer::Create(std::vector<std::string> vocab, TokenizerConfig config,
                         std::unique_ptr<const Tokenizer>* out) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  Status st = WordPieceBuilder::Build(vocab, &t->wordpiece_);
  if (!st.ok()) return st;
  t->unk_id_ = t->wordpiece_->Find(config.unk_token);
  if (t->unk_id_ < 0)
    return Status(StatusCode::kVocabError, "vocabulary has no unknown token '" + config.unk_token +
                                               "'; add it to vocab.txt or pass unk_token=<a token in the vocab>");
  if (config.max_input_chars_per_word < 0)
    return Status(StatusCode::kInvalidArgument, "max_input_chars_per_word must be >= 0");
  if (config.added_tokens.size() != config.added_token_ids.size())
    return Status(StatusCode::kInternal, "added_tokens and added_token_ids differ in length");
  t->strip_ = config.lowercase ? config.strip_accents != 0 : config.strip_accents == 1;
  std::vector<size_t> order(config.added_tokens.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return config.added_tokens[a].size() > config.added_tokens[b].size();
  });
  for (size_t k : order) {
    const std::string& s = config.added_tokens[k];
    if (s.empty()) continue;
    if (FindInvalidUtf8(s) != std::string::npos)
      return Status(StatusCode::kVocabError, "added token is not valid UTF-8");
    std::u32string u;
    DecodeUtf8(s, &u);
    if (u[0] < 128)
      t->added_first_ascii_[u[0] >> 6] |= uint64_t{1} << (u[0] & 63);
    else
      t->added_nonascii_first_ = true;
    t->added_.push_back(std::move(u));
    t->added_ids_.push_back(config.added_token_ids[k]);
  }
  for (const std::string& s : config.never_split) {
    if (s.empty()) continue;
    t->never_split_.insert(s);
    std::u32string u;
    DecodeUtf8(s, &u);
    t->never_split_first_.insert(u[0]);
  }
  for (const std::string& s : config.never_split_whole) {
    if (s.empty()) continue;
    t->never_split_whole_.insert(s);
    t->never_split_.insert(s);
    std::u32string u;
    DecodeUtf8(s, &u);
    t->never_split_first_.insert(u[0]);
  }
  for (char32_t c = 0; c < 128; ++c) t->ascii_flags_[c] = unicode::Lookup(c).flags;
  for (char32_t c : t->never_split_first_)
    if (c < 128) t->never_split_first_ascii_[c >> 6] |= uint64_t{1} << (c & 63);
  t->vocab_ = std::move(vocab);
  t->config_ = std::move(config);
  *out = std::move(t);
  return Status::Ok();
}

size_t Tokenizer::MatchAdded(const void* data, int width, size_t i, size_t n, int32_t* id) const {
  auto at = [&](size_t k) -> char32_t {
    if (width == 1) return static_cast<const uint8_t*>(data)[k];
    if (width == 2) return static_cast<const uint16_t*>(data)[k];
    return static_cast<const uint32_t*>(data)[k];
  };
  for (size_t a = 0; a < added_.size(); ++a) {  // longest first: leftmost-longest match
    const std::u32string& s = added_[a];
    if (s.size() > n - i) continue;
    size_t k = 0;
    while (k < s.size() && at(i + k) == s[k]) ++k;
    if (k == s.size()) {
      *id = added_ids_[a];
      return s.size();
    }
  }
  return 0;
}

bool Tokenizer::IsNeverSplit(const std::vector<Char>& chars, Scratch* sc, bool* whole) const {
  const char32_t first = chars[0].cp;
  if (never_split_.empty()) return false;
  if (first < 128 ? !((never_split_first_ascii_[first >> 6] >> (first & 63)) & 1) : !never_split_first_.count(first))
    return false;
  sc->word.clear();
  for (const Char& c : chars) AppendUtf8(c.cp, &sc->word);
  if (!never_split_.count(sc->word)) return false;
  *whole = never_split_whole_.count(sc->word) > 0;
  return true;
}

template <bool kOffsets>
void Tokenizer::EmitWord(const std::vector<Char>& chars, size_t a, size_t b, bool slow, Encoded* out,
                         Scratch* sc) const {
  auto unk = [&]() {
    out->ids.push_back(unk_id_);
    if constexpr (kOffsets) {
      uint32_t lo = UINT32_MAX, hi = 0;
      for (size_t k = a; k < b; ++k) {
        lo = std::min(lo, chars[k].start);
        hi = std::max(hi, chars[k].end);
      }
      out->offsets.push_back({static_cast<int32_t>(lo), static_cast<int32_t>(hi)});
    }
  };
  if (b - a > static_cast<size_t>(config_.max_input_chars_per_word)) return unk();
  std::string& w = sc->word;
  w.clear();
  if constexpr (kOffsets) sc->byte_char.clear();
  for (size_t k = a; k < b; ++k) {
    AppendUtf8(chars[k].cp, &w);
    if constexpr (kOffsets) sc->byte_char.resize(w.size(), static_cast<uint32_t>(k));
  }
  std::vector<ByteRange>* ranges = kOffsets ? &sc->ranges : nullptr;
  if (kOffsets) sc->ranges.clear();
  bool ok = slow ? wordpiece_->TokenizeSlow(w, &out->ids, ranges) : wordpiece_->Tokenize(w, &out->ids, ranges);
  if (!ok) return unk();
  if constexpr (kOffsets) {
    // Usually the first char's start and the last's end; min/max because canonical
    // reordering (NFD/NFC) can put a later mark first.
    for (const ByteRange& r : sc->ranges) {
      uint32_t lo = UINT32_MAX, hi = 0;
      for (uint32_t k = sc->byte_char[r.begin]; k <= sc->byte_char[r.end - 1]; ++k) {
        lo = std::min(lo, chars[k].start);
        hi = std::max(hi, chars[k].end);
      }
      out->offsets.push_back({static_cast<int32_t>(lo), static_cast<int32_t>(hi)});
    }
  }
}

template <bool kOffsets>
void Tokenizer::FlushToken(bool nonascii, Encoded* out, Scratch* sc) const {
  std::vector<Char>& tok = sc->token;
  if (tok.empty()) return;
  if (nonascii) unicode::Nfc(&tok, &sc->tmp_a);
  if (tok.empty()) return;
  bool whole = false;
  if (IsNeverSplit(tok, sc, &whole)) {
    if (whole) {
      int32_t id = wordpiece_->Find(sc->word);
      out->ids.push_back(id >= 0 ? id : unk_id_);
      if constexpr (kOffsets) {
        uint32_t lo = UINT32_MAX, hi = 0;
        for (const Char& c : tok) {
          lo = std::min(lo, c.start);
          hi = std::max(hi, c.end);
        }
        out->offsets.push_back({static_cast<int32_t>(lo), static_cast<int32_t>(hi)});
      }
    } else {
      EmitWord<kOffsets>(tok, 0, tok.size(), /*slow=*/true, out, sc);
    }
    tok.clear();
    return;
  }
  const std::vector<Char>* cur = &tok;
  if (nonascii) {
    if (config_.lowercase) {
      unicode::Lower(tok, &sc->tmp_a);
      cur = &sc->tmp_a;
      if (strip_) {
        unicode::StripAccents(sc->tmp_a, &sc->tmp_b);
        cur = &sc->tmp_b;
      }
    } else if (strip_) {
      unicode::StripAccents(tok, &sc->tmp_a);
      cur = &sc->tmp_a;
    }
  } else if (config_.lowercase) {
    for (Char& c : tok)
      if (c.cp >= 'A' && c.cp <= 'Z') c.cp += 32;
  }
  const std::vector<Char>& chars = *cur;
  size_t start = 0, n = chars.size();
  for (size_t k = 0; k < n; ++k) {
    char32_t cp = chars[k].cp;
    uint16_t f = cp < 128 ? ascii_flags_[cp] : unicode::Lookup(cp).flags;
    if (f & unicode::kPunct) {
      if (k > start) EmitWord<kOffsets>(chars, start, k, false, out, sc);
      EmitWord<kOffsets>(chars, k, k + 1, false, out, sc);
      start = k + 1;
    }
  }
  if (n > start) EmitWord<kOffsets>(chars, start, n, false, out, sc);
  tok.clear();
}

namespace {

Status LoneSurrogate(char32_t cp, size_t i) {
  char buf[16];
  snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(cp));
  return Status(StatusCode::kEncodingError, "text has a lone surrogate " + std::string(buf) + " at character " +
                                                std::to_string(i) +
                                                "; fix the text (e.g. .encode('utf-8', 'replace').decode())");
}

// The rest of a text Encode stopped reading: refused for the same lone surrogates as a full read.
template <typename CharT>
Status CheckRest(const CharT* s, size_t i, size_t n) {
  if constexpr (sizeof(CharT) > 1)
    for (; i < n; ++i)
      if (s[i] >= 0xD800 && s[i] <= 0xDFFF) return LoneSurrogate(s[i], i);
  return Status::Ok();
}

}  // namespace

template <bool kOffsets, typename CharT>
Status Tokenizer::EncodeImpl(const CharT* s, size_t n, Encoded* out, Scratch* sc, size_t stop_after) const {
  out->ids.clear();
  out->offsets.clear();
  sc->token.clear();
  bool nonascii = false;
  const bool cjk = config_.tokenize_chinese_chars;
  const bool have_added = !added_.empty();
  for (size_t i = 0; i < n;) {
    const char32_t cp = s[i];
    if (sizeof(CharT) > 1 && cp >= 0xD800 && cp <= 0xDFFF) return LoneSurrogate(cp, i);
    int32_t id = 0;
    const size_t added_len =
        have_added && (cp < 128 ? (added_first_ascii_[cp >> 6] >> (cp & 63)) & 1 : added_nonascii_first_)
            ? MatchAdded(s, sizeof(CharT), i, n, &id)
            : 0;
    const uint16_t f = added_len ? 0 : cp < 128 ? ascii_flags_[cp] : unicode::Lookup(cp).flags;
    if (f & unicode::kControl) {
      ++i;
      continue;
    }
    const bool space = f & (unicode::kWhitespace | unicode::kIsSpace);
    const bool cjk_char = cjk && (f & unicode::kCjk);
    if (!added_len && !space && !cjk_char) {  // inside a word
      sc->token.push_back({cp, static_cast<uint32_t>(i), static_cast<uint32_t>(i + 1), static_cast<uint32_t>(i + 1)});
      nonascii |= cp >= 0x80;
      ++i;
      continue;
    }
    // A word boundary: the word so far is complete, and nothing after this point changes its ids.
    FlushToken<kOffsets>(nonascii, out, sc);
    nonascii = false;
    if (added_len) {
      out->ids.push_back(id);
      if constexpr (kOffsets) out->offsets.push_back({static_cast<int32_t>(i), static_cast<int32_t>(i + added_len)});
      i += added_len;
    } else if (cjk_char) {
      sc->token.push_back({cp, static_cast<uint32_t>(i), static_cast<uint32_t>(i + 1), static_cast<uint32_t>(i + 1)});
      FlushToken<kOffsets>(true, out, sc);
      ++i;
    } else {
      ++i;
    }
    if (out->ids.size() > stop_after) return CheckRest(s, i, n);
  }
  FlushToken<kOffsets>(nonascii, out, sc);
  return Status::Ok();
}

Status Tokenizer::Encode(const TextView& text, bool with_offsets, Encoded* out, Scratch* scratch,
                         size_t stop_after) const {
  if (text.length > static_cast<size_t>(INT32_MAX))
    return Status(StatusCode::kInvalidArgument, "text longer than 2**31 characters; split it first");
  switch (text.width) {
    case 1: {
      auto* p = static_cast<const uint8_t*>(text.data);
      return with_offsets ? EncodeImpl<true>(p, text.length, out, scratch, stop_after)
                          : EncodeImpl<false>(p, text.length, out, scratch, stop_after);
    }
    case 2: {
      auto* p = static_cast<const uint16_t*>(text.data);
      return with_offsets ? EncodeImpl<true>(p, text.length, out, scratch, stop_after)
                          : EncodeImpl<false>(p, text.length, out, scratch, stop_after);
    }
    case 4: {
      auto* p = static_cast<const uint32_t*>(text.data);
      return with_offsets ? EncodeImpl<true>(p, text.length, out, scratch, stop_after)
                          : EncodeImpl<false>(p, text.length, out, scratch, stop_after);
    }
    default:
      return Status(StatusCode::kInternal, "TextView width must be 1, 2 or 4");
  }
}

Status Tokenizer::EncodeUtf8(const std::string& text, bool with_offsets, Encoded* out, Scratch* scratch) const {
  size_t bad = FindInvalidUtf8(text);
  if (bad != std::string::npos)
    return Status(StatusCode::kEncodingError, "text is not valid UTF-8 at byte " + std::to_string(bad));
  std::u32string u;
  DecodeUtf8(text, &u);
  TextView v{u.data(), u.size(), 4};
  return Encode(v, with_offsets, out, scratch);
}

}  // namespace mbexport
