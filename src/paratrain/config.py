"""Typed configuration shared by the CLI, YAML files and the Python API.

A run is described by one :class:`FitConfig` made of five sections. Every
field is validated when the dataclass is built, so a bad value fails before
any file is read or any process is started. Errors name the field, the rule
and the value.

YAML files may use the sections (``model: {hidden: [64, 64]}``) or flat keys
(``hidden: [64, 64]``): every field name is unique across sections, so a flat
key finds its section.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from paratrain.errors import ConfigError

_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("none", "cosine", "step", "onecycle")
_ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "sigmoid", "leaky_relu")
_NORMS = ("none", "batch", "layer")
_TASKS = ("auto", "regression", "classification")
_TRACKERS = ("mlflow", "tensorboard")
_MODELS = ("mlp", "formula")
_DEVICES = ("auto", "cpu", "cuda")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(choices)}")


def _check_number(name: str, value: Any, rule: str = "") -> None:
    """A real, finite number: NaN fails no `<` test, and infinity trains a NaN model, so both are refused here."""
    rule = f" {rule}" if rule else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={value!r} must be a number{rule}")
    if not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number{rule}")


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    rule = ">= 0" if allow_zero else "> 0"
    _check_number(name, value, rule)
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name}={value!r} must be {rule}")


def _check_fraction(name: str, value: Any) -> None:
    """A number in [0, 1)."""
    _check_number(name, value, "in [0, 1)")
    if not 0 <= value < 1:
        raise ConfigError(f"{name}={value!r} must be in [0, 1)")


def _check_text(name: str, value: Any, *, path: bool = False) -> str | None:
    """None or text (a path may also be given as a pathlib.Path); returns it as str."""
    if value is None or isinstance(value, str):
        return value
    if path and isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ConfigError(f"{name}={value!r} must be text{' (a path)' if path else ''}, not {type(value).__name__}")


def _check_flag(name: str, value: Any) -> None:
    # A YAML `shuffle: 0.5` or `overlap: "no"` must not pass as true.
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be true or false")


def _check_names(name: str, value: Any) -> tuple[str, ...]:
    """Column names: a list of text, or one text with commas ('id,date')."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(f"{name}={value!r} must be a list of column names, e.g. ['id', 'date']")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be an integer")
    if value < minimum:
        raise ConfigError(f"{name}={value!r} must be >= {minimum}")


@dataclass
class DataConfig:
    """Where the data comes from and how it is encoded."""

    path: str | None = None
    """Training table: .csv, .parquet or .npz."""
    target: str | None = None
    """Name of the target column."""
    task: str = "auto"
    """'regression', 'classification', or 'auto' (a text target means classification)."""
    drop: tuple[str, ...] = ()
    """Columns to ignore, such as IDs."""
    impute: str | None = None
    """Fill missing values with the training 'mean' or 'median'; None refuses missing values."""
    max_categories: int = 20
    """A text column with more distinct values than this is refused rather than one-hot encoded."""
    unseen_category: str = "error"
    """At predict time, a category not seen in training is an 'error' or an all-'zeros' code."""
    val_fraction: float = 0.2
    """Fraction of rows held out for validation."""
    shuffle: bool = True
    """Shuffle training rows each epoch (turn off only for exact-equivalence checks)."""

    def __post_init__(self) -> None:
        self.path = _check_text("path", self.path, path=True)
        self.target = _check_text("target", self.target)
        self.drop = _check_names("drop", self.drop)
        _check_flag("shuffle", self.shuffle)
        _check_choice("task", self.task, _TASKS)
        if self.impute is not None:
            _check_choice("impute", self.impute, ("mean", "median"))
        _check_choice("unseen_category", self.unseen_category, ("error", "zeros"))
        _check_int("max_categories", self.max_categories, 1)
        _check_fraction("val_fraction", self.val_fraction)


@dataclass
class ModelConfig:
    """Which model to train."""

    model: str = "mlp"
    """'mlp' or 'formula'."""
    hidden: tuple[int, ...] = (64, 64)
    """MLP hidden layer sizes."""
    activation: str = "relu"
    """MLP activation function."""
    dropout: float = 0.0
    """MLP dropout probability after each hidden layer."""
    norm: str = "none"
    """MLP normalization after each hidden linear layer: 'none', 'batch' or 'layer'."""
    formula: str | None = None
    """Formula model, e.g. 'b1*(1-exp(-b2*x))'; names that are data columns are variables."""
    family: str | None = None
    """Built-in formula family instead of a formula: polynomial, exponential, logarithmic, power, logistic."""
    degree: int = 2
    """Degree of the 'polynomial' family."""
    init: dict[str, float] = field(default_factory=dict)
    """Initial values of formula parameters (default 1.0)."""

    def __post_init__(self) -> None:
        _check_choice("model", self.model, _MODELS)
        if isinstance(self.hidden, str):
            self.hidden = parse_int_list("hidden", self.hidden)
        if not isinstance(self.hidden, (list, tuple)):
            raise ConfigError(f"hidden={self.hidden!r} must be a list of layer sizes, e.g. [64, 64]")
        self.hidden = tuple(self.hidden)
        for size in self.hidden:
            _check_int("hidden", size, 1)
        _check_choice("activation", self.activation, _ACTIVATIONS)
        _check_fraction("dropout", self.dropout)
        _check_choice("norm", self.norm, _NORMS)
        _check_int("degree", self.degree, 1)
        self.formula = _check_text("formula", self.formula)
        self.family = _check_text("family", self.family)
        if self.model == "formula" and not (self.formula or self.family):
            raise ConfigError("model='formula' needs a formula (--formula 'b1*exp(b2*x)') or a family (--family exponential)")
        if self.formula and self.family:
            raise ConfigError(f"give formula={self.formula!r} or family={self.family!r}, not both")
        if not isinstance(self.init, Mapping):
            raise ConfigError(f"init={self.init!r} must map parameter names to numbers, e.g. {{'b1': 0.5}}")
        for name, value in self.init.items():
            _check_number(f"init[{name!r}]", value)


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    optimizer: str = "adam"
    """'adam', 'adamw' or 'sgd' (with momentum)."""
    lr: float = 1e-3
    """Learning rate (the peak rate for 'onecycle')."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 0.0
    """L2 penalty (decoupled for AdamW)."""
    schedule: str = "none"
    """'none', 'cosine' (to zero over the run), 'step' or 'onecycle'."""
    step_size: int = 10
    """Epochs between decays for the 'step' schedule."""
    gamma: float = 0.1
    """Decay factor for the 'step' schedule."""

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, _OPTIMIZERS)
        _check_positive("lr", self.lr)
        _check_positive("momentum", self.momentum, allow_zero=True)
        _check_positive("weight_decay", self.weight_decay, allow_zero=True)
        _check_choice("schedule", self.schedule, _SCHEDULES)
        _check_int("step_size", self.step_size, 1)
        _check_positive("gamma", self.gamma)


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 20
    """Number of passes over the training data."""
    batch_size: int = 256
    """Rows per micro-batch on each worker (the global batch is batch_size * accumulate * workers)."""
    accumulate: int = 1
    """Micro-batches per optimizer step (gradient accumulation)."""
    patience: int | None = None
    """Stop early after this many epochs without a better validation loss; None trains all epochs."""
    min_delta: float = 0.0
    """Smallest improvement of the validation loss that counts for early stopping."""
    seed: int = 0
    """Seed for initialization, splitting and shuffling."""
    precision: str = "auto"
    """'auto' (bf16 where a short measured probe finds it faster with the same loss, else fp32),
    'fp32', 'bf16' (autocast on CPU or CUDA) or 'fp16' (CUDA only, with a gradient scaler)."""
    device: str = "auto"
    """'cpu', 'cuda' or 'auto' (CUDA when available)."""
    stop_after: int | None = None
    """End this session after this many epochs (checkpointed); continue later with --resume."""
    checkpoint_every: int = 1
    """Write checkpoint.pt every this many epochs and at the end; 0 never (then a run cannot be resumed)."""
    checkpoint_every_steps: int = 0
    """Also write checkpoint.pt every this many optimizer steps inside an epoch (0: only at epochs' ends):
    bounds the work a killed worker loses, and a resume continues mid-epoch exactly. Above 0, dropout is
    reseeded per step (instead of per epoch), so its masks differ from those of a run with 0."""
    evals_per_epoch: int = 1
    """Validations per epoch: above 1, the epoch's record also lists validations at evenly spaced
    steps inside the epoch (finer loss curves and time-to-target on large data sets)."""

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("accumulate", self.accumulate, 1)
        if self.patience is not None:
            _check_int("patience", self.patience, 1)
        _check_positive("min_delta", self.min_delta, allow_zero=True)
        _check_int("seed", self.seed, 0)
        _check_choice("precision", self.precision, _PRECISIONS)
        _check_choice("device", self.device, _DEVICES)
        if self.stop_after is not None:
            _check_int("stop_after", self.stop_after, 1)
        _check_int("checkpoint_every", self.checkpoint_every, 0)
        _check_int("checkpoint_every_steps", self.checkpoint_every_steps, 0)
        _check_int("evals_per_epoch", self.evals_per_epoch, 1)
        if self.stop_after is not None and self.checkpoint_every == 0:
            raise ConfigError("stop_after needs checkpoints to resume from, but checkpoint_every=0")


@dataclass
class ParallelConfig:
    """How the work is spread over processes."""

    strategy: str = "single"
    """Parallel strategy by name; see `paratrain strategies`."""
    workers: int = 1
    """Number of worker processes on this machine (under torchrun: taken from torchrun)."""
    threads: int | None = None
    """Intra-op threads per worker; default: the cores divided among the workers."""
    timeout_s: float = 300.0
    """Seconds a collective or the rendezvous may wait before the run fails instead of hanging."""
    max_restarts: int = 0
    """Local workers (--workers N): when a worker process dies, relaunch the group from the last
    checkpoint up to this many times. Under torchrun, torchrun's own --max-restarts governs."""
    link: str = "loopback"
    """How the local workers are joined: 'loopback', or an emulated network such as '100mbit' or
    '1gbit' (each worker in its own network namespace, the link limited with tc; needs root)."""
    calibration: str | None = None
    """strategy 'auto': the `paratrain calibrate` file to predict from (default: a quick probe)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The chosen strategy's own settings by name (ddp's ``compress``, localsgd's ``sync_warmup``,
    async's ``max_staleness``, ...): each strategy declares and validates them (its ``Options``,
    listed by `paratrain strategies`); flat keys and CLI flags of those names land here."""

    def __post_init__(self) -> None:
        _check_int("workers", self.workers, 1)
        if not isinstance(self.options, Mapping):
            raise ConfigError(f"options={self.options!r} must map option names to values, e.g. {{'microbatches': 4}}")
        self.options = dict(self.options)
        from paratrain.launch.links import parse_link

        self.link = parse_link(self.link).name
        if self.threads is not None:
            _check_int("threads", self.threads, 1)
        _check_positive("timeout_s", self.timeout_s)
        _check_int("max_restarts", self.max_restarts, 0)
        self.calibration = _check_text("calibration", self.calibration, path=True)
        if not isinstance(self.strategy, str):
            raise ConfigError(f"strategy={self.strategy!r} must be a strategy name; see `paratrain strategies`")
        if self.strategy == AUTO_STRATEGY:
            # fit resolves it (costmodel.auto) before anything is launched; the compression is part of the choice.
            if self.options.get("compress"):
                raise ConfigError(f"compress={self.options['compress']!r} cannot be combined with strategy='auto', "
                                  "which chooses the compression too; drop --compress or name a strategy")
            if self.options:
                raise ConfigError(f"options {sorted(self.options)} belong to a named strategy, but strategy='auto'; "
                                  "name the strategy, or drop them")
            return
        # Imported here: the registry imports torch, which config users may not need yet.
        from paratrain.strategies import split_strategy_name, strategy_class

        cls = strategy_class(self.strategy)  # ConfigError listing the known names
        # The options: one the strategy does not declare is a ConfigError naming the strategies that
        # take it (StrategyOptions.build); then the argument ('localsgd:8') and how they combine.
        cls.Options.build(cls.name, self.options)
        cls(split_strategy_name(self.strategy)[1], self)
        if not cls.needs_process_group and self.workers != 1:
            raise ConfigError(
                f"strategy={self.strategy!r} runs one process, but workers={self.workers}; "
                "use --strategy ddp for several workers"
            )
        self._check_link(cls)

    def _check_link(self, cls: type) -> None:
        """An emulated link joins separate hosts: it needs several workers, and a strategy that can span hosts."""
        if self.link == "loopback":
            return
        if not cls.runs_across_hosts:
            raise ConfigError(f"link={self.link!r} puts each worker on its own host, but strategy={self.strategy!r} "
                              "runs only on one machine (shared memory); use --link loopback or another strategy")
        if self.workers < 2:
            raise ConfigError(f"link={self.link!r} joins workers on emulated hosts and needs workers >= 2, "
                              f"but workers={self.workers}; use --workers 2 or more, or --link loopback")


AUTO_STRATEGY = "auto"
"""strategy='auto': the cost model's choice for the run's workers and link."""


@dataclass
class OutputConfig:
    """Where results go and how much is printed."""

    out: str | None = None
    """Run directory; default: a new folder under runs/."""
    verbosity: int = 1
    """0 quiet, 1 normal (progress and summary), 2 verbose (debug logging)."""
    tracking: str | None = None
    """Also log the run to an experiment tracker: 'mlflow' or 'tensorboard' (optional extra
    ``paratrain[tracking]``); None logs only to the run directory."""
    tracking_uri: str | None = None
    """Where the tracker writes: an MLflow tracking URI (default: file store <run_dir>/mlruns) or
    a TensorBoard log directory (default: <run_dir>/tensorboard)."""

    def __post_init__(self) -> None:
        self.out = _check_text("out", self.out, path=True)
        _check_int("verbosity", self.verbosity, 0)
        self.tracking = _check_text("tracking", self.tracking)
        if self.tracking is not None:
            _check_choice("tracking", self.tracking, _TRACKERS)
        self.tracking_uri = _check_text("tracking_uri", self.tracking_uri, path=True)
        if self.tracking_uri is not None and self.tracking is None:
            raise ConfigError(f"tracking_uri={self.tracking_uri!r} needs a tracker; give tracking='mlflow' or "
                              "'tensorboard' (--tracking) too")


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "parallel": ParallelConfig,
    "output": OutputConfig,
}


@dataclass
class FitConfig:
    """Everything that describes one training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        if self.parallel.strategy != AUTO_STRATEGY:
            from paratrain.strategies import create_strategy

            # The strategy's checks that need the model (tensor parallelism splits an MLP's widths).
            create_strategy(self.parallel.strategy, self.parallel).check_model_config(self.model)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (YAML/JSON friendly), the resolved config of a run."""
        out = {}
        for name in _SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            out[name] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in section.items()}
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "FitConfig":
        """Build from nested sections, flat keys, or a mix; unknown keys are an error."""
        return cls().updated(values)

    def updated(self, values: Mapping[str, Any]) -> "FitConfig":
        """A copy with some fields replaced (nested or flat keys), validated again."""
        sections = {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}
        legacy: list[tuple[str, Any]] = []
        for key, value in values.items():
            if key in _SECTIONS and isinstance(value, Mapping):
                for sub_key, sub_value in value.items():
                    if key == "parallel" and sub_key not in sections[key] and sub_key in strategy_option_names():
                        legacy.append((sub_key, sub_value))  # after the section's own `options:`, if any
                    elif sub_key not in sections[key]:
                        raise ConfigError(f"unknown field {key}.{sub_key}; known: {', '.join(sections[key])}")
                    else:
                        sections[key][sub_key] = sub_value
            elif key not in _section_fields() and key in strategy_option_names():
                _set_option(sections["parallel"], key, value)
            else:
                sections[_section_of(key)][key] = value
        for key, value in legacy:
            _set_legacy_option(sections["parallel"], key, value)
        return FitConfig(**{name: _SECTIONS[name](**fields) for name, fields in sections.items()})


def _set_option(parallel: dict[str, Any], key: str, value: Any) -> None:
    """A strategy's own option given as a flat key (``compress``, ``microbatches``): kept by name in
    parallel.options. None means "not given" (the strategy's default), as on the command line, so
    that ``{"strategy": s, "compress": None}`` suits every strategy."""
    options = dict(parallel["options"])
    if value is None:
        options.pop(key, None)
    else:
        options[key] = value
    parallel["options"] = options


def _set_legacy_option(parallel: dict[str, Any], key: str, value: Any) -> None:
    """An option inside the ``parallel:`` section, as run directories' config.yaml held them before
    strategies declared their own (``compress: null``, ``sync_warmup: 0`` for every strategy): a value
    equal to the option's default is dropped, since it said nothing; any other goes to options."""
    from paratrain.strategies import strategy_option_defaults

    if value == strategy_option_defaults().get(key, object()):
        return
    _set_option(parallel, key, value)


def _section_fields() -> set[str]:
    return {f.name for section in _SECTIONS.values() for f in dataclasses.fields(section)}


def strategy_option_names() -> set[str]:
    """Names of every option some strategy declares (their flat keys route to parallel.options)."""
    from paratrain.strategies import strategy_option_fields

    return set(strategy_option_fields())


def _section_of(key: str) -> str:
    for name, section in _SECTIONS.items():
        if key in {f.name for f in dataclasses.fields(section)}:
            return name
    raise ConfigError(f"unknown config field {key!r}; see `paratrain fit --help` for the fields")


def parse_int_list(name: str, text: str) -> tuple[int, ...]:
    """Parse '256,256' into (256, 256), naming the field on error."""
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(f"{name}={text!r} must be comma-separated integers, e.g. 256,256") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with clear errors."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"config file '{path}' is nested too deeply to be a config") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of fields, got {type(loaded).__name__}")
    return loaded
