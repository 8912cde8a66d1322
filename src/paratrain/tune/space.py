"""Search spaces: typed parameters, conditions, and how a trial draws from them.

A space is an ordered mapping of parameter name to spec. The same space can be
written in YAML, as a plain dict, or with the classes here::

    n_layers: {type: int, low: 1, high: 4}
    units: {type: int, low: 16, high: 256, log: true}
    dropout: {type: float, low: 0.0, high: 0.5, when: "n_layers > 2"}
    activation: [relu, gelu, tanh]          # a bare list is a categorical

``when`` makes a parameter conditional on an *earlier* one: ``NAME OP VALUE``
with OP one of ``== != > >= < <= in``. A parameter whose condition is false is
not drawn and the fixed config's value applies. Spaces are stored in the study
(JSON) so that a worker on another machine draws from the same one.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from paratrain.errors import ConfigError

_OPERATORS = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
    "<": operator.lt, "<=": operator.le, "in": lambda a, b: a in b,
}
_CONDITION = re.compile(r"^\s*([A-Za-z_]\w*)\s*(==|!=|>=|<=|>|<|\bin\b)\s*(.+?)\s*$")
_TYPES = ("float", "int", "categorical")
_KEYS = {"float": ("type", "low", "high", "log", "step", "when"),
         "int": ("type", "low", "high", "log", "step", "when"),
         "categorical": ("type", "choices", "when")}


@dataclass(frozen=True)
class Condition:
    """``name op value``: the parameter is drawn only when this holds."""

    name: str
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str, owner: str) -> "Condition":
        import yaml

        match = _CONDITION.match(str(text))
        if not match:
            raise ConfigError(f"space parameter '{owner}': when={text!r} must look like 'NAME OP VALUE' "
                              f"with OP one of {', '.join(_OPERATORS)}, e.g. 'n_layers > 2'")
        name, op, raw = match.groups()
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"space parameter '{owner}': when={text!r}: cannot read the value {raw!r}") from None
        if op == "in" and not isinstance(value, list):
            raise ConfigError(f"space parameter '{owner}': when={text!r}: 'in' needs a list, e.g. 'optimizer in [sgd]'")
        return cls(name, op, value)

    def holds(self, drawn: Mapping[str, Any]) -> bool:
        """False when the parameter it depends on was not drawn either."""
        if self.name not in drawn:
            return False
        try:
            return bool(_OPERATORS[self.op](drawn[self.name], self.value))
        except TypeError:  # e.g. a string compared with a number: the condition does not hold
            return False

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.value}"


@dataclass(frozen=True)
class Float:
    """A float in [low, high], log-uniform when ``log``; ``step`` discretises it."""

    name: str
    low: float
    high: float
    log: bool = False
    step: float | None = None
    when: str | None = None

    def suggest(self, trial: Any) -> float:
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    def grid(self, points: int) -> list[float]:
        if self.step:
            count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            return [self.low + i * self.step for i in range(count)]
        return _spaced(self.low, self.high, points, self.log)

    def describe(self) -> str:
        step = f" step {self.step:g}" if self.step else ""
        return f"float [{self.low:g}, {self.high:g}]" + (" log" if self.log else "") + step


@dataclass(frozen=True)
class Int:
    """An integer in [low, high], log-uniform when ``log``."""

    name: str
    low: int
    high: int
    log: bool = False
    step: int = 1
    when: str | None = None

    def suggest(self, trial: Any) -> int:
        return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step)

    def grid(self, points: int) -> list[int]:
        values = sorted({int(round(v)) for v in _spaced(self.low, self.high, points, self.log)})
        return [v for v in values if (v - self.low) % self.step == 0] or [self.low]

    def describe(self) -> str:
        step = f" step {self.step}" if self.step != 1 else ""
        return f"int   [{self.low}, {self.high}]" + (" log" if self.log else "") + step


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (str, int, float, bool or None)."""

    name: str
    choices: tuple
    when: str | None = None

    def suggest(self, trial: Any) -> Any:
        return trial.suggest_categorical(self.name, list(self.choices))

    def grid(self, points: int) -> list[Any]:
        return list(self.choices)

    def describe(self) -> str:
        return "categorical " + ", ".join(str(c) for c in self.choices)


Param = Union[Float, Int, Categorical]


def _spaced(low: float, high: float, points: int, log: bool) -> list[float]:
    if points <= 1 or low == high:
        return [low]
    if log:
        ratio = (high / low) ** (1 / (points - 1))
        return [low * ratio**i for i in range(points)]
    return [low + (high - low) * i / (points - 1) for i in range(points)]


class SearchSpace:
    """An ordered set of parameters; conditions may only look back.

    Example:
        >>> space = SearchSpace.from_dict({"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        ...                                "n_layers": {"type": "int", "low": 1, "high": 4},
        ...                                "dropout": {"type": "float", "low": 0, "high": 0.5, "when": "n_layers > 2"}})
        >>> space.names
        ['lr', 'n_layers', 'dropout']
    """

    def __init__(self, params: Sequence[Param]) -> None:
        self.params = list(params)
        self.conditions: dict[str, Condition] = {}
        seen: list[str] = []
        for param in self.params:
            if param.name in seen:
                raise ConfigError(f"space parameter '{param.name}' is defined twice")
            _check_param(param)
            if param.when:
                condition = Condition.parse(param.when, param.name)
                if condition.name not in seen:
                    earlier = ", ".join(seen) or "none"
                    raise ConfigError(f"space parameter '{param.name}': when={param.when!r} names '{condition.name}', "
                                      f"which is not an earlier parameter (earlier: {earlier})")
                self.conditions[param.name] = condition
            seen.append(param.name)
        if not self.params:
            raise ConfigError("the search space is empty: give at least one parameter")

    @property
    def names(self) -> list[str]:
        return [param.name for param in self.params]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Draw every parameter whose condition holds, in order, from an Optuna trial."""
        drawn: dict[str, Any] = {}
        for param in self.params:
            condition = self.conditions.get(param.name)
            if condition is None or condition.holds(drawn):
                drawn[param.name] = param.suggest(trial)
        return drawn

    def grid(self, points: int) -> dict[str, list[Any]]:
        """Values per parameter for Optuna's GridSampler; continuous ranges get ``points`` values."""
        return {param.name: param.grid(points) for param in self.params}

    def grid_size(self, points: int) -> int:
        return math.prod(len(values) for values in self.grid(points).values())

    def describe(self) -> str:
        """One line per parameter, as printed at the start of a search."""
        width = max(len(name) for name in self.names)
        lines = []
        for param in self.params:
            when = f"  (when {self.conditions[param.name]})" if param.name in self.conditions else ""
            lines.append(f"  {param.name:<{width}}  {param.describe()}{when}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-friendly form, the one stored in the study and read back by ``from_dict``."""
        out: dict[str, dict[str, Any]] = {}
        for param in self.params:
            if isinstance(param, Categorical):
                spec: dict[str, Any] = {"type": "categorical", "choices": list(param.choices)}
            else:
                spec = {"type": "float" if isinstance(param, Float) else "int", "low": param.low,
                        "high": param.high, "log": param.log}
                if isinstance(param, Float) and param.step is not None:
                    spec["step"] = param.step
                if isinstance(param, Int) and param.step != 1:
                    spec["step"] = param.step
            if param.when:
                spec["when"] = param.when
            out[param.name] = spec
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SearchSpace":
        """From ``{name: spec}``; a spec is a mapping with ``type``, a bare list (categorical) or a Param."""
        if not isinstance(values, Mapping):
            raise ConfigError("a search space must be a mapping of parameter names to specs, "
                              f"got {type(values).__name__}")
        return cls([_param_from_spec(str(name), spec) for name, spec in values.items()])

    @classmethod
    def load(cls, source: "SearchSpace | Mapping[str, Any] | str | Path") -> "SearchSpace":
        """A SearchSpace, a dict, or the path of a YAML file; file errors name the file."""
        if isinstance(source, SearchSpace):
            return source
        if isinstance(source, Mapping):
            return cls.from_dict(source)
        from paratrain.config import load_yaml

        try:
            return cls.from_dict(load_yaml(source))
        except ConfigError as exc:
            if str(exc).startswith("config file"):
                raise ConfigError(str(exc).replace("config file", "space file", 1)) from None
            raise ConfigError(f"space file '{source}': {exc}") from None


def _param_from_spec(name: str, spec: Any) -> Param:
    if isinstance(spec, (Float, Int, Categorical)):
        return spec
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"space parameter '{name}': must be a mapping like {{type: float, low: 0, high: 1}} "
                          f"or a list of choices, got {spec!r}")
    kind = spec.get("type")
    if kind is None:
        kind = "categorical" if "choices" in spec else None
    if kind not in _TYPES:
        raise ConfigError(f"space parameter '{name}': type={kind!r} is not one of: {', '.join(_TYPES)}")
    unknown = [key for key in spec if key not in _KEYS[kind]]
    if unknown:
        raise ConfigError(f"space parameter '{name}': unknown key '{unknown[0]}' for a {kind}; "
                          f"known: {', '.join(_KEYS[kind])}")
    when = spec.get("when")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"space parameter '{name}': choices={choices!r} must be a non-empty list")
        return Categorical(name, tuple(choices), when)
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"space parameter '{name}': missing '{key}' (a {kind} needs low and high)")
    low, high = spec["low"], spec["high"]
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"space parameter '{name}': log={log!r} must be true or false")
    if kind == "int":
        return Int(name, low, high, log, spec.get("step", 1), when)
    return Float(name, low, high, log, spec.get("step"), when)


def _check_param(param: Param) -> None:
    name = param.name
    if isinstance(param, Categorical):
        for choice in param.choices:
            if choice is not None and not isinstance(choice, (str, int, float, bool)):
                raise ConfigError(f"space parameter '{name}': choice {choice!r} must be a string, number, "
                                  "boolean or null (write a list of layer sizes as the string '64,64')")
        return
    number = int if isinstance(param, Int) else (int, float)
    for key in ("low", "high"):
        value = getattr(param, key)
        if isinstance(value, bool) or not isinstance(value, number):
            kind = "an integer" if isinstance(param, Int) else "a number"
            raise ConfigError(f"space parameter '{name}': {key}={value!r} must be {kind}")
        if not math.isfinite(value):
            raise ConfigError(f"space parameter '{name}': {key}={value!r} must be a finite number")
    if not param.low <= param.high:
        raise ConfigError(f"space parameter '{name}': `low <= high` must hold, "
                          f"but got low={param.low}, high={param.high}")
    if param.log and param.low <= 0:
        raise ConfigError(f"space parameter '{name}': log=true needs low > 0, but got low={param.low}")
    step = param.step
    if step is not None and (isinstance(step, bool) or not isinstance(step, number) or not 0 < step < math.inf):
        raise ConfigError(f"space parameter '{name}': step={step!r} must be a positive number")
    if param.log and step not in (None, 1):
        raise ConfigError(f"space parameter '{name}': log=true cannot be combined with step={step}")
