"""Embedder and ``mbexport embed`` on the real all-MiniLM-L6-v2 weights.

The reference is transformers' BertModel (fresh, eval mode) with its own tokenizer and
the same pooling, on real multilingual text of mixed lengths (some truncated).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_mbexport

from mbexport import Embedder
from mbexport.errors import (
    ExportDirError,
    InputFileError,
    TokenizerInputError,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MAX_LENGTH = 128
# Real sentences in many scripts (UDHR article 1 and everyday text), plus edge cases.
TEXTS = [
    "All human beings are born free and equal in dignity and rights.",
    "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Straße, Größe, Äpfel.",
    "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
    "Todos los seres humanos nacen libres e iguales en dignidad y derechos.",
    "Все люди рождаются свободными и равными в своем достоинстве и правах.",
    "人人生而自由，在尊严和权利上一律平等。",
    "すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。",
    "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다.",
    "يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق.",
    "सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता और समानता प्राप्त है।",
    "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια και τα δικαιώματα.",
    "Wszyscy ludzie rodzą się wolni i równi pod względem swej godności i swych praw.",
    "Tüm insanlar hür, haysiyet ve haklar bakımından eşit doğarlar.",
    "Mọi người sinh ra đều được tự do và bình đẳng về nhân phẩm và quyền.",
    "",
    "   ",
    "ok",
    "Emoji 🙂 and symbols: ©®™ — “quotes” … 42% of $3.50!",
    "The quick brown fox jumps over the lazy dog. " * 40,  # ~400 tokens: truncated
    "Der schnelle braune Fuchs springt über den faulen Hund. " * 25,  # truncated
    "tokenization of unbelievably antidisestablishmentarianistic words",
    "\tTabs\tand\nnewlines\r\nare whitespace.",
]


@pytest.fixture(scope="module")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mbexport.converter import convert

    return Path(convert(str(minilm_dir), out=tmp_path_factory.mktemp("exp") / "minilm", head="base", parity=False))


@pytest.fixture(scope="module")
def reference(minilm_dir: Path):
    """pooling -> [len(TEXTS), 384] from transformers, plus the number of truncated texts."""
    torch.set_num_threads(2)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    model = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    enc = tokenizer(TEXTS, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc)
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = {
        "cls": out.last_hidden_state[:, 0].numpy(),
        "mean": ((out.last_hidden_state * mask).sum(1) / mask.sum(1)).numpy(),
        "pooler": out.pooler_output.numpy(),
    }
    truncated = sum(len(ids) > MAX_LENGTH for ids in tokenizer(TEXTS)["input_ids"])
    return pooled, truncated


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_matches_transformers(minilm_export: Path, reference, pooling: str) -> None:
    pooled, truncated = reference
    # A small budget and window: many batches and two windows, so order restoration is exercised.
    emb = Embedder(minilm_export, pooling=pooling, normalize=False, max_length=MAX_LENGTH, batch_tokens=256, window=16)
    got = emb.embed(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert min_cosine(got, pooled[pooling]) >= 0.99999
    assert np.abs(got - pooled[pooling]).max() < 1e-3
    assert emb.stats.texts == len(TEXTS) and emb.stats.truncated == truncated >= 2
    assert emb.stats.batches > 2


def test_order_and_batching_do_not_change_results(minilm_export: Path) -> None:
    texts = [TEXTS[i % len(TEXTS)][: 7 * i] for i in range(60)]
    one_batch = Embedder(minilm_export, max_length=64, batch_tokens=64 * 64, window=1000).embed(texts)
    many = Embedder(minilm_export, max_length=64, batch_tokens=64, window=5).embed(texts)
    single = np.stack([Embedder(minilm_export, max_length=64).embed([t])[0] for t in texts[:5]])
    np.testing.assert_allclose(many, one_batch, atol=1e-4)
    np.testing.assert_allclose(single, one_batch[:5], atol=1e-4)


def test_cpu_batches_pad_only_to_their_longest_text(minilm_export: Path) -> None:
    """On CPU a batch is as wide as its longest text (no rounding to 8: CPU kernels gain nothing from it
    and pay for every padded token), so one text, or texts of one length, compute no padding."""
    emb = Embedder(minilm_export, threads=1)
    lengths = [len(ids) for ids in emb.tokenizer(TEXTS[:4])["input_ids"]]
    assert any(n % 8 for n in lengths)  # lengths that rounding to 8 would pad
    for text in TEXTS[:4]:
        emb.embed([text])
    assert emb.stats.padded_tokens == emb.stats.tokens == sum(lengths)

def test_empty_inputs_and_normalize(minilm_export: Path) -> None:
    emb = Embedder(minilm_export, pooling="mean", normalize=True)
    empty = emb.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    assert list(emb.embed_iter(iter([]))) == []
    vectors = emb.embed(["", "", "x"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_embed_iter_streams_lazily_in_order(minilm_export: Path) -> None:
    emb = Embedder(minilm_export, max_length=32, window=8)
    pulled = []

    def source():
        for i in range(50):
            pulled.append(i)
            yield f"text number {i} " * (i % 5)

    stream = emb.embed_iter(source())
    first = next(stream)
    assert first.shape == (8, 384)
    assert len(pulled) <= 16  # the running window and the one being tokenized, no more
    chunks = [first, *stream]
    assert [len(c) for c in chunks] == [8] * 6 + [2]
    whole = Embedder(minilm_export, max_length=32).embed([f"text number {i} " * (i % 5) for i in range(50)])
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-4)


def test_bad_arguments(minilm_export: Path, tmp_path: Path) -> None:
    emb = Embedder(minilm_export)
    assert emb.max_length == 256 and emb.hidden_size == 384
    with pytest.raises(TokenizerInputError, match="single string"):
        emb.embed("hello")
    with pytest.raises(TokenizerInputError, match="text 1 is bytes"):
        emb.embed(["ok", b"bytes"])
    with pytest.raises(ValueError, match="max_length"):
        Embedder(minilm_export, max_length=513)
    with pytest.raises(ValueError, match="pooling"):
        Embedder(minilm_export, pooling="max")
    with pytest.raises(ValueError, match="device"):
        Embedder(minilm_export, device="tpu")
    with pytest.raises(ExportDirError, match="not a directory"):
        Embedder(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in minilm_export.iterdir():
        if f.name != "vocab.txt":
            (broken / f.name).symlink_to(f)
    with pytest.raises(ExportDirError, match="missing vocab.txt"):
        Embedder(broken)
    manifest = json.loads((minilm_export / "mbexport.json").read_text())
    (broken / "vocab.txt").symlink_to(minilm_export / "vocab.txt")
    (broken / "mbexport.json").unlink()
    (broken / "mbexport.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ExportDirError, match="format 99"):
        Embedder(broken)
    (broken / "mbexport.json").write_text(json.dumps({**manifest, "embedding": {**manifest["embedding"],
                                                                                "max_length": 1000}}))
    with pytest.raises(ExportDirError, match=r"max_length 1000 \(from sentence-transformers\) is past the model's "
                                             "512 positions; re-run mbexport convert"):
        Embedder(broken)
    assert Embedder(broken, max_length=128).max_length == 128
    (broken / "mbexport.json").write_text(json.dumps({**manifest, "head": "qa", "outputs": ["start_logits"]}))
    with pytest.raises(ExportDirError, match="--head base"):
        Embedder(broken)


@pytest.mark.parametrize("texts", [None, 5, {"text": "hello"}, {"a", "b"}, np.array("hello")])
def test_texts_that_are_no_ordered_collection_of_str_are_refused(minilm_export: Path, texts) -> None:
    """None, a number, a dict (a JSONL record passed whole), a set (rows would come back in hash order)
    and a 0-d array are a TokenizerInputError (a ValueError), never a raw TypeError or silent rows."""
    emb = Embedder(minilm_export)
    for call in (emb.embed, lambda t: list(emb.embed_iter(t)), emb.tokenize):
        with pytest.raises(TokenizerInputError, match="list, tuple, 1-d array or iterator of str"):
            call(texts)
    with pytest.raises(TokenizerInputError, match="text 1 is int"):
        emb.tokenize(["ok", 3])
    assert emb.stats.texts == 0


@pytest.mark.parametrize("normalize", ["no", "false", 0, 1, np.float32(1.0)])
def test_normalize_must_be_a_bool(minilm_export: Path, normalize) -> None:
    """normalize="no" is truthy: taken as given it would normalise; it is refused instead."""
    with pytest.raises(ValueError, match=r"normalize \(--normalize\) must be True, False or None"):
        Embedder(minilm_export, normalize=normalize)
    emb = Embedder(minilm_export)
    with pytest.raises(ValueError, match="normalize must be True, False or None"):
        emb.embed_tokenized(*emb.tokenize(["hello"]), normalize=normalize)


def test_huge_text_is_embedded_from_the_prefix_that_decides_it(minilm_export: Path, minilm_dir: Path) -> None:
    """A text of 40k characters equals BertModel's truncated reference; one of 200 MB costs the process a
    few MB (the tokenizer stops reading at a word boundary past max_length tokens: 170+ MB before)."""
    text = " ".join(TEXTS[:14]) * 50
    assert len(text) > 40_000
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    model = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    enc = tokenizer([text], truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.inference_mode():
        want = model(**enc).last_hidden_state.mean(1).numpy()
    emb = Embedder(minilm_export, pooling="mean", normalize=False, max_length=MAX_LENGTH)
    got = emb.embed([text])
    assert min_cosine(got, want) >= 0.99999 and np.abs(got - want).max() < 1e-3
    assert emb.stats.truncated == 1 and emb.stats.tokens == MAX_LENGTH

    # Peak RSS of the child's own memory (VmHWM; ru_maxrss would start at this test process's size).
    script = ("import re, sys; from pathlib import Path; from mbexport import Embedder; "
              "peak = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1]); "
              "emb = Embedder(sys.argv[1]); text = 'hello world ' * 17_000_000; before = peak(); "
              "emb.embed([text]); print(peak() - before)")
    result = subprocess.run([sys.executable, "-c", script, str(minilm_export)], capture_output=True, text=True,
                            timeout=300, check=True, cwd=tempfile.gettempdir())
    assert int(result.stdout) < 50_000, result.stdout  # KiB


def test_huge_text_stop_never_splits_an_added_token_with_spaces(minilm_export: Path, tmp_path: Path) -> None:
    """An added token may hold spaces, and the tokenizer stops reading a long text at a space: the space
    inside the added token, the last one kept, must not be taken for that boundary."""
    export = tmp_path / "added"
    export.mkdir()
    for f in minilm_export.iterdir():
        if f.name != "tokenizer_config.json":
            (export / f.name).symlink_to(f)
    added = "a b c d e f g h i j k l m n o p q r s t u v w x y z"
    config = json.loads((minilm_export / "tokenizer_config.json").read_text())
    (export / "tokenizer_config.json").write_text(json.dumps({**config, "added_tokens_decoder": {
        "1": {"content": added, "special": False}}}))
    emb = Embedder(export)
    # 253 tokens (133 over-long words, one [UNK] each), then the added token, then far more text.
    text = ("y" * 120 + " ") * 133 + "x " * 120 + added + " tail" * 5000
    ids = emb.tokenizer([text], truncation=True, max_length=emb.max_length)["input_ids"][0]
    assert ids[-2:] == [1, emb.tokenizer.sep_token_id]  # the added token is the last one kept
    want = emb.embed_tokenized(np.asarray(ids, dtype=np.int32), np.array([0, len(ids)]))
    np.testing.assert_array_equal(emb.embed([text]), want)


def test_int8_export(minilm_dir: Path, minilm_export: Path, tmp_path: Path) -> None:
    from mbexport.converter import convert

    int8 = convert(str(minilm_dir), out=tmp_path / "int8", head="base", precision="int8")
    manifest = json.loads((int8 / "mbexport.json").read_text())
    assert manifest["precision"] == "int8" and manifest["parity"]["passed"]
    assert manifest["op_counts"]["MatMulInteger"] == 6 * 3 + 1  # per layer: attention output, 2 FFN; pooler
    assert manifest["parity"]["outputs"]["pooler_output"]["mean_cosine"] >= 0.99
    assert (int8 / "model.onnx").stat().st_size < 0.8 * (minilm_export / "model.onnx").stat().st_size
    texts = [t for t in TEXTS if t.strip()]
    fp32 = Embedder(minilm_export, pooling="mean", max_length=MAX_LENGTH).embed(texts)
    q = Embedder(int8, pooling="mean", max_length=MAX_LENGTH).embed(texts)
    cosines = (q * fp32).sum(1) / np.linalg.norm(q, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.95, cosines


# -- mbexport embed ---------------------------------------------------------------------------


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return run_mbexport(*args, input=stdin, timeout=120)


def test_cli_txt_to_npy_matches_api(minilm_export: Path, tmp_path: Path) -> None:
    lines = [t.replace("\r", " ").replace("\n", " ") for t in TEXTS]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    result = run_cli("embed", str(minilm_export), str(src), "--out", str(out), "--max-length", "128",
                     "--pooling", "mean")
    assert result.returncode == 0, result.stderr.decode()
    report = result.stdout.decode()
    assert f"{len(lines)} x 384" in report and "2 texts longer than 128" in report
    got = np.load(out)
    np.testing.assert_allclose(got, Embedder(minilm_export, pooling="mean", max_length=128).embed(lines), atol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_cli_jsonl_stdin_bad_lines(minilm_export: Path, tmp_path: Path) -> None:
    good = [{"id": "a", "body": "first"}, {"id": "b", "body": ""}, {"body": "no id"}]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in good[:2])
    data += b'{"id": "bad", "body": "\xff\xfe not utf-8"}\n' + json.dumps(good[2]).encode() + b"\n"
    out = tmp_path / "out.jsonl"
    result = run_cli("embed", str(minilm_export), "-", "--field", "body", "--out", str(out), stdin=data)
    assert result.returncode == 1 and "<stdin>:3: not valid UTF-8" in result.stderr.decode()
    assert "--skip-bad-lines" in result.stderr.decode() and not out.exists()

    result = run_cli("embed", str(minilm_export), "-", "--field", "body", "--out", str(out), "--skip-bad-lines",
                     stdin=data)
    assert result.returncode == 0, result.stderr.decode()
    assert "1 bad lines (first: line 3)" in result.stdout.decode()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", 4]
    want = Embedder(minilm_export).embed(["first", "", "no id"])
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), want, atol=1e-5)


def test_cli_errors(minilm_export: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "x"}\n{"other": 1}\n')
    result = run_cli("embed", str(minilm_export), str(src), "--out", str(tmp_path / "o.npy"))
    assert result.returncode == 1 and "in.jsonl:2: no 'text' field" in result.stderr.decode()
    result = run_cli("embed", str(tmp_path), str(src), "--out", str(tmp_path / "o.npy"))
    assert result.returncode == 1 and "missing model.onnx" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_cli_ctrl_c_leaves_no_partial_output(minilm_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.npy"
    out.write_bytes(b"previous")
    # Python leaves SIGINT ignored when its parent ignored it (a test run started in the background):
    # install the KeyboardInterrupt handler explicitly, as an interactive shell would have.
    cli = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "from mbexport.cli import main; sys.argv[0] = 'mbexport'; main()")
    proc = subprocess.Popen([sys.executable, "-c", cli, "embed", str(minilm_export), "-", "--out", str(out)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tempfile.gettempdir())
    assert proc.stdin is not None
    proc.stdin.write(("a short text\n" * 5000).encode())  # two windows written, then it waits for more
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not any("partial" in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1].decode()
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0, stderr.decode()
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]


@pytest.mark.skipif(os.name != "posix", reason="fd semantics")
def test_input_reader_counts_and_errors(tmp_path: Path) -> None:
    from mbexport.runtime.files import ReadCounts, read_texts

    src = tmp_path / "x.txt"
    src.write_bytes(b"one\r\n\ntwo\n\xc3\x28\nthree")
    counts = ReadCounts()
    assert list(read_texts(str(src), skip_bad_lines=True, counts=counts)) == [(1, "one"), (2, ""), (3, "two"),
                                                                              (5, "three")]
    assert counts.skipped == 1 and counts.first_skipped == 4 and counts.lines == 5
    with pytest.raises(InputFileError, match=r"x.txt:4: not valid UTF-8"):
        list(read_texts(str(src)))
    with pytest.raises(InputFileError, match="unknown input type"):
        list(read_texts(str(tmp_path / "x.csv")))
    src.write_text('{"body": "hello"}\n')  # JSON records in a .txt: --field would silently embed the raw JSON
    with pytest.raises(InputFileError, match="x.txt: --field body reads a .jsonl file"):
        list(read_texts(str(src), field="body"))


def test_input_lines_end_as_in_python_text_mode(tmp_path: Path) -> None:
    """\\n, \\r\\n and a lone \\r end a line (a classic-Mac file is many texts, not one), a leading BOM is
    dropped, other separators (\\v, \\x1c, U+0085, U+2028) and NUL stay inside the text: the lines
    Python's own text-mode reading gives, numbered as the progress total counts them."""
    from mbexport.runtime.files import count_lines, read_texts

    data = "\ufeffone\r\ntwo\rthree\r\rfour\x0bfive\x1c\x85\u2028six\x00seven\n\nlast, no newline"
    src = tmp_path / "x.txt"
    src.write_bytes(data.encode("utf-8"))
    with open(src, encoding="utf-8-sig") as f:
        want = [line.removesuffix("\n") for line in f]
    assert len(want) == 7
    assert [text for _, text in read_texts(str(src))] == want
    assert [number for number, _ in read_texts(str(src))] == list(range(1, 8)) and count_lines(str(src)) == 7
    src.write_bytes(b"a\rb\r")
    assert [text for _, text in read_texts(str(src))] == ["a", "b"] and count_lines(str(src)) == 2


def test_jsonl_records_bom_duplicate_keys_and_non_objects(tmp_path: Path) -> None:
    from mbexport.runtime.files import read_texts

    src = tmp_path / "x.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "first"}\r\n{"text": "second"}\n')
    assert list(read_texts(str(src))) == [("a", "first"), (2, "second")]
    for line, field, why in ((b'{"text": "a", "text": "b"}', "text", "2 'text' keys"),
                             (b'{"id": 1, "id": 2, "text": "a"}', "text", "2 'id' keys"),
                             (b'["text"]', "text", "is an array, not an object"),
                             (b'"text"', "text", "is a string, not an object"),
                             (b'{"a": {"b": "x"}}', "a.b", "no 'a.b' field")):
        src.write_bytes(line + b"\n")
        with pytest.raises(InputFileError, match=f"x.jsonl:1: .*{why}"):
            list(read_texts(str(src), field=field))


def test_jsonl_record_over_the_bound_is_a_bad_line_and_never_kept(tmp_path: Path) -> None:
    """JSON is parsed whole, so a record line past MAX_RECORD_BYTES is refused as a bad line (or skipped
    and counted) while its bytes are read through, not kept: peak memory stays far below the line."""
    import tracemalloc

    from mbexport.runtime.files import MAX_RECORD_BYTES, ReadCounts, read_texts

    src = tmp_path / "big.jsonl"
    with open(src, "wb") as f:
        f.write(b'{"text": "first"}\n{"text": "')
        for _ in range(MAX_RECORD_BYTES // (1 << 20) + 1):
            f.write(b"word " * ((1 << 20) // 5 + 1))
        f.write(b'"}\n{"text": "last"}\n')
    with pytest.raises(InputFileError, match=r"big.jsonl:2: the record is over 64 MiB .* use a \.txt file"):
        list(read_texts(str(src)))
    counts = ReadCounts()
    tracemalloc.start()
    try:
        rows = list(read_texts(str(src), skip_bad_lines=True, counts=counts))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == [(1, "first"), (3, "last")] and (counts.skipped, counts.first_skipped) == (1, 2)
    assert peak < MAX_RECORD_BYTES * 1.5  # the 65 MiB line was never held twice, nor parsed


def test_probe_labels_pair_with_the_rows_embed_reads(tmp_path: Path) -> None:
    """The probe's labels come from the same line reader as the embedded texts: separators that JSON keeps
    unescaped inside strings (U+2028, U+0085, \\v, \\f, \\x1c) split neither, a BOM and CRLF ends are taken,
    blank lines are skipped by both."""
    from mbexport.probe import load_labels
    from mbexport.runtime.files import read_texts

    texts = ["a\u2028b", "c\x85d", "e\x0bf\x0cg", "h\x1ci", "plain"]
    lines = [json.dumps({"text": t, "label": i % 2, "split": "TRAIN"}, ensure_ascii=False) for i, t in enumerate(texts)]
    src = tmp_path / "data.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "\r\n\r\n".join(lines).encode() + b"\n")
    assert [t for _, t in read_texts(str(src), "text")] == texts
    labels, splits = load_labels(src, "label", "split")
    assert labels.tolist() == [i % 2 for i in range(len(texts))] and splits.tolist() == ["train"] * len(texts)
    src.write_bytes(b'{"text": "a", "label": 1, "label": 0}\n')
    with pytest.raises(InputFileError, match="data.jsonl:1: the record has 2 'label' keys"):
        load_labels(src, "label", None)


def test_over_long_line_is_read_without_keeping_its_rest(minilm_export: Path, tmp_path: Path) -> None:
    """A 4 MB line: the reader keeps a prefix that already decides its vector (memory bounded by what the
    model reads, not by the line), and the vector equals the whole line's; the dropped rest is still
    checked to be UTF-8."""
    from mbexport.runtime.files import read_texts

    emb = Embedder(minilm_export)
    line = " ".join(TEXTS[:14]) * 3000 + " tail"
    assert len(line.encode()) > 4_000_000
    src = tmp_path / "long.txt"
    src.write_text(line + "\nshort\n", encoding="utf-8")
    rows = list(read_texts(str(src), enough=emb.over_max_length))
    assert [number for number, _ in rows] == [1, 2] and rows[1][1] == "short"
    kept = rows[0][1]
    assert line.startswith(kept) and len(kept.encode()) <= 64 * 1024
    np.testing.assert_array_equal(emb.embed([kept]), emb.embed([line]))
    assert emb.stats.truncated == 2

    src.write_bytes(line.encode() + b" \xff bad\nshort\n")
    with pytest.raises(InputFileError, match="long.txt:1: not valid UTF-8"):
        list(read_texts(str(src), enough=emb.over_max_length))
