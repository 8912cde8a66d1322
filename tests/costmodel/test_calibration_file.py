"""Calibration JSON: round trip, and refusal of a file measured for another model."""

from __future__ import annotations

import json

import pytest

from paratrain.costmodel.calibration import Fingerprint, load_calibration
from paratrain.costmodel.predict import predict_step
from paratrain.errors import ConfigError
from tests.costmodel.helpers import synthetic


def test_round_trip(tmp_path) -> None:
    calibration = synthetic()
    calibration.measured.append("collectives on loopback, 2 workers: 1 KiB..64 MiB (9 sizes)")
    path = tmp_path / "calib.json"
    calibration.save(path)
    loaded = load_calibration(path)
    assert loaded.to_dict() == calibration.to_dict()
    assert predict_step(loaded, "ddp+topk:0.01", 4, "loopback") == predict_step(calibration, "ddp+topk:0.01", 4,
                                                                                   "loopback")
    assert not list(tmp_path.glob("*.tmp*"))  # written through a temp file and a rename


def test_another_model_is_refused_naming_both(tmp_path) -> None:
    calibration = synthetic()
    other = Fingerprint((10, 64, 64, 1), 10 * 64 + 64 + 64 * 64 + 64 + 65, 256)
    with pytest.raises(ConfigError) as error:
        calibration.check_model(other, tmp_path / "calib.json")
    message = str(error.value)
    assert "\n" not in message
    assert "mlp 10-1024-1024-1" in message and "mlp 10-64-64-1" in message
    calibration.check_model(calibration.fingerprint)  # the same model passes


def test_missing_or_foreign_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_calibration(tmp_path / "none.json")
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(ConfigError, match="not a paratrain calibration"):
        load_calibration(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a paratrain calibration"):
        load_calibration(path)
