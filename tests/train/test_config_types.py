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
    ("overlap", "no", "true or false"),
    ("error_feedback", 1, "true or false"),
])
def test_wrong_types_are_config_errors(field, value, words):
    with pytest.raises(ConfigError, match=words) as error:
        FitConfig.from_dict({field: value})
    assert str(error.value).startswith(f"{field}=")


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
