"""The native batcher (csrc/batching): plans, padded and packed views, buffers, CUDA errors.

Python-level checks compare against a plain numpy construction of the same tensors on
random lengths. The C++ tests (tests/native/batching_test.cpp, limits_test.cpp) are ctest
targets that tests/native/ci.sh runs under ASan/UBSan in CI.
"""

from __future__ import annotations

import numpy as np
import pytest

from mbexport import _native
from mbexport.errors import CudaUnavailableError, MbexportError

CLS, SEP = 101, 102


def corpus(lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Packed ids + cu for sequences of the given lengths (each [CLS] ... [SEP])."""
    rng = np.random.default_rng(seed)
    seqs = [np.concatenate([[CLS], rng.integers(1000, 30000, n - 2), [SEP]]).astype(np.int32) for n in lengths]
    cu = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seqs], out=cu[1:])
    return np.concatenate(seqs) if seqs else np.zeros(0, np.int32), cu, seqs


def truncate(seq: np.ndarray, max_length: int) -> np.ndarray:
    return seq if len(seq) <= max_length else np.concatenate([seq[:max_length - 1], seq[-1:]])


@pytest.mark.parametrize("max_length,batch_tokens,window", [(0, 512, 0), (32, 256, 0), (16, 100, 7), (64, 4096, 3)])
def test_padded_batches_match_numpy(max_length: int, batch_tokens: int, window: int) -> None:
    rng = np.random.default_rng(1)
    lengths = [int(n) for n in rng.integers(2, 90, 57)] + [2, 2, 200]
    ids, cu, seqs = corpus(lengths)
    b = _native.Batcher(ids, cu, max_length=max_length, batch_tokens=batch_tokens, window=window, pad_id=0)
    eff = [len(truncate(s, max_length)) if max_length else len(s) for s in seqs]
    assert b.truncated == sum(max_length > 0 and n > max_length for n in lengths)
    assert b.real_tokens == sum(eff)
    assert sorted(b.order.tolist()) == list(range(len(seqs)))
    assert b.offsets[0] == 0 and b.offsets[-1] == len(seqs) and len(b) == len(b.offsets) - 1
    seen, padded_total = [], 0
    for k in range(len(b)):
        indices, input_ids, mask, types = b.padded(k)
        rows, width = input_ids.shape
        assert width % 8 == 0 and width - 8 < max(eff[i] for i in indices) <= width
        assert rows == 1 or rows * width <= batch_tokens
        if window:  # a batch never crosses a window boundary
            assert len({int(np.where(b.order == i)[0][0]) // window for i in indices}) == 1
        assert input_ids.dtype == mask.dtype == types.dtype == np.int64
        for r, i in enumerate(indices):
            want = truncate(seqs[i], max_length) if max_length else seqs[i]
            assert input_ids[r, :len(want)].tolist() == want.tolist()
            assert (input_ids[r, len(want):] == 0).all()
            assert mask[r].tolist() == [1] * len(want) + [0] * (width - len(want))
        assert not types.any()
        # longest first within the batch
        assert eff[indices[0]] == max(eff[i] for i in indices)
        seen += indices.tolist()
        padded_total += rows * width
    assert sorted(seen) == list(range(len(seqs)))
    assert b.padded_tokens == padded_total


def test_truncation_keeps_head_and_sep() -> None:
    ids, cu, seqs = corpus([10, 4])
    b = _native.Batcher(ids, cu, max_length=5)
    indices, input_ids, mask, _ = b.padded(0)
    assert indices.tolist() == [0, 1] and b.truncated == 1
    assert input_ids[0, :5].tolist() == [*seqs[0][:4].tolist(), SEP]
    assert mask.sum() == 5 + 4


def test_packed_view_has_no_padding_and_agrees_with_padded() -> None:
    rng = np.random.default_rng(2)
    ids, cu, seqs = corpus([int(n) for n in rng.integers(2, 40, 23)])
    types = (np.arange(len(ids)) % 2).astype(np.int32)
    packed = _native.Batcher(ids, cu, batch_tokens=200, packed=True, type_ids=types)
    padded = _native.Batcher(ids, cu, batch_tokens=200, packed=True, type_ids=types)
    assert packed.padded_tokens == packed.real_tokens == len(ids)
    for k in range(len(packed)):
        p_indices, p_ids, p_types, positions, offset, cu_seqlens = packed.packed(k)
        indices, input_ids, mask, tt = padded.padded(k)
        assert p_indices.tolist() == indices.tolist()
        lengths = np.diff(cu_seqlens)
        assert lengths.sum() <= 200 or len(lengths) == 1
        assert offset.shape == input_ids.shape
        assert p_ids.tolist() == np.concatenate([seqs[i] for i in indices]).tolist()
        assert positions.tolist() == [j for n in lengths for j in range(n)]
        # token_offset (onnxruntime's layout): packed token k sits at padded position offset.flat[k]
        assert sorted(offset.ravel().tolist()) == list(range(offset.size))
        real = offset.ravel()[:len(p_ids)]
        assert mask.ravel()[real].all() and not mask.ravel()[offset.ravel()[len(p_ids):]].any()
        assert (input_ids.ravel()[real] == p_ids).all()
        assert (tt.ravel()[real] == p_types).all()


def test_scatter_rows_restores_order() -> None:
    out = np.zeros((4, 3), np.float32)
    _native.scatter_rows(np.arange(6, dtype=np.float32).reshape(2, 3), np.array([13, 11]), out, base=10)
    assert out.tolist() == [[0, 0, 0], [3, 4, 5], [0, 0, 0], [0, 1, 2]]
    with pytest.raises(ValueError, match="outside"):
        _native.scatter_rows(np.zeros((1, 3), np.float32), np.array([14]), out, base=10)


def test_empty_window_and_bad_input() -> None:
    b = _native.Batcher(np.zeros(0, np.int32), np.zeros(1, np.int64))
    assert len(b) == 0 and b.real_tokens == 0
    with pytest.raises(IndexError):
        b.padded(0)
    with pytest.raises(ValueError, match="empty"):  # a sequence without [CLS]/[SEP]
        _native.Batcher(np.array([CLS, SEP], np.int32), np.array([0, 2, 2]))
    with pytest.raises(ValueError, match="cumulative lengths end"):
        _native.Batcher(np.array([CLS, SEP], np.int32), np.array([0, 3]))
    with pytest.raises(ValueError, match="max_length"):
        _native.Batcher(np.array([CLS, SEP], np.int32), np.array([0, 2]), max_length=1)
    with pytest.raises(MbexportError):
        _native.Batcher(np.array([CLS, SEP], np.int32), np.array([0, 2]), batch_tokens=0)


def test_host_buffer_lifecycle() -> None:
    buf = _native.HostBuffer(1000)
    assert not buf.pinned and buf.nbytes == 1000 and buf.ptr % 64 == 0
    view = np.frombuffer(buf, dtype=np.uint8)
    view[:] = 7
    del buf  # the numpy view keeps the memory alive
    assert int(view.sum()) == 7000
    del view
    many = [_native.HostBuffer(1 << 16) for _ in range(64)]
    assert len({b.ptr for b in many}) == 64


def _cuda_usable() -> bool:
    try:
        _native.cuda_runtime_info([])
        return True
    except CudaUnavailableError:
        return False


@pytest.mark.skipif(_cuda_usable(), reason="a usable CUDA runtime is present")
def test_without_cuda_gpu_objects_raise_clear_errors() -> None:
    with pytest.raises(CudaUnavailableError, match="libcudart|no usable GPU") as info:
        _native.cuda_runtime_info(["/nonexistent/libcudart.so.12"])
    assert "device=" in str(info.value)  # says what to do instead
    with pytest.raises(CudaUnavailableError):
        _native.HostBuffer(64, pinned=True)
    with pytest.raises(CudaUnavailableError):
        _native.CudaStager(4096)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_usable(), reason="needs a CUDA GPU")
def test_cuda_stager_round_trip() -> None:
    torch = pytest.importorskip("torch")
    ids, cu, seqs = corpus([5, 17, 9])
    b = _native.Batcher(ids, cu, batch_tokens=256)
    stager = _native.CudaStager(256)
    for _ in range(3):
        indices, slot, lengths = b.stage(0, stager)
    stager.synchronize()
    on_gpu = torch.utils.dlpack.from_dlpack(stager.dlpack(slot, "input_ids")).cpu().numpy()
    assert (on_gpu == b.padded(0)[1]).all()
    assert lengths.tolist() == [len(seqs[i]) for i in indices]
