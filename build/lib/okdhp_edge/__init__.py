"""okdhp_edge: OKDHP training, a student zoo, and an edge bench for human pose.

``create_model`` and ``list_models`` are imported lazily so that the torch-free parts
(data, evaluation, runtime, bench on bundles) never import torch.
"""

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "__version__"]


def __getattr__(name: str):
    if name in ("create_model", "list_models"):
        from okdhp_edge.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'okdhp_edge' has no attribute '{name}'")
