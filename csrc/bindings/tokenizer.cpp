// Binding of the native tokenizer: Python str -> TextView (no copy: PEP 393 data),
// GIL released for the whole batch, results handed to numpy without copying.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "common/limits.h"
#include "common/parallel.h"
#include "tokenizer/encode_batch.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace py = pybind11;

namespace mbexport::bindings {

namespace {

TextView View(PyObject* o) {
#if PY_VERSION_HEX < 0x030C0000
  if (PyUnicode_READY(o) != 0) throw py::error_already_set();
#endif
  return TextView{PyUnicode_DATA(o), static_cast<size_t>(PyUnicode_GET_LENGTH(o)), PyUnicode_KIND(o)};
}

// Holds references to every item (so a concurrent list mutation cannot free them
// while the GIL is released) and their views.
struct Texts {
  std::vector<py::object> keep;
  std::vector<TextView> views;
};

Texts Collect(const py::handle& seq, const char* what) {
  if (PyUnicode_Check(seq.ptr()) || !PySequence_Check(seq.ptr()))
    throw py::type_error(std::string(what) + " must be a list of str");
  py::sequence s = py::reinterpret_borrow<py::sequence>(seq);
  Texts t;
  const size_t n = s.size();
  t.keep.reserve(n);
  t.views.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    py::object o = s[i];
    if (!PyUnicode_Check(o.ptr()))
      throw py::type_error(std::string(what) + " item " + std::to_string(i) + " is " +
                           std::string(py::str(py::type::of(o).attr("__name__"))) + ", expected str");
    t.views.push_back(View(o.ptr()));
    t.keep.push_back(std::move(o));
  }
  return t;
}

// The second texts of pairs (none when `pairs` is None), one per text of `texts`: the one
// place the counts are checked (TokenizerInputError otherwise).
std::optional<Texts> CollectPairs(const py::handle& pairs, const char* what, const Texts& texts,
                                  const char* texts_what) {
  if (pairs.is_none()) return std::nullopt;
  Texts b = Collect(pairs, what);
  if (b.views.size() != texts.views.size())
    ThrowStatus(Status(StatusCode::kInvalidArgument, std::string(texts_what) + " has " +
                                                         std::to_string(texts.views.size()) + " items but " + what +
                                                         " has " + std::to_string(b.views.size()) +
                                                         "; pass one pair per text"));
  return b;
}

Truncation ParseTruncation(const std::string& s) {
  if (s == "none" || s == "do_not_truncate") return Truncation::kNone;
  if (s == "longest_first") return Truncation::kLongestFirst;
  if (s == "only_first") return Truncation::kOnlyFirst;
  if (s == "only_second") return Truncation::kOnlySecond;
  ThrowStatus(Status(StatusCode::kInvalidArgument, "truncation must be one of longest_first, only_first, "
                                                   "only_second, do_not_truncate; got '" + s + "'"));
}

Padding ParsePadding(const std::string& s) {
  if (s == "none" || s == "do_not_pad") return Padding::kNone;
  if (s == "longest") return Padding::kLongest;
  if (s == "max_length") return Padding::kMaxLength;
  ThrowStatus(Status(StatusCode::kInvalidArgument,
                     "padding must be one of longest, max_length, do_not_pad; got '" + s + "'"));
}

// threads: any int (<= 0: all usable CPUs; more than those is clamped to them).
int64_t ThreadsArg(const py::handle& threads) {
  return IntArg(threads, "threads", std::numeric_limits<int64_t>::min());
}

class PyTokenizer {
 public:
  static std::shared_ptr<PyTokenizer> Make(std::vector<std::string> vocab, bool lowercase,
                                           std::optional<bool> strip_accents, bool tokenize_chinese_chars,
                                           const std::string& unk_token,
                                           const std::vector<std::pair<std::string, int32_t>>& added_tokens,
                                           const std::vector<std::string>& never_split,
                                           const std::vector<std::string>& never_split_whole,
                                           int max_input_chars_per_word) {
    TokenizerConfig c;
    c.lowercase = lowercase;
    c.strip_accents = strip_accents ? (*strip_accents ? 1 : 0) : -1;
    c.tokenize_chinese_chars = tokenize_chinese_chars;
    c.unk_token = unk_token;
    for (auto& [s, id] : added_tokens) {
      c.added_tokens.push_back(s);
      c.added_token_ids.push_back(id);
    }
    c.never_split = never_split;
    c.never_split_whole = never_split_whole;
    c.max_input_chars_per_word = max_input_chars_per_word;
    auto p = std::make_shared<PyTokenizer>();
    std::unique_ptr<const Tokenizer> t;
    Check(Tokenizer::Create(std::move(vocab), std::move(c), &t));
    p->tok_ = std::move(t);
    return p;
  }

  py::tuple Encode(const py::handle& text, bool offsets) const {
    if (!PyUnicode_Check(text.ptr())) throw py::type_error("text must be str");
    TextView v = View(text.ptr());
    Encoded e;
    Status st;
    {
      py::gil_scoped_release release;
      st = CallNoThrow("tokenizing a text", [&] {
        Scratch sc;
        return tok_->Encode(v, offsets, &e, &sc);
      });
    }
    Check(st);
    const py::ssize_t n = static_cast<py::ssize_t>(e.ids.size());
    py::object offs = py::none();
    if (offsets) {
      std::vector<int32_t> flat(e.offsets.size() * 2);
      for (size_t i = 0; i < e.offsets.size(); ++i) {
        flat[2 * i] = e.offsets[i].start;
        flat[2 * i + 1] = e.offsets[i].end;
      }
      offs = ToArray(std::move(flat), {n, 2});
    }
    return py::make_tuple(ToArray(std::move(e.ids), {n}), offs);
  }

  py::dict EncodeBatch(const py::handle& texts, const py::handle& pairs, bool add_special_tokens,
                       const std::string& truncation, const py::handle& max_length, const py::handle& stride,
                       bool return_overflowing_tokens, const std::string& padding,
                       const py::handle& pad_to_multiple_of, int32_t cls_id, int32_t sep_id, int32_t pad_id,
                       bool return_offsets, bool return_special_tokens_mask, const py::handle& threads) const {
    Texts a = Collect(texts, "text");
    std::optional<Texts> b = CollectPairs(pairs, "text_pair", a, "text");
    BatchOptions o;
    o.post.add_special_tokens = add_special_tokens;
    o.post.truncation = ParseTruncation(truncation);
    o.post.max_length = IntArg(max_length, "max_length", -1);
    o.post.stride = IntArg(stride, "stride", 0);
    o.post.return_overflowing = return_overflowing_tokens;
    o.post.padding = ParsePadding(padding);
    o.post.pad_to_multiple_of = IntArg(pad_to_multiple_of, "pad_to_multiple_of", 0);
    o.post.cls_id = cls_id;
    o.post.sep_id = sep_id;
    o.post.pad_id = pad_id;
    o.offsets = return_offsets;
    o.special_tokens_mask = return_special_tokens_mask;
    o.threads = ThreadsArg(threads);
    BatchResult r;
    Status st;
    {
      py::gil_scoped_release release;
      st = CallNoThrow("tokenizing " + std::to_string(a.views.size()) + " texts",
                       [&] { return mbexport::EncodeBatch(*tok_, a.views, b ? &b->views : nullptr, o, &r); });
    }
    Check(st);
    py::dict d;
    const py::ssize_t rows = r.rows, width = r.width;
    d["input_ids"] = ToArray(std::move(r.input_ids), {rows, width});
    d["token_type_ids"] = ToArray(std::move(r.token_type_ids), {rows, width});
    d["attention_mask"] = ToArray(std::move(r.attention_mask), {rows, width});
    if (return_special_tokens_mask) d["special_tokens_mask"] = ToArray(std::move(r.special_tokens_mask), {rows, width});
    if (return_offsets) d["offset_mapping"] = ToArray(std::move(r.offsets), {rows, width, 2});
    d["overflow_to_sample_mapping"] = ToArray(std::move(r.overflow_to_sample_mapping), {rows});
    d["lengths"] = ToArray(std::move(r.lengths), {rows});
    return d;
  }

  py::tuple EncodePacked(const py::handle& texts, const py::handle& pairs, const py::handle& max_length,
                         bool add_special_tokens, int32_t cls_id, int32_t sep_id, const py::handle& threads) const {
    Texts a = Collect(texts, "texts");
    std::optional<Texts> b = CollectPairs(pairs, "pairs", a, "texts");
    PostOptions po;
    po.max_length = IntArg(max_length, "max_length", -1);
    po.add_special_tokens = add_special_tokens;
    po.cls_id = cls_id;
    po.sep_id = sep_id;
    const int64_t workers = ThreadsArg(threads);
    PackedResult r;
    Status st;
    {
      py::gil_scoped_release release;
      st = CallNoThrow("tokenizing " + std::to_string(a.views.size()) + " texts",
                       [&] { return mbexport::EncodePacked(*tok_, a.views, b ? &b->views : nullptr, po, workers, &r); });
    }
    Check(st);
    const py::ssize_t total = static_cast<py::ssize_t>(r.ids.size());
    const py::ssize_t n1 = static_cast<py::ssize_t>(r.cu_seqlens.size());
    return py::make_tuple(ToArray(std::move(r.ids), {total}), ToArray(std::move(r.type_ids), {total}),
                          ToArray(std::move(r.cu_seqlens), {n1}), r.max_len);
  }

  const Tokenizer& tok() const { return *tok_; }

 private:
  std::shared_ptr<const Tokenizer> tok_;
};

}  // namespace

void RegisterTokenizer(py::module_& m) {
  m.def(
      "read_vocab",
      [](const std::string& path) {
        std::vector<std::string> tokens;
        Check(ReadVocabFile(path, &tokens));
        return tokens;
      },
      py::arg("path"), "Read vocab.txt (UTF-8, one token per line); VocabError on bad files.");
  m.def(
      "parse_vocab",
      [](const py::bytes& data, const std::string& name) {
        std::vector<std::string> tokens;
        Check(ParseVocab(std::string(data), name, &tokens));
        return tokens;
      },
      py::arg("data"), py::arg("name") = "<bytes>", "Parse vocab bytes as read_vocab does.");
  m.def("default_threads", &UsableCpus, "Worker threads used when threads <= 0 (and the most any call uses).");
  py::class_<PyTokenizer, std::shared_ptr<PyTokenizer>>(m, "WordPieceTokenizer",
                                                        "Native BERT WordPiece tokenizer (immutable, thread-safe).")
      .def(py::init(&PyTokenizer::Make), py::arg("vocab"), py::kw_only(), py::arg("lowercase") = true,
           py::arg("strip_accents") = py::none(), py::arg("tokenize_chinese_chars") = true,
           py::arg("unk_token") = "[UNK]",
           py::arg("added_tokens") = std::vector<std::pair<std::string, int32_t>>{},
           py::arg("never_split") = std::vector<std::string>{},
           py::arg("never_split_whole") = std::vector<std::string>{},
           py::arg("max_input_chars_per_word") = kDefaultMaxInputCharsPerWord)
      .def_property_readonly("vocab_size", [](const PyTokenizer& t) { return t.tok().vocab().size(); })
      .def_property_readonly("unk_id", [](const PyTokenizer& t) { return t.tok().unk_id(); })
      .def("token_to_id", [](const PyTokenizer& t, const std::string& s) { return t.tok().TokenToId(s); })
      .def("encode", &PyTokenizer::Encode, py::arg("text"), py::arg("offsets") = false)
      .def("encode_batch", &PyTokenizer::EncodeBatch, py::arg("texts"), py::arg("pairs") = py::none(),
           py::kw_only(), py::arg("add_special_tokens") = true, py::arg("truncation") = "do_not_truncate",
           py::arg("max_length") = -1, py::arg("stride") = 0, py::arg("return_overflowing_tokens") = false,
           py::arg("padding") = "do_not_pad", py::arg("pad_to_multiple_of") = 0, py::arg("cls_id") = 0,
           py::arg("sep_id") = 0, py::arg("pad_id") = 0, py::arg("return_offsets") = false,
           py::arg("return_special_tokens_mask") = false, py::arg("threads") = 0)
      .def("encode_packed", &PyTokenizer::EncodePacked, py::arg("texts"), py::arg("pairs") = py::none(),
           py::kw_only(), py::arg("max_length") = -1, py::arg("add_special_tokens") = true, py::arg("cls_id") = 0,
           py::arg("sep_id") = 0, py::arg("threads") = 0);
}

}  // namespace mbexport::bindings
