"""precision='auto': the decision on given timings, the cache, and what a real fit records."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from paratrain.config import FitConfig
from paratrain.errors import ConfigError
from paratrain.estimators import FormulaRegressor, MLPRegressor
from paratrain.train import autoprecision, probecache
from paratrain.train.autoprecision import MIN_STEP_WORK, choose_precision, decide, skip_reason
from paratrain.train.fit import fit, resume
from paratrain.train.precision import cpu_has_native_bf16
from paratrain.train.precisionprobe import ProbeMeasurement, probe_precisions
from tests.conftest import regression_frame, run_cli


def _measurement(fp32_ms: float, bf16_ms: float, fp32_loss: float = 1.0, bf16_loss: float = 1.0) -> ProbeMeasurement:
    return ProbeMeasurement(fp32_step_s=fp32_ms / 1e3, bf16_step_s=bf16_ms / 1e3, fp32_loss=fp32_loss,
                            bf16_loss=bf16_loss, steps=7, timed_steps=5, batch_size=256, threads=2, seconds=0.1,
                            fp32_steps_s=(fp32_ms / 1e3,) * 5, bf16_steps_s=(bf16_ms / 1e3,) * 5)


def _mlp(hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(10, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, 1))


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(out.float().squeeze(-1), y)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(probecache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def no_probe(monkeypatch):
    """Fails the test if a probe is started."""
    def refuse(*args, **kwargs):
        raise AssertionError("the probe ran")
    monkeypatch.setattr(autoprecision, "probe_precisions", refuse)


# -- the decision on given timings ---------------------------------------------------------

def test_faster_with_the_same_loss_is_bf16():
    name, reason = decide(_measurement(3.0, 1.0, 0.500, 0.502))
    assert name == "bf16"
    assert "3.00x faster" in reason and "within 0.40%" in reason


@pytest.mark.parametrize("bf16_ms", [1.0 / 1.1, 1.0, 2.0])
def test_not_measurably_faster_is_fp32(bf16_ms):
    name, reason = decide(_measurement(1.0, bf16_ms))
    assert name == "fp32" and "not measurably faster" in reason and "1.15x" in reason


@pytest.mark.parametrize("bf16_loss", [1.02, 0.97, float("nan")])
def test_a_different_loss_is_fp32(bf16_loss):
    name, reason = decide(_measurement(3.0, 1.0, 1.0, bf16_loss))
    assert name == "fp32" and "differs from fp32's" in reason


def test_fastest_steps_must_agree_with_the_median():
    # One quick fp32 step shows that the median gain came from other load, not from bf16.
    m = ProbeMeasurement(3e-3, 1e-3, 1.0, 1.0, steps=7, timed_steps=3, batch_size=256, threads=2, seconds=0.1,
                         fp32_steps_s=(3e-3, 3e-3, 1e-3), bf16_steps_s=(1e-3, 1e-3, 1e-3))
    assert m.speedup == pytest.approx(3.0) and m.best_speedup == pytest.approx(1.0)
    assert decide(m)[0] == "fp32" and not m.steady


def test_uniformly_slow_steps_of_a_busy_machine_are_not_steady():
    # 69k parameters x 256 rows in 170 ms is 0.6 GFLOP/s: every core was taken by other work.
    slow = ProbeMeasurement(0.17, 0.18, 1.0, 1.0, steps=6, timed_steps=4, batch_size=256, threads=2, seconds=2.0,
                            parameters=68_865, fp32_steps_s=(0.17,) * 4, bf16_steps_s=(0.18,) * 4)
    assert slow.fp32_flops_per_thread < 1e9 and not slow.steady
    quick = ProbeMeasurement(1.5e-3, 0.8e-3, 1.0, 1.0, steps=17, timed_steps=15, batch_size=256, threads=1,
                             seconds=0.05, parameters=68_865, fp32_steps_s=(1.5e-3,) * 15, bf16_steps_s=(0.8e-3,) * 15)
    assert quick.steady


def test_no_native_bf16_is_fp32_without_probing(monkeypatch, cache, no_probe):
    monkeypatch.setattr(autoprecision, "cpu_has_native_bf16", lambda: False)
    config = FitConfig.from_dict({"hidden": [1024, 1024], "batch_size": 1024})
    choice = choose_precision(config, _mlp(1024), torch.randn(64, 10), torch.randn(64), _mse, torch.optim.Adam)
    assert choice.name == "fp32" and choice.probe is None
    assert choice.reason.startswith("no native bf16: bf16 is 20-40x slower here")


def test_tiny_steps_and_formula_models_are_fp32_without_probing(cache, no_probe):
    tiny = FitConfig.from_dict({"hidden": [8], "batch_size": 32})
    model = _mlp(8)
    assert sum(p.numel() for p in model.parameters()) * 32 < MIN_STEP_WORK
    if cpu_has_native_bf16():
        assert "tiny training step" in skip_reason(tiny, model, torch.device("cpu"))
    formula = FitConfig.from_dict({"model": "formula", "formula": "b0 + b1*x", "batch_size": 100_000})
    assert skip_reason(formula, _mlp(1024), torch.device("cpu")).startswith("formula model")
    choice = choose_precision(tiny, model, torch.randn(64, 10), torch.randn(64), _mse, torch.optim.Adam)
    assert choice.name == "fp32" and choice.probe is None


def test_explicit_precision_is_kept_without_probing(cache, no_probe):
    for name in ("fp32", "bf16"):
        config = FitConfig.from_dict({"precision": name, "hidden": [1024, 1024], "batch_size": 1024})
        choice = choose_precision(config, _mlp(1024), torch.randn(64, 10), torch.randn(64), _mse, torch.optim.Adam)
        assert (choice.name, choice.probe) == (name, None)
        assert choice.reason == f"set in the config (precision={name})"


# -- the probe and its cache ---------------------------------------------------------------

def test_probe_times_both_precisions_and_leaves_the_model_alone():
    model = _mlp(32)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(300, 10), torch.randn(300)
    rng_before = torch.random.get_rng_state()
    m = probe_precisions(model, lambda p: torch.optim.Adam(p, lr=1e-3), _mse, x, y, batch_size=64, budget_s=0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.equal(rng_before, torch.random.get_rng_state())
    assert 3 <= m.timed_steps == len(m.fp32_steps_s) == len(m.bf16_steps_s)
    assert m.fp32_step_s > 0 and m.bf16_step_s > 0 and m.loss_gap < 0.05 and m.seconds < 5
    assert ProbeMeasurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_cache_round_trip_and_key(cache):
    model = _mlp(64)
    key = probecache.probe_key(model, torch.device("cpu"), 256, 2, "adam")
    assert key["torch"] == torch.__version__ and key["batch_size"] == 256 and key["threads"] == 2
    assert "Linear(in_features=64, out_features=64" in key["model"]
    assert probecache.load(key) is None
    path = probecache.store(key, _measurement(3.0, 1.0).to_dict())
    assert path.parent == cache and json.loads(path.read_text())["key"] == key
    assert ProbeMeasurement.from_dict(probecache.load(key)) == _measurement(3.0, 1.0)
    # Anything the timing depends on is in the key.
    for other in (probecache.probe_key(model, torch.device("cpu"), 512, 2, "adam"),
                  probecache.probe_key(model, torch.device("cpu"), 256, 1, "adam"),
                  probecache.probe_key(model, torch.device("cpu"), 256, 2, "sgd"),
                  probecache.probe_key(_mlp(128), torch.device("cpu"), 256, 2, "adam")):
        assert probecache.load(other) is None
    path.write_text("{not json")
    assert probecache.load(key) is None


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(probecache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert probecache.cache_dir() == tmp_path / "xdg" / "paratrain"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert probecache.cache_dir() == tmp_path / "home" / ".cache" / "paratrain"


def test_a_cached_probe_decides_without_probing(monkeypatch, cache, no_probe):
    monkeypatch.setattr(autoprecision, "cpu_has_native_bf16", lambda: True)
    config = FitConfig.from_dict({"hidden": [256, 256], "batch_size": 256})
    model = _mlp(256)
    key = probecache.probe_key(model, torch.device("cpu"), 256, torch.get_num_threads(), "adam")
    probecache.store(key, _measurement(3.0, 1.0).to_dict())
    choice = choose_precision(config, model, torch.randn(64, 10), torch.randn(64), _mse, torch.optim.Adam)
    assert choice.name == "bf16" and choice.reason.endswith("(cached probe)") and choice.probe["cached"] is True


# -- what a real fit records ---------------------------------------------------------------

def _fit_values(tmp_path, name, **fields):
    return {"target": "y", "epochs": 1, "verbosity": 0, "out": str(tmp_path / name), "seed": 0, **fields}


def test_a_fit_records_its_precision_and_a_second_fit_reuses_the_probe(tmp_path, cache, caplog):
    frame = regression_frame(rows=1024, features=10)
    # 256-256 at batch 256 is above the tiny-step threshold: a real probe decides (on an AVX-512 BF16 CPU).
    values = _fit_values(tmp_path, "first", hidden=[256, 256], batch_size=256, threads=1, verbosity=1)
    with caplog.at_level(logging.INFO, logger="paratrain"):
        first = fit(FitConfig.from_dict(values), data=frame).summary
    assert first["precision"] in ("fp32", "bf16") and first["precision_reason"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision: ")]
    assert lines == [f"precision: {first['precision']} (auto) - {first['precision_reason']}"]
    on_disk = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert on_disk["precision"] == first["precision"] and on_disk["precision_probe"] == first["precision_probe"]
    if not cpu_has_native_bf16():
        assert first["precision"] == "fp32" and first["precision_probe"] is None
        return
    probe = first["precision_probe"]
    assert probe["fp32_step_s"] > 0 and probe["bf16_step_s"] > 0 and probe["cached"] is False
    assert probe["seconds"] < 10  # about 2 s; more only when the machine is very busy
    second = fit(FitConfig.from_dict({**values, "out": str(tmp_path / "second")}), data=frame).summary
    if probe["steady"]:  # a probe disturbed by other load is not cached
        assert second["precision_probe"]["cached"] is True and second["precision"] == first["precision"]


def test_explicit_precision_in_the_summary_and_a_resumed_auto_run_keeps_its_choice(tmp_path, cache):
    frame = regression_frame(rows=256)
    fixed = fit(FitConfig.from_dict(_fit_values(tmp_path, "fixed", precision="fp32", hidden=[8])), data=frame).summary
    assert (fixed["precision"], fixed["precision_probe"]) == ("fp32", None)
    assert fixed["precision_reason"] == "set in the config (precision=fp32)"
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    values = _fit_values(tmp_path, "auto", path=str(path), hidden=[8], epochs=3, stop_after=1)
    assert fit(FitConfig.from_dict(values)).summary["status"] == "stopped"
    assert resume(tmp_path / "auto", {"stop_after": 1}).summary["status"] == "stopped"
    resumed = resume(tmp_path / "auto").summary
    assert resumed["precision"] == "fp32" and resumed["precision_reason"].endswith("; kept on resume")
    assert resumed["precision_reason"].count("kept on resume") == 1


@pytest.mark.timeout(120)
def test_every_rank_trains_in_rank_0s_choice(tmp_path, cache):
    frame = regression_frame(rows=1024, features=10)
    values = _fit_values(tmp_path, "ddp", hidden=[256, 256], batch_size=256, strategy="ddp", workers=2)
    summary = fit(FitConfig.from_dict(values), data=frame).summary
    assert summary["status"] == "finished" and summary["precision"] in ("fp32", "bf16")


# -- defaults and bad values ---------------------------------------------------------------

def test_auto_is_the_default_everywhere():
    assert FitConfig().train.precision == "auto"
    assert MLPRegressor().precision == "auto" and FormulaRegressor("b0*x").precision == "auto"


def test_a_bad_precision_is_one_line_naming_field_rule_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"precision='fast' is not one of: auto, fp32, bf16, fp16"):
        FitConfig.from_dict({"precision": "fast"})
    done = run_cli("fit", "--data", str(tmp_path / "none.csv"), "--target", "y", "--precision", "fast")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["paratrain: error: precision='fast' is not one of: auto, fp32, bf16, fp16"]
