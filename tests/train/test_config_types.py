"""Values of the wrong type are a ConfigError naming the field, not a traceback or a silent yes."""

from __future__ import annotations

from pathlib import Path

import pytest

from paratrain.config import FitConfig, load_yaml
from paratrain.errors import ConfigError


@pytest.mark.parametrize("field, value, words", [
    ("hidden", None, "list of layer sizes"),
    ("hidden", 5, "list of layer sizes"),
    ("drop", 5, "list of column names"),
    ("strategy", 3, "strategy name"),
    ("target", 1.5, "must be text"),
    ("formula", ["a*x"], "must be text"),
    ("shuffle", 0.5, "true or false"),
])
def test_wrong_types_are_config_errors(field, value, words):
    with pytest.raises(ConfigError, match=words) as error:
        FitConfig.from_dict({field: value})
    assert str(error.value).startswith(f"{field}=")


@pytest.mark.parametrize("field, value, strategy", [
    ("overlap", "no", "sparse:0.1"),
    ("error_feedback", 1, "ddp"),
    ("error_feedback", "yes", "sparse:0.1"),
    ("sync_warmup", 1.5, "localsgd:8"),
])
def test_strategy_options_of_the_wrong_type_are_config_errors(field, value, strategy):
    with pytest.raises(ConfigError, match="true or false|integer") as error:
        FitConfig.from_dict({"strategy": strategy, "workers": 2, field: value})
    assert str(error.value).startswith(f"{field}=")


def test_an_option_the_strategy_does_not_take_names_it_and_who_takes_it():
    with pytest.raises(ConfigError, match=r"option sync_warmup=3 does not apply to strategy 'ddp'.*is for localsgd"):
        FitConfig.from_dict({"strategy": "ddp", "workers": 2, "sync_warmup": 3})


def test_old_run_configs_with_options_in_the_parallel_section_still_load():
    """config.yaml of runs written before strategies declared their options held every option in
    `parallel:`, at its default for the strategies that do not take it."""
    old = {"parallel": {"strategy": "localsgd:8", "workers": 2, "compress": None, "powersgd_warmup": 10,
                        "error_feedback": True, "compress_lr_scale": True, "sync_warmup": 5, "overlap": True,
                        "max_staleness": None, "options": {}}}
    assert FitConfig.from_dict(old).parallel.options == {"sync_warmup": 5}
    old["parallel"].update(strategy="ddp", compress="topk:0.01", sync_warmup=0)
    assert FitConfig.from_dict(old).parallel.options == {"compress": "topk:0.01"}
    # A flat None means "not given" (the CLI's convention), so one dict suits every strategy.
    assert FitConfig.from_dict({"strategy": "single", "compress": None}).parallel.options == {}


def test_drop_as_text_is_a_list_of_columns_not_of_letters():
    assert FitConfig.from_dict({"drop": "id, date"}).data.drop == ("id", "date")


def test_paths_may_be_pathlib_paths():
    config = FitConfig.from_dict({"path": Path("data.csv"), "out": Path("runs/x")})
    assert config.data.path == "data.csv" and config.output.out == "runs/x"


def test_a_deeply_nested_yaml_file_is_a_config_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("[" * 5000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_yaml(path)
