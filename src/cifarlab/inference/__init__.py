"""Using a trained model: load it (checkpoint or ONNX), decode images, predict. Imports neither training nor the API."""
