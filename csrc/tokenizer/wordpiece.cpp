#include "tokenizer/wordpiece.h"

#include <algorithm>
#include <map>

namespace mbexport {

bool WordPiece::Tokenize(std::string_view word, std::vector<int32_t>* ids, std::vector<ByteRange>* ranges) const {
  const size_t ids_before = ids->size();
  const size_t ranges_before = ranges ? ranges->size() : 0;
  uint32_t pos = 0;  // start of the next emitted piece
  auto pop = [&](uint32_t node) {
    const Node& n = nodes_[node];
    for (uint32_t k = 0; k < n.pops_count; ++k) {
      int32_t id = pops_[n.pops_begin + k];
      ids->push_back(id);
      uint32_t len = piece_len_[id];
      if (ranges) ranges->push_back({pos, pos + len});
      pos += len;
    }
  };
  auto fail = [&]() {
    ids->resize(ids_before);
    if (ranges) ranges->resize(ranges_before);
    return false;
  };
  const auto* w = reinterpret_cast<const uint8_t*>(word.data());
  uint32_t u = kRoot;
  for (size_t i = 0; i < word.size(); ++i) {
    uint32_t v;
    while ((v = Child(u, w[i])) == kNull) {
      if (nodes_[u].fail == kNull) return fail();
      pop(u);
      u = nodes_[u].fail;
    }
    u = v;
  }
  while (u != suffix_root_ && u != kRoot) {
    if (nodes_[u].fail == kNull) return fail();
    pop(u);
    u = nodes_[u].fail;
  }
  return true;
}

int32_t WordPiece::Find(std::string_view token) const {
  if (token.empty()) return -1;
  uint32_t u = kRoot;
  for (unsigned char c : token) {
    u = Child(u, c);
    if (u == kNull) return -1;
  }
  if (u == suffix_root_) return -1;  // "##" itself is never matched as a token here
  return nodes_[u].token;
}

bool WordPiece::TokenizeSlow(std::string_view word, std::vector<int32_t>* ids, std::vector<ByteRange>* ranges) const {
  // Greedy longest-match-first over code point boundaries, as the reference does.
  std::vector<uint32_t> bounds;  // byte offsets of code point starts, plus the end
  for (uint32_t i = 0; i < word.size(); ++i)
    if ((static_cast<unsigned char>(word[i]) & 0xC0) != 0x80) bounds.push_back(i);
  bounds.push_back(static_cast<uint32_t>(word.size()));
  const size_t ids_before = ids->size(), ranges_before = ranges ? ranges->size() : 0;
  size_t start = 0, nb = bounds.size() - 1;
  std::string buf;
  while (start < nb) {
    size_t end = nb;
    int32_t found = -1;
    while (start < end) {
      buf.assign(start > 0 ? "##" : "");
      buf.append(word.substr(bounds[start], bounds[end] - bounds[start]));
      found = Find(buf);
      if (found >= 0) break;
      --end;
    }
    if (found < 0) {
      ids->resize(ids_before);
      if (ranges) ranges->resize(ranges_before);
      return false;
    }
    ids->push_back(found);
    if (ranges) ranges->push_back({bounds[start], bounds[end]});
    start = end;
  }
  return true;
}

// The pointer trie the builder fills first; flattened into WordPiece's arrays afterwards.
struct WordPieceBuilder::ByteTrie {
  struct Node {
    std::map<uint8_t, uint32_t> kids;
    int32_t token = -1;
  };
  std::vector<Node> nodes = std::vector<Node>(1);
  uint32_t suffix_root = 0;  // the node for "##"

  uint32_t Insert(std::string_view s) {
    uint32_t u = 0;
    for (unsigned char c : s) {
      auto it = nodes[u].kids.find(c);
      if (it == nodes[u].kids.end()) {
        const uint32_t v = static_cast<uint32_t>(nodes.size());
        nodes[u].kids.emplace(c, v);
        nodes.emplace_back();
        u = v;
      } else {
        u = it->second;
      }
    }
    return u;
  }
};

Status WordPieceBuilder::Build(const std::vector<std::string>& vocab, std::unique_ptr<const WordPiece>* out) {
  auto w = std::make_unique<WordPiece>();
  ByteTrie trie;
  Status status = InsertVocab(vocab, &trie, w.get());
  if (!status.ok()) return status;
  Flatten(trie, w.get());
  status = HashEdges(w.get());
  if (!status.ok()) return status;
  status = LinkFailures(w.get());
  if (!status.ok()) return status;
  *out = std::move(w);
  return Status::Ok();
}

Status WordPieceBuilder::InsertVocab(const std::vector<std::string>& vocab, ByteTrie* trie, WordPiece* w) {
  trie->suffix_root = trie->Insert("##");
  w->piece_len_.assign(vocab.size(), 0);
  for (size_t id = 0; id < vocab.size(); ++id) {
    const std::string& s = vocab[id];
    if (s.empty() || s == "##") continue;
    const uint32_t node = trie->Insert(s);
    if (trie->nodes[node].token < 0) trie->nodes[node].token = static_cast<int32_t>(id);
    const bool suffix = s.size() > 2 && s[0] == '#' && s[1] == '#';
    w->piece_len_[id] = static_cast<uint32_t>(suffix ? s.size() - 2 : s.size());
  }
  if (trie->nodes.size() >= WordPiece::kNull / 2)
    return Status(StatusCode::kVocabError, "vocabulary is too large for the WordPiece trie");
  return Status::Ok();
}

void WordPieceBuilder::Flatten(const ByteTrie& trie, WordPiece* w) {
  // BFS order: parents before children, so failure links can be computed in one pass.
  std::vector<uint32_t> order{0}, index(trie.nodes.size(), WordPiece::kNull);
  index[0] = 0;
  for (size_t k = 0; k < order.size(); ++k)
    for (auto& [c, v] : trie.nodes[order[k]].kids) {
      index[v] = static_cast<uint32_t>(order.size());
      order.push_back(v);
    }
  w->nodes_.resize(order.size());
  for (size_t k = 0; k < order.size(); ++k) {
    const ByteTrie::Node& b = trie.nodes[order[k]];
    WordPiece::Node& n = w->nodes_[k];
    n.edge_begin = static_cast<uint32_t>(w->labels_.size());
    n.edge_count = static_cast<uint16_t>(b.kids.size());
    for (auto& [c, v] : b.kids) {
      w->labels_.push_back(c);
      w->targets_.push_back(index[v]);
    }
    n.token = b.token;
    n.fail = WordPiece::kNull;
    n.pops_begin = 0;
    n.pops_count = 0;
  }
  w->suffix_root_ = index[trie.suffix_root];
  std::fill(std::begin(w->root_child_), std::end(w->root_child_), WordPiece::kNull);
  for (auto& [c, v] : trie.nodes[0].kids) w->root_child_[c] = index[v];
}

Status WordPieceBuilder::HashEdges(WordPiece* w) {
  // Root edges live in root_child_; every other edge goes in the open-addressing table.
  const size_t node_count = w->nodes_.size();
  size_t slots = 16;
  while (slots < 2 * w->labels_.size()) slots *= 2;
  if (node_count >= (1u << 24)) return Status(StatusCode::kVocabError, "vocabulary is too large for the WordPiece trie");
  w->edges_.assign(slots, 0);
  w->hash_mask_ = static_cast<uint32_t>(slots - 1);
  w->hash_shift_ = 32;
  for (size_t s = slots; s > 1; s >>= 1) --w->hash_shift_;
  for (size_t k = 1; k < node_count; ++k) {
    const WordPiece::Node& n = w->nodes_[k];
    for (uint32_t e = 0; e < n.edge_count; ++e) {
      const uint32_t key = static_cast<uint32_t>(k) * 256u + w->labels_[n.edge_begin + e] + 1u;
      uint32_t h = (key * 0x9E3779B1u) >> w->hash_shift_;
      while (w->edges_[h] != 0) h = (h + 1) & w->hash_mask_;
      w->edges_[h] = (static_cast<uint64_t>(key) << 32) | w->targets_[n.edge_begin + e];
    }
  }
  return Status::Ok();
}

Status WordPieceBuilder::LinkFailures(WordPiece* w) {
  auto& nodes = w->nodes_;
  const uint32_t sroot = w->suffix_root_;
  std::vector<int32_t> scratch;
  for (size_t k = 0; k < nodes.size(); ++k) {
    const WordPiece::Node un = nodes[k];
    for (uint32_t e = 0; e < un.edge_count; ++e) {
      const uint8_t c = w->labels_[un.edge_begin + e];
      const uint32_t v = w->targets_[un.edge_begin + e];
      if (v == sroot) continue;
      WordPiece::Node& vn = nodes[v];
      if (vn.token >= 0) {  // a token ends here: emit it, continue from "##"
        vn.fail = sroot;
        vn.pops_begin = static_cast<uint32_t>(w->pops_.size());
        vn.pops_count = 1;
        w->pops_.push_back(vn.token);
        continue;
      }
      uint32_t z = un.fail;
      scratch.assign(w->pops_.begin() + un.pops_begin, w->pops_.begin() + un.pops_begin + un.pops_count);
      uint32_t next = WordPiece::kNull;
      while (z != WordPiece::kNull && (next = w->Child(z, c)) == WordPiece::kNull) {
        const WordPiece::Node& zn = nodes[z];
        scratch.insert(scratch.end(), w->pops_.begin() + zn.pops_begin,
                       w->pops_.begin() + zn.pops_begin + zn.pops_count);
        z = zn.fail;
      }
      if (z != WordPiece::kNull) {
        if (scratch.size() > 0xFFFF) return Status(StatusCode::kVocabError, "vocabulary failure pops overflow");
        vn.fail = next;
        vn.pops_begin = static_cast<uint32_t>(w->pops_.size());
        vn.pops_count = static_cast<uint16_t>(scratch.size());
        w->pops_.insert(w->pops_.end(), scratch.begin(), scratch.end());
      }
    }
  }
  return Status::Ok();
}

}  // namespace mbexport
