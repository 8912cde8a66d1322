"""Turn a table into model inputs and targets: categories, imputation, scaling.

:class:`TableEncoder` learns everything (categories, fill values, means and standard
deviations, class labels) from the training rows in :meth:`TableEncoder.fit` and
applies exactly that to any later table, so validation and prediction data are
encoded the way training data was. Its state is plain JSON (:meth:`to_dict`), so a
checkpoint can carry it.

How each feature column is encoded:

- numeric: missing values filled (``impute``), then standardized with the training
  mean and standard deviation (``standardize_inputs``);
- boolean: ``False``/``True`` -> 0/1 (not standardized, like a one-hot code);
- text or categorical: one 0/1 column per category seen in training, sorted. A
  missing value (with ``impute`` set) or an unseen one (with
  ``unseen_category="zeros"``) becomes the all-zero code. Categories are compared
  as text, so ``1`` and ``"1"`` are the same category.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from paratrain.data.tables import (bool_values, class_labels, column_kind, missing_mask,
                                   numeric_values, preview_names, quoted, shown, text_values)
from paratrain.errors import ConfigError, DataError

_FORMAT = "paratrain.TableEncoder"
_VERSION = 1
_MISSING_HINT = "use --impute mean|median or clean the data"


@dataclass(frozen=True)
class EncodingOptions:
    """How to encode a table; validated at construction.

    Example:
        >>> EncodingOptions(target="price", drop=("id",), impute="median").task
        'auto'
    """

    target: str
    """Name of the column to predict."""
    task: str = "auto"
    """One of regression, classification, or auto (classification for a non-numeric target)."""
    drop: tuple[str, ...] = ()
    """Columns that are neither features nor target (ids, leaks)."""
    impute: str | None = None
    """None refuses missing feature values; "mean"/"median" fill them (a category: all zeros)."""
    max_categories: int = 20
    """A text column with more distinct values is refused (usually an id: it only memorises)."""
    standardize_inputs: bool = True
    """Scale numeric features to mean 0, std 1 with the training statistics."""
    standardize_target: bool = True
    """Scale a regression target the same way; ``inverse_target`` undoes it."""
    unseen_category: str = "error"
    """A category not seen in training: "error" refuses it, "zeros" encodes all zeros."""

    def __post_init__(self) -> None:
        # Accept any sequence (a list from YAML or argparse) but store a tuple,
        # so the options stay hashable and compare equal after a round-trip.
        object.__setattr__(self, "drop", tuple(self.drop))
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError(f"target={self.target!r} must be a non-empty column name")
        _check_choice("task", self.task, ("auto", "regression", "classification"))
        _check_choice("impute", self.impute, (None, "mean", "median"))
        _check_choice("unseen_category", self.unseen_category, ("error", "zeros"))
        if type(self.max_categories) is not int or self.max_categories < 1:
            raise ConfigError(f"max_categories={self.max_categories!r} must be an integer >= 1")
        if self.target in self.drop:
            raise ConfigError(
                f"target column {quoted(self.target)} is also in drop={list(self.drop)}; "
                "remove it from --drop"
            )


@dataclass
class _ColumnSpec:
    """What fit learned about one feature column."""

    name: str
    kind: str  # "numeric" | "bool" | "category"
    fill: float | None = None  # imputed value; None when not imputing
    mean: float = 0.0
    std: float = 1.0
    categories: list = field(default_factory=list)

    def feature_names(self) -> list[str]:
        if self.kind == "category":
            return [f"{self.name}={category}" for category in self.categories]
        return [str(self.name)]


@dataclass
class _TargetSpec:
    """What fit learned about the target column."""

    name: str
    task: str  # "regression" | "classification"
    mean: float = 0.0
    std: float = 1.0
    classes: list = field(default_factory=list)
    label_type: str | None = None  # "bool" | "int" | "str" for classification


class TableEncoder:
    """Encode a DataFrame into float32 features and a target array.

    Args:
        options: What to predict and how to encode.

    Example:
        >>> df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "color": ["red", "blue", "red"],
        ...                    "y": [0.5, 1.5, 2.5]})
        >>> encoder = TableEncoder(EncodingOptions(target="y")).fit(df)
        >>> encoder.feature_names_out
        ['x', 'color=blue', 'color=red']
        >>> encoder.transform_features(df).shape, encoder.task
        ((3, 3), 'regression')
    """

    # Learned by fit (or restored by from_dict); absent before:
    input_columns: list  # raw feature columns, in table order
    feature_names_out: list[str]  # one per output feature: "x1", "color=blue", ...
    task: str  # resolved: "regression" | "classification"
    classes: list  # sorted class labels; [] for regression

    def __init__(self, options: EncodingOptions):
        self.options = options
        self._columns: list[_ColumnSpec] | None = None
        self._target: _TargetSpec | None = None
        self.hints: list[str] = []
        """One-line warnings from :meth:`fit` for the user (not errors: training goes on)."""

    def _set_state(self, columns: list[_ColumnSpec], target: _TargetSpec) -> None:
        self._columns, self._target = columns, target
        self.input_columns = [spec.name for spec in columns]
        self.feature_names_out = [name for spec in columns for name in spec.feature_names()]
        self.task, self.classes = target.task, list(target.classes)

    def _fitted(self) -> tuple[list[_ColumnSpec], _TargetSpec]:
        if self._columns is None or self._target is None:
            raise RuntimeError("TableEncoder is not fitted; call fit(train_df) first")
        return self._columns, self._target

    def fit(self, df: pd.DataFrame) -> TableEncoder:
        """Learn categories, fill values, scaling and classes from ``df``.

        Call it on the training rows only, so no statistic leaks from validation data.

        Raises:
            DataError: Unknown target or drop column, missing or infinite value,
                too many categories, unusable target.
        """
        options = self.options
        _check_frame(df)
        if options.target not in df.columns:
            raise DataError(
                f"target column {quoted(options.target)} is not in the data; "
                f"available columns: {preview_names(df.columns)}"
            )
        for name in options.drop:
            if name not in df.columns:
                raise DataError(
                    f"column {quoted(name)} given in --drop is not in the data; "
                    f"available columns: {preview_names(df.columns)}"
                )
        names = [c for c in df.columns if c != options.target and c not in options.drop]
        if not names:
            raise DataError(
                f"no feature columns left after removing target {quoted(options.target)} and "
                f"dropped columns {list(options.drop)}; keep at least one input column"
            )
        target = _fit_target(df[options.target], options)
        self._set_state([_fit_column(df[name], options) for name in names], target)
        self.hints = [hint for hint in [_integer_label_hint(df[options.target], options)] if hint]
        return self

    def transform_features(self, df: pd.DataFrame) -> np.ndarray:
        """Encode the feature columns of ``df`` (a target column there is ignored).

        Returns:
            A float32 array of shape ``(len(df), len(feature_names_out))``.

        Raises:
            DataError: Absent column; missing, infinite, non-numeric or unseen value.
        """
        columns, _ = self._fitted()
        _check_frame(df, allow_empty=True)
        absent = [spec.name for spec in columns if spec.name not in df.columns]
        if absent:
            raise DataError(
                f"feature columns {absent} seen in training are not in the data; "
                f"available columns: {preview_names(df.columns)}"
            )
        # Each column's block goes straight into one float32 array: no float64 copy of the whole table.
        out = np.empty((len(df), len(self.feature_names_out)), dtype=np.float32)
        start = 0
        for spec in columns:
            block = _encode_column(df[spec.name], spec, self.options)
            out[:, start : start + block.shape[1]] = block
            start += block.shape[1]
        return out

    def transform_target(self, df: pd.DataFrame) -> np.ndarray:
        """Encode the target column of ``df``.

        Returns:
            Regression: float32 values, standardized if ``standardize_target``.
            Classification: int64 indices into :attr:`classes`.

        Raises:
            DataError: Absent column; missing, infinite or unseen value.
        """
        _, target = self._fitted()
        _check_frame(df, allow_empty=True)
        if target.name not in df.columns:
            raise DataError(
                f"target column {quoted(target.name)} is not in the data; "
                f"available columns: {preview_names(df.columns)}"
            )
        series = df[target.name]
        _refuse_missing_target(series)
        if target.task == "regression":
            label = f"target column {quoted(target.name)}"
            values = numeric_values(series, label)
            return _scaled(values, target.mean, target.std, label).astype(np.float32)
        labels = class_labels(series, target.label_type)
        indices = pd.Index(target.classes).get_indexer(labels)
        unseen = np.flatnonzero(indices < 0)
        if unseen.size:
            row = int(unseen[0])
            raise DataError(
                f"target column {quoted(target.name)} has class {labels[row]!r} at row {row + 1} "
                f"that was not seen in training (known: {preview_names(target.classes)}); "
                "remove those rows or include the class in the training data"
            )
        return indices.astype(np.int64)

    def inverse_target(self, y: np.ndarray) -> np.ndarray:
        """Map encoded targets (or predictions) back to the original units or labels.

        Args:
            y: Regression: standardized values. Classification: class indices.

        Returns:
            Regression: float64 values. Classification: the original labels.
        """
        _, target = self._fitted()
        if target.task == "regression":
            return np.asarray(y, dtype=np.float64) * target.std + target.mean
        indices = np.asarray(y)
        if indices.dtype.kind not in "iu" or (
                indices.size and (indices.min() < 0 or indices.max() >= len(target.classes))):
            raise DataError(f"class indices must be integers in [0, {len(target.classes) - 1}]")
        return np.asarray(target.classes)[indices]

    def to_dict(self) -> dict:
        """The fitted state as plain JSON types; :meth:`from_dict` restores it exactly."""
        columns, target = self._fitted()
        options = asdict(self.options)
        options["drop"] = list(self.options.drop)
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "options": options,
            "columns": [asdict(spec) for spec in columns],
            "target": asdict(target),
        }

    @classmethod
    def from_dict(cls, state: dict) -> TableEncoder:
        """Rebuild a fitted encoder from :meth:`to_dict` output."""
        if not isinstance(state, dict) or state.get("format") != _FORMAT \
                or state.get("version") != _VERSION:
            raise DataError(f"not a saved TableEncoder of format '{_FORMAT}' version {_VERSION}")
        try:
            encoder = cls(EncodingOptions(**state["options"]))
            encoder._set_state([_ColumnSpec(**spec) for spec in state["columns"]],
                               _TargetSpec(**state["target"]))
        except (KeyError, TypeError) as error:
            raise DataError(f"saved TableEncoder is incomplete or damaged: {error}") from None
        return encoder


# -- fitting helpers ------------------------------------------------------------------


def _fit_column(series: pd.Series, options: EncodingOptions) -> _ColumnSpec:
    name, kind = series.name, column_kind(series)
    missing = missing_mask(series)
    if missing.any() and options.impute is None:
        raise DataError(_missing_message(name, missing))
    if missing.all():
        raise DataError(
            f"column {quoted(name)} has no values (all {len(series)} rows are missing); "
            f"drop it with --drop {shown(name)}"
        )
    if kind == "category":
        categories = sorted(set(text_values(series, missing)[~missing]))
        if len(categories) > options.max_categories:
            raise DataError(
                f"column {quoted(name)} is text with {len(categories)} distinct values (more than "
                f"max_categories={options.max_categories}): it cannot be a category; "
                f"drop it with --drop {shown(name)}"
            )
        return _ColumnSpec(name, kind, categories=categories)
    values = _values(series, kind, f"column {quoted(name)}")
    spec = _ColumnSpec(name, kind)
    if options.impute is not None:
        present = values[~np.isnan(values)]
        spec.fill = float(np.mean(present) if options.impute == "mean" else np.median(present))
        values = np.where(np.isnan(values), spec.fill, values)
    # Booleans stay 0/1 like one-hot codes; only real numbers are rescaled.
    if kind == "numeric" and options.standardize_inputs:
        spec.mean, spec.std = _mean_std(values)
    return spec


def _fit_target(series: pd.Series, options: EncodingOptions) -> _TargetSpec:
    name, kind = series.name, column_kind(series)
    _refuse_missing_target(series)
    task = options.task
    if task == "auto":
        task = "regression" if kind == "numeric" else "classification"
    if task == "regression":
        if kind == "category":
            raise DataError(
                f"target column {quoted(name)} is text, so it cannot be a regression target; "
                "use --task classification"
            )
        values = _values(series, kind, f"target column {quoted(name)}")
        spec = _TargetSpec(name, task)
        if options.standardize_target:
            spec.mean, spec.std = _mean_std(values)
        return spec
    label_type = {"bool": "bool", "numeric": "int", "category": "str"}[kind]
    classes = sorted(set(class_labels(series, label_type)))
    if len(classes) < 2:
        raise DataError(
            f"target column {quoted(name)} has only {len(classes)} class ({preview_names(classes)}): "
            "classification needs at least 2; check the target or use --task regression"
        )
    return _TargetSpec(name, task, classes=classes, label_type=label_type)


INTEGER_LABEL_MAX_CLASSES = 20
"""A numeric target with at most this many distinct whole numbers looks like class labels."""


def _integer_label_hint(series: pd.Series, options: EncodingOptions) -> str | None:
    """A hint when task='auto' made a regression of what look like integer class labels."""
    if options.task != "auto" or column_kind(series) != "numeric":
        return None
    values = numeric_values(series, f"target column {quoted(series.name)}")
    if not np.all(values == np.round(values)):
        return None
    distinct = np.unique(values)
    if not 2 <= len(distinct) <= INTEGER_LABEL_MAX_CLASSES:
        return None
    listed = preview_names([int(value) for value in distinct], limit=5)
    return (f"target column {quoted(series.name)} holds only {len(distinct)} distinct whole numbers ({listed}) and is "
            "trained as regression; if they are class labels, use --task classification "
            "(--task regression silences this)")


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and population std in float64, safe against overflow and constant columns."""
    values = np.asarray(values, dtype=np.float64)
    # Dividing by the largest magnitude first keeps the sum and the squares from
    # overflowing for values near 1e300; mean and std are scaled back afterwards.
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    if scale == 0.0:
        return 0.0, 1.0
    mean = float(np.mean(values / scale)) * scale
    if np.all(values == values[0]):
        return float(values[0]), 1.0
    std = float(np.std(values / scale)) * scale
    # A constant column can still give a std of ~1e-17 from rounding in the mean;
    # dividing by that would turn rounding noise into huge features. The fallback
    # is at least the largest deviation, so a nearly constant column of huge values
    # (1e200 +- 1e185) still encodes within [-1, 1] rather than overflowing float32.
    if not np.isfinite(std) or std <= 1e-12 * scale:
        std = max(1.0, float(np.max(np.abs(values - mean))))
    return mean, std


# -- encoding helpers -----------------------------------------------------------------


def _encode_column(series: pd.Series, spec: _ColumnSpec, options: EncodingOptions) -> np.ndarray:
    """One column's block of output features, float64, shape (n, width)."""
    name = spec.name
    if spec.kind == "category":
        missing = missing_mask(series)
        texts = text_values(series, missing)
        if missing.any() and options.impute is None:
            raise DataError(_missing_message(name, missing))
        codes = pd.Index(spec.categories, dtype=object).get_indexer(texts)
        unseen = np.flatnonzero((codes < 0) & ~missing)
        if unseen.size and options.unseen_category == "error":
            row = int(unseen[0])
            raise DataError(
                f"column {quoted(name)} has value {texts[row]!r} at row {row + 1} that was not seen "
                f"in training (known: {preview_names(spec.categories)}); use --unseen-category "
                "zeros to encode it as all zeros, or clean the data"
            )
        block = np.zeros((len(series), len(spec.categories)))
        known = codes >= 0
        block[np.flatnonzero(known), codes[known]] = 1.0
        return block
    values = _values(series, spec.kind, f"column {quoted(name)}")
    missing = np.isnan(values)
    if missing.any():
        if spec.fill is None:
            raise DataError(_missing_message(name, missing))
        values = np.where(missing, spec.fill, values)
    return _scaled(values, spec.mean, spec.std, f"column {quoted(name)}")[:, None]


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _scaled(values: np.ndarray, mean: float, std: float, label: str) -> np.ndarray:
    """(values - mean) / std, refusing a value whose result does not fit in float32.

    Why: the model works in float32, where 1e39 is inf; a value far outside the
    training range (1e300 after training on 0..1) must be refused, not become inf.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = (values - mean) / std
    too_large = np.flatnonzero(~(np.abs(scaled) <= _FLOAT32_MAX))
    if too_large.size:
        row = int(too_large[0])
        raise DataError(
            f"{label} has value {float(values[row])!r} at row {row + 1}, too far from the training values "
            f"(mean {mean:.6g}, std {std:.6g}) to encode as a 32-bit float; remove or fix that value"
        )
    return scaled


def _values(series: pd.Series, kind: str, label: str) -> np.ndarray:
    """Float64 values of a boolean (0/1) or numeric column, NaN where missing."""
    return bool_values(series, label) if kind == "bool" else numeric_values(series, label)


def _refuse_missing_target(series: pd.Series) -> None:
    missing = np.flatnonzero(missing_mask(series))
    if missing.size:
        raise DataError(
            f"target column {quoted(series.name)} has a missing value at row {int(missing[0]) + 1}; "
            "targets are never imputed: remove the row or fill in the value"
        )


def _missing_message(name: object, missing: np.ndarray) -> str:
    row = int(np.flatnonzero(missing)[0]) + 1
    return f"column {quoted(name)} has a missing value at row {row}; {_MISSING_HINT}"


def _check_frame(df: object, allow_empty: bool = False) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0 and not allow_empty:
        raise DataError("the table has no rows; fit needs at least one training row")
    repeated = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if repeated:
        raise DataError(f"columns {repeated} appear more than once; give each column a unique name")


def _check_choice(field_name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{field_name}={value!r} must be one of {', '.join(map(repr, choices))}")
