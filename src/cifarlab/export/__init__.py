"""Shipping a trained model: ONNX export (`export_onnx`); `cifarlab.inference.onnx_runtime` runs the file."""

from cifarlab.export.onnx import ExportResult, export_onnx

__all__ = ["ExportResult", "export_onnx"]
