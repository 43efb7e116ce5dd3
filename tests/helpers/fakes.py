"""Fakes shared by the engine tests."""

from __future__ import annotations

import torch


class OOMAbove(torch.nn.Module):
    """Delegates to ``model`` but raises a simulated device OOM above ``limit``.

    ``per="prompts"`` counts the rows of a padded batch, ``per="tokens"`` the length of a
    packed row. ``calls`` records the size of every call.
    """

    def __init__(self, model: torch.nn.Module, limit: int, per: str = "prompts") -> None:
        super().__init__()
        self.inner, self.limit, self.calls = model, limit, []
        self.dim = 0 if per == "prompts" else 1

    def forward(self, input_ids, **kwargs):
        self.calls.append(input_ids.shape[self.dim])
        if input_ids.shape[self.dim] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(input_ids=input_ids, **kwargs)
