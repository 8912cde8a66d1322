"""Contenders (a strategy, optionally with compression) come from the registry's capabilities."""

import pytest

from paratrain.errors import ConfigError
from paratrain.strategies import default_contenders, split_contender, strategy_class


def test_default_contenders_follow_the_capabilities():
    specs = default_contenders()
    assert "ddp+topk:0.01" in specs and "ddp+powersgd:4" in specs and "localsgd:8" in specs
    assert not any(spec.startswith("stale") for spec in specs)  # a diagnostic probe, not a way to train
    for spec in specs:
        strategy, compress = split_contender(spec)
        cls = strategy_class(strategy)
        assert not cls.diagnostic_only
        assert compress is None or cls.supports_compression
    assert "single" not in default_contenders(include_single=False)


@pytest.mark.parametrize("spec, message", [
    ("localsgd:8+topk:0.01", "takes no compression"),
    ("ddp+", "nothing after '\\+'"),
    ("nope+topk:0.01", "unknown; known strategies"),
])
def test_bad_contenders_name_the_rule(spec, message):
    with pytest.raises(ConfigError, match=message):
        split_contender(spec)
