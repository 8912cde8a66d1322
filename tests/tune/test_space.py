"""Search spaces: YAML and dicts, conditions, grids, and errors that name the field."""

from __future__ import annotations

import optuna
import pytest

from paratrain.errors import ConfigError
from paratrain.tune.models import check_space_names, get_model, train_config_values
from paratrain.tune.space import Categorical, Float, Int, SearchSpace


def test_yaml_space_with_a_conditional_parameter(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("n_layers: {type: int, low: 1, high: 4}\n"
                    "units: {type: int, low: 16, high: 256, log: true}\n"
                    "dropout: {type: float, low: 0.0, high: 0.5, when: 'n_layers > 2'}\n"
                    "activation: [relu, tanh]\n")
    space = SearchSpace.load(path)
    assert space.names == ["n_layers", "units", "dropout", "activation"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        params = space.suggest(trial)
        assert ("dropout" in params) == (params["n_layers"] > 2)
        assert 16 <= params["units"] <= 256 and params["activation"] in ("relu", "tanh")
        study.tell(trial, 0.0)
    assert "when n_layers > 2" in space.describe()
    assert SearchSpace.from_dict(space.to_dict()).to_dict() == space.to_dict()


def test_python_classes_build_the_same_space():
    space = SearchSpace([Int("n_layers", 1, 4), Float("lr", 1e-4, 1e-1, log=True),
                         Categorical("optimizer", ("adam", "sgd")),
                         Float("momentum", 0.5, 0.99, when="optimizer == sgd")])
    assert space.to_dict()["momentum"] == {"type": "float", "low": 0.5, "high": 0.99, "log": False,
                                           "when": "optimizer == sgd"}


def test_grid_values():
    space = SearchSpace.from_dict({"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
                                   "n": {"type": "int", "low": 1, "high": 3}, "act": ["relu", "tanh"]})
    grid = space.grid(3)
    assert grid["lr"] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert grid["n"] == [1, 2, 3] and grid["act"] == ["relu", "tanh"]
    assert space.grid_size(3) == 18


@pytest.mark.parametrize("text,message", [
    ("lr: {type: float, low: 0.1}", "space parameter 'lr': missing 'high'"),
    ("lr: {type: float, low: 0.1, hihg: 1}", "space parameter 'lr': unknown key 'hihg'"),
    ("lr: {type: floaty, low: 0, high: 1}", "space parameter 'lr': type='floaty' is not one of: float, int, categorical"),
    ("lr: {type: float, low: 1, high: 0.1}", "space parameter 'lr': `low <= high` must hold"),
    ("lr: {type: float, low: 0, high: 1, log: true}", "space parameter 'lr': log=true needs low > 0"),
    ("n: {type: int, low: 1.5, high: 4}", "space parameter 'n': low=1.5 must be an integer"),
    ("dropout: {type: float, low: 0, high: 0.5, when: 'n_layers > 2'}",
     "space parameter 'dropout': when='n_layers > 2' names 'n_layers', which is not an earlier parameter"),
    ("dropout: {type: float, low: 0, high: 0.5, when: 'n_layers >> 2'}", "space parameter 'dropout': when="),
    ("act: {type: categorical, choices: []}", "space parameter 'act': choices=\\[\\] must be a non-empty list"),
    ("- lr", "must hold a mapping"),
    ("lr: {type: float, low: 0, high: [1", "is not valid YAML"),
])
def test_bad_space_yaml_names_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        SearchSpace.load(path)
    assert str(path) in str(info.value)


def test_space_names_must_fit_the_model():
    space = SearchSpace.from_dict({"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                                   "learning_rate_x": [1, 2]})
    with pytest.raises(ConfigError, match="space parameter 'learning_rate_x' is not a parameter of model 'mlp'"):
        check_space_names(get_model("mlp"), space)
    with pytest.raises(ConfigError, match="'workers'.*set by the planner"):
        check_space_names(get_model("mlp"), SearchSpace.from_dict({"workers": [1, 2]}))
    with pytest.raises(ConfigError, match="is not a parameter of model 'svr'"):
        check_space_names(get_model("svr"), space)
    with pytest.raises(ConfigError, match="model='xgb' is not one of: mlp, formula, svr, gp"):
        get_model("xgb")


def test_layers_and_units_become_hidden():
    assert train_config_values({"n_layers": 3, "units": 32, "lr": 0.1}, (64, 64)) == {"lr": 0.1, "hidden": (32, 32, 32)}
    assert train_config_values({"units": 8}, (64, 64)) == {"hidden": (8, 8)}
    assert train_config_values({"hidden": "16,8"}, (64,)) == {"hidden": (16, 8)}
