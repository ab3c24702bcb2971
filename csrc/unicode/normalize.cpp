#include "unicode/normalize.h"

#include <algorithm>

#include "unicode/unicode_tables.h"

namespace mbexport::unicode {

namespace {

// Hangul syllables decompose and compose algorithmically (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

}  // namespace

// Part k of the n code points c expands to (NFD, or a multi-char lowercase). A char NFC
// composed gets its spans back: the m = end - split chars composed into it (assumed one
// original char each, in order: the usual case) take the last m parts, one char each;
// the starter's span goes to the rest. Any other char's parts share its span.
Char Part(const Char& c, char32_t cp, int k, int n) {
  const int m = static_cast<int>(c.end - c.split);
  if (m <= 0 || m >= n) return {cp, c.start, c.end, c.end};
  if (k < n - m) return {cp, c.start, c.split, c.split};
  const uint32_t at = c.split + static_cast<uint32_t>(k - (n - m));
  return {cp, at, at + 1, at + 1};
}

namespace {

void Decompose(const Char& c, std::vector<Char>* out) {
  if (c.cp >= kSBase && c.cp < kSBase + kSCount) {
    int s = static_cast<int>(c.cp - kSBase);
    const int n = s % kTCount ? 3 : 2;
    out->push_back(Part(c, kLBase + s / kNCount, 0, n));
    out->push_back(Part(c, kVBase + (s % kNCount) / kTCount, 1, n));
    if (n == 3) out->push_back(Part(c, kTBase + s % kTCount, 2, n));
    return;
  }
  const Record& r = Lookup(c.cp);
  if (!(r.flags & kHasNfd)) {
    out->push_back(c);
    return;
  }
  for (int i = 0; i < r.nfd_len; ++i) out->push_back(Part(c, kSeqPool[r.nfd_off + i], i, r.nfd_len));
}

// Stable sort of each run of non-starters by combining class (canonical ordering).
void CanonicalOrder(std::vector<Char>* s) {
  auto ccc = [](const Char& c) { return Lookup(c.cp).ccc; };
  size_t n = s->size();
  for (size_t i = 0; i < n;) {
    if (ccc((*s)[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < n && ccc((*s)[j]) != 0) ++j;
    if (j - i > 1)
      std::stable_sort(s->begin() + i, s->begin() + j,
                       [&](const Char& a, const Char& b) { return ccc(a) < ccc(b); });
    i = j;
  }
}

char32_t Compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  uint64_t key = (static_cast<uint64_t>(a) << 21) | b;
  const uint64_t* end = kCompositionKeys + kNumCompositions;
  const uint64_t* it = std::lower_bound(kCompositionKeys, end, key);
  if (it != end && *it == key) return kCompositionValues[it - kCompositionKeys];
  return 0;
}

bool Has(char32_t cp, uint16_t flag) { return (Lookup(cp).flags & flag) != 0; }

}  // namespace

void Nfd(const std::vector<Char>& in, std::vector<Char>* out) {
  out->clear();
  for (const Char& c : in) Decompose(c, out);
  CanonicalOrder(out);
}

bool MayChangeUnderNfc(const std::vector<Char>& s) {
  for (const Char& c : s)
    if (c.cp >= 0x80 && Has(c.cp, kNfcMaybe)) return true;
  return false;
}

void Nfc(std::vector<Char>* s, std::vector<Char>* scratch) {
  if (!MayChangeUnderNfc(*s)) return;
  Nfd(*s, scratch);
  std::vector<Char>& d = *scratch;
  s->clear();
  if (d.empty()) return;
  size_t starter = 0;
  bool have_starter = Lookup(d[0].cp).ccc == 0;
  int last_class = have_starter ? 0 : 256;
  s->push_back(d[0]);
  for (size_t i = 1; i < d.size(); ++i) {
    const Char& c = d[i];
    int cls = Lookup(c.cp).ccc;
    if (have_starter && (last_class < cls || last_class == 0)) {
      // last_class == 0 here means the starter is the last char written (adjacent).
      char32_t comp = Compose((*s)[starter].cp, c.cp);
      if (comp && (last_class < cls || s->size() == starter + 1)) {
        Char& st = (*s)[starter];
        st.cp = comp;
        st.start = std::min(st.start, c.start);
        st.end = std::max(st.end, c.end);  // st.split stays: the starter's own end
        continue;
      }
    }
    if (cls == 0) {
      starter = s->size();
      have_starter = true;
    }
    last_class = cls;
    s->push_back(c);
  }
}

void Lower(const std::vector<Char>& in, std::vector<Char>* out) {
  out->clear();
  const size_t n = in.size();
  for (size_t i = 0; i < n; ++i) {
    const Char& c = in[i];
    if (c.cp < 0x80) {
      out->push_back({(c.cp >= 'A' && c.cp <= 'Z') ? c.cp + 32 : c.cp, c.start, c.end, c.split});
      continue;
    }
    if (c.cp == 0x3A3) {  // CPython handle_capital_sigma
      size_t j = i;
      char32_t prev = 0;
      bool found = false;
      while (j > 0) {
        --j;
        if (!Has(in[j].cp, kCaseIgnorable)) {
          prev = in[j].cp;
          found = true;
          break;
        }
      }
      bool final_sigma = found && Has(prev, kCased);
      if (final_sigma) {
        size_t k = i + 1;
        while (k < n && Has(in[k].cp, kCaseIgnorable)) ++k;
        final_sigma = k == n || !Has(in[k].cp, kCased);
      }
      out->push_back({final_sigma ? char32_t{0x3C2} : char32_t{0x3C3}, c.start, c.end, c.split});
      continue;
    }
    const Record& r = Lookup(c.cp);
    if (!(r.flags & kHasLower)) {
      out->push_back(c);
      continue;
    }
    if (r.lower_len == 1) {
      out->push_back({kSeqPool[r.lower_off], c.start, c.end, c.split});
      continue;
    }
    for (int k = 0; k < r.lower_len; ++k) out->push_back(Part(c, kSeqPool[r.lower_off + k], k, r.lower_len));
  }
}

void StripAccents(const std::vector<Char>& in, std::vector<Char>* out) {
  Nfd(in, out);
  out->erase(std::remove_if(out->begin(), out->end(), [](const Char& c) { return Has(c.cp, kMn); }),
             out->end());
}

}  // namespace mbexport::unicode
