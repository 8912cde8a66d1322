"""Contenders (a strategy, optionally with compression) come from the registry's capabilities."""

import pytest

from paratrain.config import FitConfig
from paratrain.errors import ConfigError
from paratrain.strategies import (contender_options, default_contenders, split_contender, strategy_class,
                                  strategy_option_defaults)


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


def test_each_contender_gets_only_the_options_it_takes():
    """Code that builds configs for several contenders offers every setting to each (bench and the
    cost model offer powersgd_warmup to all); contender_options keeps those the strategy declares."""
    offered = {name: default for name, default in strategy_option_defaults().items() if name != "compress"}
    for contender in default_contenders():
        strategy, options = contender_options(contender, **offered)
        declared = set(strategy_class(strategy).Options.field_names())
        assert set(options) <= declared
        assert set(options) - {"compress"} == declared & set(offered)
        workers = 2 if strategy_class(strategy).needs_process_group else 1
        FitConfig.from_dict({"strategy": strategy, "workers": workers, **options})  # no ConfigError
