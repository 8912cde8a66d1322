"""One conformance suite that every registered strategy runs.

The list comes from the registry, so a strategy added later joins with no edit here; each runs
as its ``conformance_spec`` (``localsgd:4``, ``pipeline:2``), on 2 workers where it needs a
process group (1 otherwise), for 2 epochs of the 512-row regression table, with Adam and a cosine
schedule (state a resume must restore) and shuffled rows. What every strategy must do:

(a) learn: its validation loss ends within ``conformance_tolerance`` (1.5x unless the class says
    otherwise) of `single` at the same global batch of 64 rows, and a strategy that
    ``communicates`` reports the bytes it sent;
(b) resume: tests/train/test_restarts.py kills a worker of every launched strategy in the middle
    of an epoch and checks that the restarted run ends with the parameters of the uninterrupted
    run (1e-6) where the strategy is ``deterministic``, or (asynchronous ones) with a validation
    loss within its tolerance; tests/train/test_step_checkpoints.py resumes the one-process ones;
(c) accumulate, where it ``supports_accumulation``: 2 micro-batches of b rows give the parameters
    of one batch of 2b (atol 2e-5: only the order of float32 sums differs), or for an
    asynchronous strategy, or one that ``selects_by_magnitude`` (where rounding flips choices),
    the same loss within its tolerance.

Each strategy costs two short runs here (uninterrupted, accumulated); the uninterrupted one is
shared by (a) and (c).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from paratrain.config import FitConfig
from paratrain.strategies import known_strategies, strategy_class
from paratrain.train.fit import fit
from tests.conftest import assert_states_close, model_state

GLOBAL_BATCH = 64
EPOCHS = 2
ACCUMULATION_ATOL = 2e-5  # float32 gradients summed in another order, after 2 epochs of 7 steps
MIN_R2 = 0.5  # a model that learned nothing scores about 0


def _workers(name: str) -> int:
    return 2 if strategy_class(name).needs_process_group else 1


def _config(data: Path, out: Path, name: str, **fields) -> FitConfig:
    # The same global batch everywhere: 2 workers x 32 rows, or one process x 64 rows. 409 training rows
    # give 7 steps per epoch on 2 workers: localsgd:4's averages fall inside epochs, not on the checkpoint.
    workers = _workers(name)
    spec = strategy_class(name).conformance_spec
    base = {"path": str(data), "target": "y", "hidden": [32, 32], "epochs": EPOCHS, "lr": 0.01, "optimizer": "adam",
            "schedule": "cosine", "seed": 0, "precision": "fp32", "strategy": spec, "workers": workers,
            "batch_size": GLOBAL_BATCH // workers, "verbosity": 0, "out": str(out)}
    return FitConfig.from_dict({**base, **fields})


class _Runs:
    """Each strategy's uninterrupted run, made once and shared by the tests of this module."""

    def __init__(self, root: Path, data: Path) -> None:
        self.root, self.data, self._done = root, data, {}

    def full(self, name: str):
        if name not in self._done:
            self._done[name] = fit(_config(self.data, self.root / name / "full", name))
        return self._done[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, table) -> _Runs:
    return _Runs(tmp_path_factory.mktemp("conformance"), table)


STRATEGIES = known_strategies()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", [n for n in STRATEGIES if n != "single"])
def test_learns_like_single(name, runs):
    reference = runs.full("single").summary["val_loss"]
    result = runs.full(name)
    cls = strategy_class(name)
    summary = result.summary
    assert summary["status"] == "finished" and summary["workers"] == _workers(name) and summary["epochs"] == EPOCHS
    assert summary["val_loss"] <= cls.conformance_tolerance * reference, (name, summary["val_loss"], reference)
    assert summary["val_r2"] > MIN_R2
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    if cls.communicates:
        assert records[-1]["comm_bytes_per_step"] > 0  # every communicating strategy counts its bytes


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", [n for n in STRATEGIES if strategy_class(n).supports_accumulation])
def test_accumulation_equals_a_larger_batch(name, runs, tmp_path):
    cls = strategy_class(name)
    full = runs.full(name)
    batch = GLOBAL_BATCH // _workers(name)
    accumulated = fit(_config(runs.data, tmp_path / "acc", name, batch_size=batch // 2, accumulate=2))
    assert accumulated.summary["status"] == "finished"
    if cls.deterministic and not cls.selects_by_magnitude:
        assert_states_close(model_state(full.run_dir), model_state(accumulated.run_dir), atol=ACCUMULATION_ATOL)
    else:
        # Asynchronous updates, or a top-k that rounding can flip: only the outcome can be compared.
        assert accumulated.summary["val_loss"] <= cls.conformance_tolerance * full.summary["val_loss"]


def test_every_strategy_describes_itself_and_its_example_spelling_builds():
    for name in STRATEGIES:
        cls = strategy_class(name)
        assert cls.name == name and cls.description
        FitConfig.from_dict({"strategy": cls.conformance_spec, "workers": _workers(name)})
        assert cls.conformance_tolerance >= 1.0


_BUILD_CONFIGS = """
import sys, types
from paratrain.config import FitConfig
from paratrain.strategies import known_strategies, strategy_class
before = {m for m in sys.modules if m.startswith("torch.distributed.rpc")}
for name in known_strategies():
    cls = strategy_class(name)
    FitConfig.from_dict({"strategy": cls.conformance_spec, "workers": 2 if cls.needs_process_group else 1})
FitConfig.from_dict({"strategy": "async", "workers": 2, "max_staleness": 2})
after = {m for m in sys.modules if m.startswith("torch.distributed.rpc")}
# A paratrain module that holds torch.distributed.rpc (or a part of it) imported it at module level.
holders = sorted(name for name, module in list(sys.modules.items()) if name.startswith("paratrain")
                 for value in vars(module).values()
                 if isinstance(value, types.ModuleType) and value.__name__.startswith("torch.distributed.rpc"))
print(sorted(after - before), holders)
"""


@pytest.mark.timeout(60)
def test_building_configs_imports_no_rpc():
    """Validation has no side effects: building every strategy's config loads no paratrain module
    that imports torch.distributed.rpc (the parameter server's, strategies/async_server.py, loads
    when an async run starts) and no part of rpc that `import torch` did not already load (torch
    2.13 loads rpc's api itself, so sys.modules alone cannot tell)."""
    done = subprocess.run([sys.executable, "-c", _BUILD_CONFIGS], capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "[] []", done.stdout + done.stderr
