// WordPiece: greedy longest-match-first with "##" continuations, in linear time.
//
// Algorithm: LinMaxMatch (Song et al., "Fast WordPiece Tokenization", EMNLP 2021),
// as in tensorflow/text's FastWordpieceTokenizer. The vocabulary is a byte trie in
// which continuation tokens hang below the node for "##" (the suffix root). Every
// node carries a failure link and the failure pops: the tokens the greedy algorithm
// would emit if matching could not continue there. Matching a word walks each byte
// once and follows each failure link at most once per emitted token, so it is
// O(bytes + tokens), independent of the longest vocabulary entry; nothing is
// allocated per token (ids and ranges are appended to caller-owned vectors).
//
// Example (vocab {a, ab, ##c, ##bc}): "abc" -> walk a, ab; 'c' has no edge from "ab",
// so pop F(ab) = [ab] and jump to f(ab) = "##"; walk "##c"; at the end pop [##c].
//
// WordPieceBuilder::Build runs once; WordPiece is immutable afterwards, so one
// instance serves any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace mbexport {

// Half-open byte range [begin, end) of a piece inside the word given to Tokenize.
struct ByteRange {
  uint32_t begin;
  uint32_t end;
};

class WordPiece {
 public:
  // Appends the pieces of `word` (UTF-8, no whitespace, never containing "##" at a
  // continuation point) to ids (and their byte ranges to ranges, when not null).
  // Returns false, leaving ids/ranges unchanged, when the word cannot be covered:
  // the caller then emits [UNK] for the whole word, as the reference does.
  bool Tokenize(std::string_view word, std::vector<int32_t>* ids, std::vector<ByteRange>* ranges) const;

  // The reference algorithm on arbitrary strings (used for tokens kept whole by
  // never_split, which may contain '#'); O(n^2) but only ever sees short specials.
  bool TokenizeSlow(std::string_view word, std::vector<int32_t>* ids, std::vector<ByteRange>* ranges) const;

  // Exact lookup of a vocab entry; -1 when absent.
  int32_t Find(std::string_view token) const;

 private:
  friend class WordPieceBuilder;
  static constexpr uint32_t kNull = 0xFFFFFFFFu;
  static constexpr uint32_t kRoot = 0;
  struct Node {
    uint32_t edge_begin;  // into labels_/targets_, sorted by label
    uint32_t fail;        // failure link, kNull when none
    uint32_t pops_begin;  // into pops_
    uint16_t edge_count;
    uint16_t pops_count;
    int32_t token;        // id of the token ending here (suffix tokens: "##" + path), -1 when none
  };
  // Trie edge lookup: one open-addressing table over all edges, keyed by (node, byte);
  // an entry is (node * 256 + byte + 1) << 32 | child, 0 when empty. One probe usually
  // suffices (load factor <= 1/2), one cache line per step instead of three.
  uint32_t Child(uint32_t node, uint8_t byte) const {
    if (node == kRoot) return root_child_[byte];
    const uint32_t key = node * 256u + byte + 1u;
    for (uint32_t h = (key * 0x9E3779B1u) >> hash_shift_;; h = (h + 1) & hash_mask_) {
      const uint64_t e = edges_[h];
      if (static_cast<uint32_t>(e >> 32) == key) return static_cast<uint32_t>(e);
      if (e == 0) return kNull;
    }
  }

  std::vector<Node> nodes_;
  std::vector<uint8_t> labels_;    // per node, sorted: the builder's view of the edges
  std::vector<uint32_t> targets_;
  std::vector<uint64_t> edges_;    // the runtime's view: the hash table above
  uint32_t hash_shift_ = 32, hash_mask_ = 0;
  std::vector<int32_t> pops_;
  std::vector<uint32_t> piece_len_;  // bytes a token covers in the word (without "##")
  uint32_t root_child_[256];
  uint32_t suffix_root_ = 0;
};

class WordPieceBuilder {
 public:
  // vocab: token strings in id order. Entries containing no bytes, or exactly "##",
  // cannot match a word and are skipped by the trie (they keep their ids).
  static Status Build(const std::vector<std::string>& vocab, std::unique_ptr<const WordPiece>* out);

 private:
  struct ByteTrie;
  // The steps of Build, in order: vocab -> pointer trie (and piece lengths); the trie flattened
  // in BFS order into w's node and edge arrays; the edge hash table; failure links and pops.
  static Status InsertVocab(const std::vector<std::string>& vocab, ByteTrie* trie, WordPiece* w);
  static void Flatten(const ByteTrie& trie, WordPiece* w);
  static Status HashEdges(WordPiece* w);
  static Status LinkFailures(WordPiece* w);
};

}  // namespace mbexport
