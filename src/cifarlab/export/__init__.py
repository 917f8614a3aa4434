"""Shipping a trained model: ONNX export (`export_onnx`) and running the exported file (`OnnxClassifier`)."""

from cifarlab.export.onnx import ExportResult, export_onnx
from cifarlab.export.runtime import OnnxClassifier

__all__ = ["ExportResult", "OnnxClassifier", "export_onnx"]
