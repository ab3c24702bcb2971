// Unicode operations on a token, each equal to its Python counterpart on the
// interpreter that generated the tables: str.lower() (full mappings and the Greek
// final-sigma rule), unicodedata.normalize("NFC"/"NFD"), and BERT's strip-accents.
//
// A token is a vector of Char: a code point plus the half-open span [start, end) of
// original-text code points it came from, so offsets survive every step. A char
// composed by NFC spans all its parts and remembers where its starter ended (split),
// so a later NFD gives each part its own span back: "e" + U+0301 -> "é" -> strip
// accents -> "e" spans only the "e", as HF's Rust offsets do. Other chars made from
// one (NFD of a precomposed char, İ -> i + U+0307) share its span.
#pragma once

#include <cstdint>
#include <vector>

namespace mbexport::unicode {

struct Char {
  char32_t cp;
  uint32_t start;  // first original code point, inclusive
  uint32_t end;    // last original code point, exclusive
  uint32_t split;  // end of the starter's span when NFC composed this char, else == end
};

// unicodedata.normalize("NFD", s): full canonical decomposition, then canonical order.
void Nfd(const std::vector<Char>& in, std::vector<Char>* out);
// unicodedata.normalize("NFC", s). `scratch` is reused storage.
void Nfc(std::vector<Char>* s, std::vector<Char>* scratch);
// s.lower() on the whole token (the final-sigma context is the token itself).
void Lower(const std::vector<Char>& in, std::vector<Char>* out);
// BERT _run_strip_accents: NFD, then drop category Mn.
void StripAccents(const std::vector<Char>& in, std::vector<Char>* out);

// Part k of the n code points c expands to, with its span (see Char::split).
Char Part(const Char& c, char32_t cp, int k, int n);

// Whether any char of s can change under NFC (cheap pre-check; false means NFC(s) == s).
bool MayChangeUnderNfc(const std::vector<Char>& s);

}  // namespace mbexport::unicode
