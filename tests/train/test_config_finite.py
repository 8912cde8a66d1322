"""Every float field of every config section refuses NaN and infinity, naming the field."""

from __future__ import annotations

import dataclasses
import math

import pytest

from paratrain.config import _SECTIONS, FitConfig, ModelConfig
from paratrain.errors import ConfigError

FLOAT_FIELDS = [(section, f.name) for section, cls in _SECTIONS.items() for f in dataclasses.fields(cls)
                if "float" in str(f.type) and "dict" not in str(f.type)]


def test_the_float_fields_are_found():
    # Guards the discovery below: a renamed type annotation must not empty the test.
    assert {"val_fraction", "dropout", "lr", "momentum", "weight_decay", "gamma", "min_delta",
            "timeout_s"} <= {name for _, name in FLOAT_FIELDS}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("section,name", FLOAT_FIELDS)
def test_non_finite_values_are_refused(section, name, value):
    with pytest.raises(ConfigError, match=rf"^{name}={value!r} must be a finite number"):
        FitConfig.from_dict({section: {name: value}})


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_formula_init_is_refused(value):
    with pytest.raises(ConfigError, match="init\\['b'\\]"):
        ModelConfig(model="formula", formula="a*x+b", init={"a": 1.0, "b": value})


def test_finite_values_still_pass():
    config = FitConfig.from_dict({"lr": 0.5, "momentum": 0.0, "val_fraction": 0.0, "timeout_s": 1e9,
                                  "init": {"a": -3.0}})
    assert config.optim.lr == 0.5 and config.model.init == {"a": -3.0}
