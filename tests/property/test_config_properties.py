"""FitConfig.from_dict with random field values and types: a config or a one-line ConfigError."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from paratrain.config import _SECTIONS, FitConfig, load_yaml
from paratrain.errors import ConfigError, ParatrainError
from tests.property.helpers import THOROUGH, one_line

FIELDS = sorted({f.name for section in _SECTIONS.values() for f in dataclasses.fields(section)})

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["ddp", "single", "adam", "mlp", "formula", "a*x", "1e-3", "64,64",
                                           "powersgd:2", "topk:0.1", "localsgd:4", "cpu", "fp32", "nan", "inf"]),
    st.lists(st.integers(-3, 300), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


ADVERSARIAL = [None, True, 0, 1.5, float("nan"), float("inf"), -float("inf"), "", "x", [], [1.5], {"a": "x"}]


def _finite_numbers(config: FitConfig) -> None:
    """An accepted config holds no NaN or infinite number anywhere."""
    for section in config.to_dict().values():
        for name, value in section.items():
            if isinstance(value, float):
                assert math.isfinite(value), f"{name}={value} was accepted"




def _check_accepted(config: FitConfig, values: dict) -> None:
    _finite_numbers(config)
    for name, value in values.items():
        if name in _SECTIONS and isinstance(value, dict):
            continue  # {"model": {...}} is the model section, not the field model.model
        default = FitConfig().to_dict()
        section = next(s for s in default if name in default[s])
        expected_type = type(default[section][name])
        if expected_type is bool:
            assert isinstance(value, bool), f"{name}={value!r} was accepted for a flag"
        if expected_type is str or name in ("path", "target", "out", "formula", "family", "compress"):
            assert value is None or isinstance(value, str), f"{name}={value!r} was accepted for a name"
    assert FitConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def _config_or_error(values: dict) -> None:
    try:
        config = FitConfig.from_dict(values)
    except ParatrainError as error:
        assert isinstance(error, ConfigError)
        assert one_line(str(error)), str(error)
        return
    _check_accepted(config, values)


# Found by this property: wrong types for hidden, drop and strategy raised TypeError or
# AttributeError, and names or flags accepted numbers (see ADVERSARIAL).
@pytest.mark.parametrize("field", FIELDS)
@settings(max_examples=600 if THOROUGH else 60)  # per field: 38 fields
@given(data=st.data())
def test_each_field_gives_a_config_or_a_config_error(field, data):
    if data.draw(st.booleans(), label="fixed value first"):
        # The values that found the defects, so a defect shows up whatever the draw.
        for value in ADVERSARIAL:
            _config_or_error({field: value})
    _config_or_error({field: data.draw(ANY_VALUE, label=field)})


@given(values=st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE, max_size=4))
@example(values={"lr": 1e-2, "epochs": 3})
@example(values={"val_fraction": float("nan")})
@example(values={"dropout": float("inf")})
def test_mixed_fields_give_a_config_or_a_config_error(values):
    _config_or_error(values)


@given(key=st.text(max_size=10).filter(lambda k: k not in FIELDS and k not in _SECTIONS), value=ANY_VALUE)
def test_unknown_field_is_refused(key, value):
    with pytest.raises(ConfigError, match="unknown"):
        FitConfig.from_dict({key: value})


# "model" is also a field of the model section: {"model": "mlp"} sets that field.
@given(section=st.sampled_from(sorted(set(_SECTIONS) - {"model"})), value=ANY_VALUE)
def test_a_section_that_is_not_a_mapping_is_refused(section, value):
    if isinstance(value, dict):
        return  # a mapping is a section
    with pytest.raises(ConfigError):
        FitConfig.from_dict({section: value})


_YAML_PIECES = st.sampled_from(["lr: 0.1\n", "epochs: x\n", "model: {hidden: [8]}\n", "- a\n", "[", "]", "{", "}",
                                ": ", "!!python/object/apply:os.system ['true']\n", "&a [*a]\n", "\t", "\"", "'",
                                "hidden: 8,8\n", "data:\n  path: x.csv\n", "%YAML 1.2\n---\n", "lr: .nan\n",
                                "\x00", "é: 1\n", "? [a]\n: 1\n"])


@given(text=st.lists(_YAML_PIECES, max_size=8).map("".join))
@example(text="!!python/object/apply:os.system ['touch PWNED']\n")
@example(text="a: &a [*a]\n")
def test_any_yaml_file_gives_a_config_or_a_config_error(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        values = load_yaml(path)
        config = FitConfig.from_dict(values)
    except ParatrainError as error:
        assert isinstance(error, ConfigError), error
        assert one_line(str(error)), str(error)
        return
    _finite_numbers(config)
    assert not (tmp_path / "PWNED").exists()


def test_a_deeply_nested_yaml_file_is_a_config_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("[" * 5000)
    with pytest.raises(ConfigError):
        load_yaml(path)
