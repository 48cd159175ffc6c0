"""The one PyTorch module :func:`~portaconv.interop.to_torch` needs that ``torch.nn`` lacks:
a residual block. Importing this module imports torch."""

from __future__ import annotations

import torch


class Residual(torch.nn.Module):
    """``body(x) + shortcut(x)``, portaconv's :class:`~portaconv.models.Residual` in PyTorch;
    the identity shortcut is ``torch.nn.Identity()``, so the state names are portaconv's
    (``body.0.weight``, ``shortcut.0.weight``)."""

    def __init__(self, body: torch.nn.Module, shortcut: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = torch.nn.Identity() if shortcut is None else shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)
