"""Pooling heads: what happens to pooled hidden states before they are returned.

``ClassifyHead``: a classifier, optional label columns, then the activation.

``EmbeddingHead``: Sentence Transformers ``Dense`` projections, then the Matryoshka slice,
then L2 normalization (the order vLLM, Sentence Transformers and TEI agree on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from vllm_pool.engine.activations import Activation, normalize, torch_nn_activation
from vllm_pool.engine.params import PoolingParams, check_dimensions
from vllm_pool.engine.st_config import DenseLayer

logger = logging.getLogger(__name__)


class Projection(torch.nn.Module):
    """A stack of Sentence Transformers ``Dense`` layers."""

    def __init__(self, layers: list[DenseLayer]) -> None:
        super().__init__()
        self.linears = torch.nn.ModuleList()
        self.acts = torch.nn.ModuleList()
        for layer in layers:
            out_f, in_f = layer.weight.shape
            lin = torch.nn.Linear(in_f, out_f, bias=layer.bias is not None)
            with torch.no_grad():
                lin.weight.copy_(layer.weight)
                if layer.bias is not None:
                    lin.bias.copy_(layer.bias)
            self.linears.append(lin)
            self.acts.append(torch_nn_activation(layer.activation))
        self.residual = [layer.residual for layer in layers]

    @property
    def out_features(self) -> int | None:
        return self.linears[-1].out_features if len(self.linears) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in] -> [N, out]
        for lin, act, residual in zip(self.linears, self.acts, self.residual):
            x = act(lin(x)) + x if residual else act(lin(x))
        return x


class EmbeddingHead:
    """Projection, Matryoshka slice and normalization of embedding outputs.

    Args:
        model_name: the name the user loaded the model by (used in error messages).
        hidden_size: size of the pooled hidden states.
        projection: Sentence Transformers Dense layers, if any.
        normalize_default: whether outputs are normalized when the request does not say.
        dimensions_default: a default Matryoshka size (from ``pooler_config``).
        is_matryoshka: whether the model supports changing the output size.
        matryoshka_dimensions: the only sizes allowed, when the model lists them.
    """

    def __init__(
        self,
        model_name: str,
        hidden_size: int,
        projection: Projection | None = None,
        normalize_default: bool = True,
        dimensions_default: int | None = None,
        is_matryoshka: bool = False,
        matryoshka_dimensions: list[int] | None = None,
    ) -> None:
        self.model_name = model_name
        self.projection = projection if projection is not None and len(projection.linears) else None
        self.out_dim = (self.projection.out_features if self.projection else None) or hidden_size
        self.normalize_default = normalize_default
        self.dimensions_default = dimensions_default
        self.is_matryoshka = is_matryoshka or bool(matryoshka_dimensions)
        self.matryoshka_dimensions = matryoshka_dimensions
        if dimensions_default is not None and not self.is_matryoshka:
            logger.warning(
                "pooler_config dimensions=%d on %s, which does not support matryoshka representation: "
                "its embedding requests will fail",
                dimensions_default,
                model_name,
            )

    def resolve(self, params: PoolingParams) -> PoolingParams:
        """Fill the request's unset fields with the model defaults and check them."""
        params.check()
        # as vLLM: pooler_config's dimensions is the request's default, checked like its own
        dims = params.dimensions if params.dimensions is not None else self.dimensions_default
        if dims is not None:
            check_dimensions(
                dims, self.model_name, self.is_matryoshka, self.matryoshka_dimensions, self.out_dim
            )
        normalize_ = self.normalize_default if params.normalize is None else bool(params.normalize)
        return params.clone(dimensions=dims, normalize=normalize_)

    def __call__(self, x: torch.Tensor, params: PoolingParams) -> torch.Tensor:
        """Apply the head to ``x: [N, hidden]`` for one request's resolved params."""
        if self.projection is not None:
            x = self.projection(x.to(self.projection.linears[0].weight.dtype))
        if params.dimensions is not None:
            x = x[..., : params.dimensions]
        if params.normalize:
            x = normalize(x)
        return x


class ClassifyHead:
    """Classifier logits, optional label columns (``returned_token_ids``), then activation.

    Args:
        classifier: ``[N, hidden] -> [N, num_labels]``.
        activation: the model's activation (softmax, sigmoid, identity, ...).
        use_activation_default: whether the activation runs when the request does not say.
        step_tag_id: default step tag (STEP pooling), from ``pooler_config``.
        returned_token_ids: default label columns, from ``pooler_config``.
        num_labels: the classifier's output size (``None``: unknown, ids are not checked).

    Raises:
        ValueError: a ``returned_token_ids`` id outside ``[0, num_labels)``, from
            ``pooler_config`` (at construction) or a request (when it is resolved).
    """

    def __init__(
        self,
        classifier: Callable[[torch.Tensor], torch.Tensor],
        activation: Activation,
        use_activation_default: bool = True,
        step_tag_id: int | None = None,
        returned_token_ids: list[int] | None = None,
        num_labels: int | None = None,
    ) -> None:
        self.classifier = classifier
        self.activation = activation
        self.use_activation_default = use_activation_default
        self.step_tag_id = step_tag_id
        self.num_labels = num_labels
        self.check_label_ids(returned_token_ids, "pooler_config.returned_token_ids")
        self.returned_token_ids = returned_token_ids

    def check_label_ids(self, ids: list[int] | None, name: str) -> None:
        """Raise ``ValueError`` naming ``name``, the id and the label count for an id that is
        not a label column (negative ids too: they would silently count from the end)."""
        if ids is None or self.num_labels is None:
            return
        for i, label in enumerate(ids):
            if not 0 <= label < self.num_labels:
                raise ValueError(
                    f"{name}[{i}]={label} is not a label of this model: it has {self.num_labels} labels "
                    f"(ids 0 to {self.num_labels - 1})"
                )

    def resolve(self, params: PoolingParams) -> PoolingParams:
        params.check()
        self.check_label_ids(params.returned_token_ids, "returned_token_ids")
        use = self.use_activation_default if params.use_activation is None else bool(params.use_activation)
        return params.clone(
            use_activation=use,
            step_tag_id=self.step_tag_id if params.step_tag_id is None else params.step_tag_id,
            returned_token_ids=(
                self.returned_token_ids if params.returned_token_ids is None else params.returned_token_ids
            ),
        )

    def __call__(self, x: torch.Tensor, params: PoolingParams) -> torch.Tensor:
        logits = self.classifier(x)  # [N, num_labels]
        if params.returned_token_ids:
            logits = logits[..., list(params.returned_token_ids)]
        return self.activation(logits.float()) if params.use_activation else logits
