"""Exact top-k by magnitude, about ten times faster than ``torch.topk`` on a large CPU vector.

``torch.topk`` of the largest 1% of a million floats takes ~10 ms on one CPU
thread, a third of a training step of a 1M-parameter MLP at batch 256; the
top-k compressors run it every step. As in Deep Gradient Compression (Lin et
al., 2018) we estimate a threshold from a random sample, but then keep every
entry above it and run the exact top-k among those candidates only, so the
result is the same set ``torch.topk`` returns (up to ties); ~1 ms here. When
the sample's threshold is too high (fewer than k candidates, rare), it falls
back to ``torch.topk``.

Example:
    >>> import torch
    >>> values = torch.tensor([0.1, -3.0, 2.0, 0.5])
    >>> sorted(largest_magnitude(values, 2).tolist())
    [1, 2]
"""

from __future__ import annotations

import math

import numpy as np
import torch

SAMPLE_SIZE = 20_000
"""Entries drawn to estimate the threshold."""
OVERSAMPLE = 2.0
"""The threshold aims at this many times k candidates: enough that a sample's
error rarely leaves fewer than k (then the exact fallback runs), few enough that
the exact top-k among them stays cheap."""
MAX_SAMPLED_RATIO = 0.05
"""Above this share of entries, sampling saves little: plain torch.topk."""


def largest_magnitude(values: torch.Tensor, k: int, generator: torch.Generator | None = None,
                      workspace: torch.Tensor | None = None) -> torch.Tensor:
    """Indices (int64, unsorted) of the k entries of a 1-D tensor with the largest absolute value.

    ``workspace``, a tensor like ``values``, receives |values|: a caller that selects every
    step passes the same one, since a fresh multi-MB tensor costs page faults each time.
    """
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] for a tensor of {n} entries")
    magnitude = torch.abs(values, out=workspace) if workspace is not None else values.abs()
    if n < 4 * SAMPLE_SIZE or k > MAX_SAMPLED_RATIO * n:
        return magnitude.topk(k, sorted=False).indices
    sample = magnitude[torch.randint(0, n, (SAMPLE_SIZE,), generator=generator, device=values.device)]
    rank = min(SAMPLE_SIZE, math.ceil(OVERSAMPLE * SAMPLE_SIZE * k / n) + 8)
    threshold = sample.topk(rank, sorted=False).values.min()
    candidates = _at_least(magnitude, threshold)
    if candidates.numel() < k:
        return magnitude.topk(k, sorted=False).indices
    return candidates[magnitude[candidates].topk(k, sorted=False).indices]


def _at_least(magnitude: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Positions where ``magnitude >= threshold``; NumPy's flatnonzero is ~3x faster than torch's on CPU."""
    if magnitude.device.type == "cpu" and magnitude.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.flatnonzero(magnitude.numpy() >= threshold.item()))
    return torch.nonzero(magnitude >= threshold).squeeze(1)
