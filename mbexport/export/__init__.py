"""Export: ONNX graph building (encoder, heads), precision, writing and the manifest."""
