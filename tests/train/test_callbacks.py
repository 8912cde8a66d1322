"""Epoch callbacks see every record and can stop a run on every rank."""

from __future__ import annotations

import json

import pytest

from paratrain.config import FitConfig
from paratrain.train.fit import fit


class StopAtEpoch:
    """Picklable: runs inside rank 0's worker process when there are several workers."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, record: dict) -> bool:
        return record["epoch"] >= self.epoch


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy,workers", [("single", 1), ("ddp", 2)])
def test_a_callback_stops_the_run_after_its_epoch(tmp_path, regression_csv, strategy, workers):
    config = FitConfig.from_dict({"path": str(regression_csv), "target": "y", "hidden": [16], "epochs": 10,
                                  "strategy": strategy, "workers": workers, "verbosity": 0,
                                  "out": str(tmp_path / "run")})
    result = fit(config, callbacks=[StopAtEpoch(3)])
    assert result.summary["epochs"] == 3 and result.summary["stopped_by_callback"] is True
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
