"""The prediction server (`cifarlab serve`): a FastAPI app with a web page, micro-batching and input limits."""

from cifarlab.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
