"""onnxruntime's TensorRT execution provider, where onnxruntime-gpu was built with it and TensorRT's
libraries load: the CUDA backend's staging and IO binding, with TensorRT first in the provider list
(it takes the subgraphs it supports; contrib ops stay on CUDA). Engines are cached under
``$MBEXPORT_HOME/tensorrt`` so each input shape is built once per machine."""

from __future__ import annotations

from mbexport._ort import onnxruntime as ort
from mbexport.runtime.backends import register
from mbexport.runtime.backends.cuda import OrtCuda
from mbexport.runtime.session import cuda_problems


@register
class OrtTensorRT(OrtCuda):
    name = "tensorrt"
    provider = "tensorrt"
    runs_packed = False  # TensorRT has no PackedAttention: padded batches, which it runs whole

    @classmethod
    def problems(cls) -> tuple[str, ...]:
        if "TensorrtExecutionProvider" in ort.get_available_providers():
            return cuda_problems()
        missing = (f"onnxruntime {ort.__version__} has no TensorrtExecutionProvider "
                   "(pip install 'mbexport[gpu]' tensorrt)")
        return (*cuda_problems(), missing)
