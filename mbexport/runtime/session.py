"""onnxruntime sessions for exports: providers, threads, graph optimizations, and what CUDA lacks here.

``cuda_problems`` lists every missing piece for CUDA (onnxruntime-gpu's CUDA provider, the CUDA
runtime library, a GPU); the backends (``runtime/backends``) turn a device string into one that
works here with it.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from mbexport._ort import onnxruntime as ort
from mbexport._ort import onnxruntime_pybind11_state as _ort_state
from mbexport.arguments import check_int
from mbexport.errors import ArgumentError, CudaUnavailableError, ExportDirError
from mbexport.layout import mbexport_home

# What onnxruntime raises: its pybind exception classes (plain Exceptions) and RuntimeError.
ORT_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, *(
    value for value in vars(_ort_state).values() if isinstance(value, type) and issubclass(value, Exception)))
# create_session's devices: the provider lists, most preferred first (CPU always last, for the ops others lack).
PROVIDERS = {"cpu": (), "cuda": ("CUDAExecutionProvider",),
             "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider")}


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
                        "(pip uninstall -y onnxruntime && pip install 'mbexport[gpu]')")
    try:
        _native.cuda_runtime_info(cuda_library_paths())
    except CudaUnavailableError as error:
        problems.append(str(error))
    return tuple(problems)


def default_threads() -> int:
    """The cores this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_threads(threads: int | None) -> int:
    """The compute threads to use: ``threads``, or every usable core for None; ArgumentError otherwise."""
    if threads is not None:
        check_int("threads (--threads)", threads, 1)
    return threads or default_threads()


def create_session(model_path: Path | str, device: str = "cpu", threads: int | None = None,
                   cuda_stream: int | None = None, optimize: bool = True, spin: bool = True) -> ort.InferenceSession:
    """An InferenceSession for ``model_path`` on a resolved device (a key of PROVIDERS).

    CPU: intra-op threads = ``threads`` (default: all usable cores), one inter-op thread,
    sequential execution, all graph optimizations; ``spin=False`` lets idle intra-op threads
    sleep instead of spin-waiting for work (a server's event loop needs those cores between
    runs). CUDA: the CUDA EP first (CPU EP for the few ops it lacks); ``cuda_stream`` makes it
    compute on that stream, so copies the batcher enqueued there are ordered before the run.
    TensorRT: its EP before CUDA's, engines cached under ``$MBEXPORT_HOME/tensorrt``.
    """
    if device not in PROVIDERS:
        raise ArgumentError(f"create_session takes a resolved device ({', '.join(PROVIDERS)}), got {device!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = check_threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3  # errors only: the CUDA EP's memcpy notes are not the user's concern
    providers: list[str | tuple[str, dict[str, str]]] = [
        (name, _provider_options(name, cuda_stream)) for name in PROVIDERS[device]]
    providers.append("CPUExecutionProvider")
    if providers[0] != "CPUExecutionProvider" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # the CUDA/cuDNN libraries of the nvidia-* wheels, when that is where they are
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except ORT_ERRORS as e:
        raise ort_error(model_path, "load", e) from None


def _provider_options(provider: str, cuda_stream: int | None) -> dict[str, str]:
    options = {"device_id": "0"}
    if cuda_stream is not None:
        options["user_compute_stream"] = str(cuda_stream)
    if provider == "TensorrtExecutionProvider":
        options |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(mbexport_home() / "tensorrt")}
    return options


def ort_error(model_path: Path | str, doing: str, error: BaseException,
              fix: str = "re-run mbexport convert to rebuild the export") -> ExportDirError:
    """An onnxruntime failure as one line naming the model; the first line of its message says why."""
    why = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return ExportDirError(f"{model_path}: onnxruntime could not {doing} it ({why}); {fix}")
