"""Options a strategy declares for itself.

A strategy with settings of its own (a pipeline's micro-batches, FSDP's resharding)
declares them as a frozen dataclass subclassing :class:`StrategyOptions`, with a
docstring per field and validation in ``__post_init__``; the class names it as
``Options``. ``ParallelConfig.options`` holds the values given, by field name; the CLI's
flags and YAML's flat keys land there. Validation imports nothing heavier than this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from paratrain.errors import ConfigError


@dataclass(frozen=True)
class StrategyOptions:
    """No options."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, strategy: str, values: Mapping[str, Any]) -> "StrategyOptions":
        """The options from ``values``; ConfigError for a name this strategy does not take."""
        known = cls.field_names()
        for key in values:
            if key not in known:
                takes = f"its options: {', '.join(known)}" if known else "it takes none"
                owners = _owners(key)
                who = f"; {key} is for {', '.join(owners)}" if owners else ""
                raise ConfigError(f"option {key}={values[key]!r} does not apply to strategy {strategy!r} "
                                  f"({takes}){who}: drop it or choose such a strategy")
        return cls(**values)


def _owners(option: str) -> list[str]:
    """The strategies that declare ``option`` (imported here: the registry imports this module)."""
    from paratrain.strategies import strategy_option_fields

    return strategy_option_fields().get(option, [])


def check_int_option(name: str, value: Any, minimum: int) -> None:
    """An integer option of at least ``minimum`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}")


def check_choice_option(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(choices)}")


def check_flag_option(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be true or false")
