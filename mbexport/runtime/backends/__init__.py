"""Runtime backends: what runs a window's batches of an export, behind one small interface.

The Embedder owns everything around a batch (windows, tokenizing, the Batcher's plan, pooling on the
host when the graph's ``sentence_embedding`` does not hold what was asked, scatter back to input
order, stats); a backend owns the session and moving batches through it::

    backend = BACKENDS["cuda"](model_path, threads=None, capacity=65536)   # open the export
    backend.computes                                     # the arithmetic it runs an fp32 export in
    backend.inputs                                       # the graph's input names
    for indices, rows, mask in backend.batches(batcher, "sentence_embedding"):
        ...                                              # one graph output per batch, on the host

One module per backend in this package, each a ``Backend`` subclass decorated with ``@register``
(every module here is imported with the package, so adding a backend is adding its module). A device
string names a backend; ``auto`` is the best one usable here (CUDA, else CPU, said once).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mbexport.errors import ArgumentError, CudaUnavailableError, ExportDirError, MissingExtraError
from mbexport.runtime.session import ort_error

# (row indices into the window, the output for those rows, their attention mask)
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]
BACKENDS: dict[str, type[Backend]] = {}  # filled by the modules of this package, imported at the end
AUTO_ORDER = ("cuda", "cpu")  # what device="auto" tries, in order
# The Embedder's ``compute``: the arithmetic an fp32 export runs in (the reduced ones need a backend that has them).
COMPUTES = ("fp32", "bf16", "int8")
log = logging.getLogger("mbexport")
_auto_fallback_said = False


class Backend(ABC):
    """Runs the batches of a window on one device; subclasses set ``name`` and ``device``."""

    name: ClassVar[str]
    device: ClassVar[str] = "cpu"  # where the model computes ("cpu" or "cuda"): picks the default token budget
    # Whether it runs an export's padding-free graph (layout.PACKED_MODEL) when the export has one: the
    # Embedder then opens that graph and plans packed batches (onnxruntime has PackedAttention on CUDA only).
    runs_packed: ClassVar[bool] = False
    computes: ClassVar[tuple[str, ...]] = ("fp32",)  # the COMPUTES it runs; for "int8", model_path is the int8 model
    inputs: list[str]  # the graph's input names (older exports may lack token_type_ids)

    def __init__(self, model_path: Path, threads: int | None, capacity: int, spin: bool = True,
                 compute: str = "fp32") -> None:
        """``capacity``: the most padded tokens one batch holds (sizes device staging buffers); ``spin``:
        whether idle onnxruntime threads spin-wait (see ``create_session``); ``compute``: one of ``computes``."""
        self.model_path = model_path
        self.compute = compute

    @classmethod
    def problems(cls) -> tuple[str, ...]:
        """What stands between this process and this backend; empty when it is usable."""
        return ()

    @abstractmethod
    def batches(self, batcher: Any, output: str) -> Iterator[Batch]:
        """Every batch of ``batcher`` (a ``_native.Batcher``) run, in order, reading graph output ``output``."""

    def run_failed(self, error: BaseException) -> ExportDirError:
        return ort_error(self.model_path, "run", error, "lower --batch-tokens or re-run mbexport convert")


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: makes ``cls`` the backend of device ``cls.name``."""
    BACKENDS[cls.name] = cls
    return cls


def check_compute(compute: str, device: str) -> None:
    """ArgumentError unless the backend of a resolved ``device`` runs ``compute``, naming one that does."""
    if compute not in COMPUTES:
        raise ArgumentError(f"compute (--compute) must be one of {', '.join(COMPUTES)}, got {compute!r}")
    if compute not in BACKENDS[device].computes:
        runs = [name for name, cls in BACKENDS.items() if compute in cls.computes]
        raise ArgumentError(f"compute={compute!r} runs on device={runs[0]!r} (pip install 'mbexport[{runs[0]}]'), "
                            f"not device={device!r}; pass device={runs[0]!r} or compute='fp32'")


def resolve_device(device: str) -> str:
    """A backend usable here for ``device``: raises naming every missing piece for an unusable named
    backend; ``auto`` takes the first usable of AUTO_ORDER and says once per process when that is not CUDA."""
    global _auto_fallback_said
    if device not in DEVICES:
        raise ArgumentError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "auto":
        problems = BACKENDS[device].problems()
        if problems and BACKENDS[device].device != "cuda":  # a CPU backend lacks nothing but its extra
            raise MissingExtraError(f"device={device!r} is not usable here: {'; '.join(problems)}")
        if problems:
            raise CudaUnavailableError(f"device={device!r} is not usable here:\n  - " + "\n  - ".join(problems)
                                       + "\nUse device='cpu', or device='auto' to fall back to CPU.")
        return device
    best = AUTO_ORDER[0]
    problems = BACKENDS[best].problems()
    if not problems:
        return best
    if not _auto_fallback_said:
        _auto_fallback_said = True
        log.warning("mbexport: device='auto' found no usable CUDA (%s); running on CPU",
                    "; ".join(p.splitlines()[0] for p in problems))
    return "cpu"


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
DEVICES = (*sorted(BACKENDS), "auto")
