"""onnxruntime, imported in one place: it comes from the ``cpu`` extra (onnxruntime) or the ``gpu`` extra
(onnxruntime-gpu), which install the same module, so the base package depends on neither and says here
which to install when neither is."""

from __future__ import annotations

from mbexport.errors import MissingExtraError

try:
    import onnxruntime
    from onnxruntime.capi import onnxruntime_pybind11_state
except ImportError as error:
    raise MissingExtraError(f"mbexport needs onnxruntime ({error.name or 'onnxruntime'} is missing); "
                            "pip install 'mbexport[cpu]', or 'mbexport[gpu]' for CUDA (never both)") from None

__all__ = ["onnxruntime", "onnxruntime_pybind11_state"]
