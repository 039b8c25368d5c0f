"""The bundled ONNX inference server: Ultralytics-compatible predict API over onnxruntime."""

__version__ = "0.1.0"
