"""The sampled top-k returns exactly torch.topk's set, on the sampled path and on its fallback."""

from __future__ import annotations

import pytest
import torch

from paratrain.strategies import topk
from paratrain.strategies.topk import largest_magnitude


def _reference(values: torch.Tensor, k: int) -> set[int]:
    return set(values.abs().topk(k).indices.tolist())


@pytest.mark.parametrize("n", [1_000, 200_000, 1_061_889])
@pytest.mark.parametrize("ratio", [0.001, 0.01, 0.04, 0.3])
def test_same_set_as_torch_topk(n, ratio):
    generator = torch.Generator().manual_seed(n)
    # Heavy-tailed values, as gradients are; distinct, so the top-k set is unique.
    values = torch.randn(n, generator=generator) * torch.rand(n, generator=generator) ** 4
    k = max(1, int(ratio * n))
    chosen = largest_magnitude(values, k, torch.Generator().manual_seed(1))
    assert chosen.dtype == torch.int64 and chosen.numel() == k
    assert set(chosen.tolist()) == _reference(values, k)


def test_falls_back_to_torch_topk_when_the_sample_misses(monkeypatch):
    """An oversampling factor far below 1 puts the threshold above the k-th value: fewer than k
    candidates, so the exact fallback must answer (and still give the right set)."""
    monkeypatch.setattr(topk, "OVERSAMPLE", 0.01)
    candidate_counts: list[int] = []
    at_least = topk._at_least

    def counting(magnitude, threshold):
        candidates = at_least(magnitude, threshold)
        candidate_counts.append(candidates.numel())
        return candidates

    monkeypatch.setattr(topk, "_at_least", counting)
    values = torch.randn(300_000, generator=torch.Generator().manual_seed(0))
    k = 3_000
    chosen = largest_magnitude(values, k, torch.Generator().manual_seed(1))
    assert len(candidate_counts) == 1 and candidate_counts[0] < k  # the sampled path gave up
    assert set(chosen.tolist()) == _reference(values, k)


def test_many_ties_still_give_k_of_the_largest():
    values = torch.zeros(500_000)
    values[:100] = torch.arange(1, 101, dtype=torch.float32)
    chosen = largest_magnitude(values, 5_000, torch.Generator().manual_seed(0))
    assert chosen.numel() == 5_000 and len(set(chosen.tolist())) == 5_000
    assert set(range(100)) <= set(chosen.tolist())  # every nonzero is among them; the rest are zeros


def test_float64_and_negative_values():
    values = -torch.arange(400_000, dtype=torch.float64)
    chosen = largest_magnitude(values, 4_000)
    assert set(chosen.tolist()) == set(range(396_000, 400_000))


@pytest.mark.parametrize("k", [0, 11])
def test_k_out_of_range_is_refused(k):
    with pytest.raises(ValueError, match=r"k=.* must be in \[1, 10\]"):
        largest_magnitude(torch.ones(10), k)


def test_workspace_receives_the_magnitudes_and_gives_the_same_set():
    values = torch.randn(200_000, generator=torch.Generator().manual_seed(3))
    workspace = torch.empty_like(values)
    chosen = largest_magnitude(values, 2_000, torch.Generator().manual_seed(1), workspace=workspace)
    assert torch.equal(workspace, values.abs())
    assert set(chosen.tolist()) == _reference(values, 2_000)
