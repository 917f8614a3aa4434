"""Model families and the registry that names them."""

from cifarlab.models import airnet, keras_cnn, transfer_net, vgg  # noqa: F401  (registers the families)
from cifarlab.models.registry import create_model, list_models, register_model
from cifarlab.models.summary import ParamCounts, count_params

__all__ = ["ParamCounts", "count_params", "create_model", "list_models", "register_model"]
