"""onnxruntime sessions for exports: device resolution, providers, threads, graph optimizations.

``resolve_device`` turns ``"cpu" | "cuda" | "auto"`` into a device that works here:
``"cuda"`` without a usable GPU raises :class:`CudaUnavailableError` listing every
missing piece (onnxruntime-gpu's CUDA provider, the CUDA runtime library, a GPU);
``"auto"`` falls back to CPU and says so once per process.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import warnings
from functools import lru_cache
from pathlib import Path

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from mbexport.errors import ArgumentError, CudaUnavailableError, ExportDirError

DEVICES = ("cpu", "cuda", "auto")
# What onnxruntime raises: its pybind exception classes (plain Exceptions) and RuntimeError.
ORT_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, *(
    value for value in vars(_ort_state).values() if isinstance(value, type) and issubclass(value, Exception)))
_auto_fallback_warned = False


class CpuFallbackWarning(RuntimeWarning):
    """device="auto" found no usable CUDA and runs on CPU."""


def cuda_library_paths() -> list[str]:
    """libcudart candidates beyond the system ones: $MBEXPORT_CUDART, then the nvidia-cuda-runtime wheels."""
    paths = [os.environ["MBEXPORT_CUDART"]] if os.environ.get("MBEXPORT_CUDART") else []
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        paths += sorted(glob.glob(os.path.join(root, "lib", "libcudart.so*")), reverse=True)
    return paths


@lru_cache(maxsize=1)
def cuda_problems() -> tuple[str, ...]:
    """What stands between this process and running on CUDA; empty when nothing does."""
    from mbexport import _native

    problems = []
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        problems.append(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                        "(pip uninstall onnxruntime && pip install onnxruntime-gpu)")
    try:
        _native.cuda_runtime_info(cuda_library_paths())
    except CudaUnavailableError as error:
        problems.append(str(error))
    return tuple(problems)


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda``; raises for an unusable ``cuda``, warns once when ``auto`` falls back."""
    global _auto_fallback_warned
    if device not in DEVICES:
        raise ArgumentError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return "cpu"
    problems = cuda_problems()
    if not problems:
        return "cuda"
    if device == "cuda":
        raise CudaUnavailableError("device='cuda' is not usable here:\n  - " + "\n  - ".join(problems)
                                   + "\nUse device='cpu', or device='auto' to fall back to CPU.")
    if not _auto_fallback_warned:
        _auto_fallback_warned = True
        warnings.warn("mbexport: device='auto' found no usable CUDA (" + "; ".join(p.splitlines()[0] for p in problems)
                      + "); running on CPU", CpuFallbackWarning, stacklevel=3)
    return "cpu"


def default_threads() -> int:
    """The cores this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def create_session(model_path: Path | str, device: str = "cpu", threads: int | None = None,
                   cuda_stream: int | None = None, optimize: bool = True, spin: bool = True) -> ort.InferenceSession:
    """An InferenceSession for ``model_path`` on a resolved device (``cpu`` or ``cuda``).

    CPU: intra-op threads = ``threads`` (default: all usable cores), one inter-op thread,
    sequential execution, all graph optimizations; ``spin=False`` lets idle intra-op threads
    sleep instead of spin-waiting for work (a server's event loop needs those cores between
    runs). CUDA: the CUDA EP first (CPU EP for the few ops it lacks); ``cuda_stream`` makes it
    compute on that stream, so copies the batcher enqueued there are ordered before the run.
    """
    if device not in ("cpu", "cuda"):
        raise ArgumentError(f"create_session takes a resolved device (cpu or cuda), got {device!r}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ArgumentError(f"threads (--threads) must be an integer >= 1, got {threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3  # errors only: the CUDA EP's memcpy notes are not the user's concern
    providers: list = ["CPUExecutionProvider"]
    if device == "cuda":
        cuda_options = {"device_id": 0}
        if cuda_stream is not None:
            cuda_options["user_compute_stream"] = str(cuda_stream)
        providers.insert(0, ("CUDAExecutionProvider", cuda_options))
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except ORT_ERRORS as e:
        raise ort_error(model_path, "load", e) from None


def ort_error(model_path: Path | str, doing: str, error: BaseException,
              fix: str = "re-run mbexport convert to rebuild the export") -> ExportDirError:
    """An onnxruntime failure as one line naming the model; the first line of its message says why."""
    why = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return ExportDirError(f"{model_path}: onnxruntime could not {doing} it ({why}); {fix}")
