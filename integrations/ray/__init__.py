"""Ray Data integration: pooling and index building across processes, GPUs and machines
(``pip install "vllm-pool[ray]"``).

>>> from vllm_pool.integrations.ray import PoolingPredictor, build_index, map_pooling
"""

from .._imports import require

require("ray.data", "ray", "ray[data]")

from .pipeline import build_index, map_pooling  # noqa: E402
from .predictor import PoolingPredictor, PredictorSettings  # noqa: E402

__all__ = ["PoolingPredictor", "PredictorSettings", "build_index", "map_pooling"]
