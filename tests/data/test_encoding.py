"""TableEncoder: what it learns at fit, how it encodes, and every refusal's message."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from paratrain.data import EncodingOptions, TableEncoder, read_table
from paratrain.errors import ConfigError, DataError


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x1": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "flag": [True, False, True, True, False, False],
            "color": ["red", "blue", "red", "green", "blue", "red"],
            "id": [101, 102, 103, 104, 105, 106],
            "price": [10.0, 12.0, 9.0, 15.0, 11.0, 13.0],
            "species": ["b", "a", "b", "c", "a", "b"],
        }
    )


def _fit(df: pd.DataFrame | None = None, **options) -> TableEncoder:
    options.setdefault("target", "price")
    if "drop" not in options and options["target"] == "price":
        options["drop"] = ("species",)
    return TableEncoder(EncodingOptions(**options)).fit(_frame() if df is None else df)


def _error(call, *args) -> str:
    """Run ``call(*args)`` expecting a DataError; return its one-line message."""
    with pytest.raises(DataError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"target": ""}, "target=''"),
        ({"target": "y", "task": "clustering"}, "task='clustering'"),
        ({"target": "y", "impute": "mode"}, "impute='mode'"),
        ({"target": "y", "unseen_category": "ignore"}, "unseen_category='ignore'"),
        ({"target": "y", "max_categories": 0}, "max_categories=0"),
        ({"target": "y", "max_categories": True}, "max_categories=True"),
        ({"target": "y", "drop": ("a", "y")}, "target column 'y' is also in drop"),
    ],
)
def test_options_are_validated(options, needle):
    with pytest.raises(ConfigError, match=None) as caught:
        EncodingOptions(**options)
    assert needle in str(caught.value)


def test_options_store_drop_as_tuple():
    assert EncodingOptions(target="y", drop=["a", "b"]).drop == ("a", "b")


# -- regression features ------------------------------------------------------------------


def test_feature_layout_and_learned_attributes():
    encoder = _fit(drop=("species", "id"))
    assert encoder.task == "regression"
    assert encoder.classes == []
    assert encoder.input_columns == ["x1", "flag", "color"]
    assert encoder.feature_names_out == ["x1", "flag", "color=blue", "color=green", "color=red"]
    features = encoder.transform_features(_frame())
    assert features.dtype == np.float32 and features.shape == (6, 5)
    # numeric standardized with the population std of the training rows
    x1 = np.arange(1.0, 7.0)
    np.testing.assert_allclose(features[:, 0], (x1 - x1.mean()) / x1.std(), rtol=1e-6)
    # booleans are 0/1 and not rescaled
    assert features[:, 1].tolist() == [1, 0, 1, 1, 0, 0]
    # one-hot, sorted categories
    assert features[:, 2:].tolist() == [
        [0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1],
    ]


def test_standardize_inputs_off_passes_numbers_through():
    encoder = _fit(drop=("species", "color", "flag"), standardize_inputs=False)
    features = encoder.transform_features(_frame())
    np.testing.assert_array_equal(features[:, 0], _frame()["x1"].to_numpy(np.float32))
    np.testing.assert_array_equal(features[:, 1], _frame()["id"].to_numpy(np.float32))


def test_target_column_is_ignored_or_absent_at_transform():
    encoder = _fit()
    with_target = encoder.transform_features(_frame())
    without = encoder.transform_features(_frame().drop(columns=["price", "species"]))
    np.testing.assert_array_equal(with_target, without)


def test_transform_uses_training_statistics():
    train = _frame().iloc[:3]
    encoder = _fit(train, drop=("species", "color", "flag", "id"))
    features = encoder.transform_features(pd.DataFrame({"x1": [2.0, 8.0]}))
    std = np.std([1.0, 2.0, 3.0])
    np.testing.assert_allclose(features[:, 0], [0.0, 6.0 / std], rtol=1e-6)


def test_empty_frame_transforms_to_empty_array():
    encoder = _fit()
    assert encoder.transform_features(_frame().iloc[:0]).shape == (0, len(encoder.feature_names_out))


def test_categorical_dtype_and_numeric_categories_are_one_hot():
    df = pd.DataFrame({"size": pd.Series([3, 1, 3, 2], dtype="category"), "y": [1.0, 2.0, 3.0, 4.0]})
    encoder = _fit(df, target="y")
    assert encoder.feature_names_out == ["size=1", "size=2", "size=3"]
    assert encoder.transform_features(df).tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_constant_column_encodes_to_zero_not_nan():
    df = pd.DataFrame({"c": [0.1] * 10, "y": np.arange(10.0)})
    encoder = _fit(df, target="y")
    features = encoder.transform_features(df)
    assert np.isfinite(features).all()
    np.testing.assert_allclose(features[:, 0], 0.0, atol=1e-6)
    assert encoder.to_dict()["columns"][0]["std"] == 1.0


def test_statistics_are_float64_stable():
    # In float32 1e8 + 1 == 1e8 + 0: the offsets would vanish before scaling.
    offsets = np.arange(5.0)
    df = pd.DataFrame({"big": 1e8 + offsets, "huge": 1e200 * (1 + offsets), "y": offsets})
    features = _fit(df, target="y").transform_features(df)
    expected = (offsets - offsets.mean()) / offsets.std()
    np.testing.assert_allclose(features[:, 0], expected, atol=1e-6)
    np.testing.assert_allclose(features[:, 1], expected, atol=1e-6)


# -- regression target --------------------------------------------------------------------


def test_regression_target_standardized_and_inverted():
    encoder = _fit()
    y = encoder.transform_target(_frame())
    price = _frame()["price"].to_numpy()
    assert y.dtype == np.float32 and y.shape == (6,)
    np.testing.assert_allclose(y, (price - price.mean()) / price.std(), rtol=1e-6)
    back = encoder.inverse_target(y)
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, price, rtol=1e-6)


def test_regression_target_unscaled_when_disabled():
    encoder = _fit(standardize_target=False)
    np.testing.assert_array_equal(encoder.transform_target(_frame()), _frame()["price"].astype(np.float32))
    np.testing.assert_array_equal(encoder.inverse_target(np.array([2.5])), [2.5])


def test_regression_on_text_target_is_refused():
    encoder = TableEncoder(EncodingOptions(target="species", task="regression"))
    message = _error(encoder.fit, _frame())
    assert "'species' is text" in message and "--task classification" in message


# -- classification -----------------------------------------------------------------------


def test_text_target_is_classification_with_sorted_classes():
    encoder = _fit(target="species", drop=("price",))
    assert encoder.task == "classification"
    assert encoder.classes == ["a", "b", "c"]
    y = encoder.transform_target(_frame())
    assert y.dtype == np.int64 and y.tolist() == [1, 0, 1, 2, 0, 1]
    assert encoder.inverse_target(y).tolist() == _frame()["species"].tolist()


def test_integer_target_classification_when_asked():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [3, 1, 3, 7]})
    assert _fit(df, target="label").task == "regression"  # auto: numbers regress
    encoder = _fit(df, target="label", task="classification")
    assert encoder.classes == [1, 3, 7]
    assert all(type(label) is int for label in encoder.classes)
    assert encoder.transform_target(df).tolist() == [1, 0, 1, 2]
    assert encoder.inverse_target(np.array([2, 0])).tolist() == [7, 1]


def test_whole_float_target_classification_gets_int_labels():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": [0.0, 1.0, 1.0]})
    encoder = _fit(df, target="label", task="classification")
    assert encoder.classes == [0, 1]


def test_fractional_float_target_is_not_a_class():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": [0.0, 1.0, 2.5]})
    message = _error(TableEncoder(EncodingOptions(target="label", task="classification")).fit, df)
    assert "'label'" in message and "2.5" in message and "row 3" in message


def test_bool_target_is_classification():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "churned": [True, False, True]})
    encoder = _fit(df, target="churned")
    assert encoder.task == "classification" and encoder.classes == [False, True]
    assert encoder.transform_target(df).tolist() == [1, 0, 1]
    assert encoder.inverse_target(np.array([0, 1])).tolist() == [False, True]


def test_single_class_is_refused():
    df = pd.DataFrame({"x": [1.0, 2.0], "label": ["only", "only"]})
    message = _error(TableEncoder(EncodingOptions(target="label")).fit, df)
    assert "'label'" in message and "only 1 class" in message and "only" in message


def test_unseen_class_at_transform_names_row_and_value():
    encoder = _fit(target="species", drop=("price",))
    new = _frame().assign(species=["a", "b", "a", "zebra", "a", "a"])
    message = _error(encoder.transform_target, new)
    assert "'species'" in message and "'zebra'" in message and "row 4" in message
    assert "a, b, c" in message


def test_inverse_target_checks_class_indices():
    encoder = _fit(target="species", drop=("price",))
    assert "[0, 2]" in _error(encoder.inverse_target, np.array([0, 3]))
    assert "integers" in _error(encoder.inverse_target, np.array([0.5]))


# -- columns: unknown, dropped, too many categories, unseen ---------------------------------


def test_unknown_target_lists_columns():
    message = _error(TableEncoder(EncodingOptions(target="cost")).fit, _frame())
    assert "'cost'" in message and "x1, flag, color, id, price, species" in message


def test_unknown_target_truncates_a_long_column_list():
    wide = pd.DataFrame({f"c{i}": [1.0, 2.0] for i in range(50)})
    message = _error(TableEncoder(EncodingOptions(target="nope")).fit, wide)
    assert "c0, c1" in message and "(40 more)" in message and "c49" not in message


def test_unknown_drop_column():
    message = _error(TableEncoder(EncodingOptions(target="price", drop=("zip",))).fit, _frame())
    assert "'zip'" in message and "--drop" in message and "x1" in message


def test_no_feature_columns_left():
    df = pd.DataFrame({"a": [1.0, 2.0], "y": [1.0, 2.0]})
    message = _error(TableEncoder(EncodingOptions(target="y", drop=("a",))).fit, df)
    assert "no feature columns" in message and "'y'" in message and "'a'" in message


def test_too_many_categories_is_refused_with_drop_hint():
    df = pd.DataFrame({"user_id": [f"u{i}" for i in range(30)], "y": np.arange(30.0)})
    message = _error(TableEncoder(EncodingOptions(target="y")).fit, df)
    assert message == (
        "column 'user_id' is text with 30 distinct values (more than max_categories=20): "
        "it cannot be a category; drop it with --drop user_id"
    )
    assert _fit(df, target="y", max_categories=30).feature_names_out[0] == "user_id=u0"


def test_unseen_category_error_names_column_value_row_and_known():
    encoder = _fit()
    new = _frame().assign(color=["red", "red", "purple", "red", "red", "red"])
    message = _error(encoder.transform_features, new)
    assert "'color'" in message and "'purple'" in message and "row 3" in message
    assert "blue, green, red" in message and "--unseen-category zeros" in message


def test_unseen_category_zeros():
    encoder = _fit(drop=("species", "id", "flag", "x1"), unseen_category="zeros")
    new = pd.DataFrame({"color": ["purple", "green"]})
    assert encoder.transform_features(new).tolist() == [[0, 0, 0], [0, 1, 0]]


def test_absent_feature_column_at_transform():
    message = _error(_fit().transform_features, _frame().drop(columns=["color"]))
    assert "['color']" in message


def test_text_in_numeric_column_at_transform():
    encoder = _fit()
    new = _frame().astype({"x1": object})
    new.loc[4, "x1"] = "n/a?"
    message = _error(encoder.transform_features, new)
    assert "'x1'" in message and "'n/a?'" in message and "row 5" in message


def test_repeated_column_names_are_refused():
    df = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["a", "a", "y"])
    assert "['a']" in _error(TableEncoder(EncodingOptions(target="y")).fit, df)


# -- missing and infinite values ------------------------------------------------------------


def _with(df: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    df = df.copy()
    if not isinstance(value, float):
        df[column] = df[column].astype(object)
    df.loc[df.index[row], column] = value
    return df


@pytest.mark.parametrize(("column", "value"), [("x1", np.nan), ("color", None), ("color", ""),
                                               ("flag", None), ("id", np.nan)])
def test_missing_feature_without_impute_names_column_and_row(column, value):
    df = _with(_frame(), column, 3, value)
    message = _error(TableEncoder(EncodingOptions(target="price", drop=("species",))).fit, df)
    assert f"'{column}'" in message and "row 4" in message
    assert "use --impute mean|median or clean the data" in message


def test_missing_feature_at_transform_names_row():
    encoder = _fit()
    message = _error(encoder.transform_features, _with(_frame(), "x1", 5, np.nan))
    assert "'x1'" in message and "row 6" in message and "--impute" in message


def test_row_number_is_position_in_the_frame():
    df = _with(_frame(), "x1", 4, np.nan).iloc[[0, 4, 2]]
    message = _error(TableEncoder(EncodingOptions(target="price", drop=("species",))).fit, df)
    assert "row 2" in message


@pytest.mark.parametrize(("impute", "fill"), [("mean", 3.0), ("median", 2.0)])
def test_impute_uses_statistic_learned_at_fit(impute, fill):
    train = pd.DataFrame({"x": [1.0, 2.0, 6.0, np.nan], "y": [1.0, 2.0, 3.0, 4.0]})
    encoder = _fit(train, target="y", impute=impute, standardize_inputs=False)
    features = encoder.transform_features(pd.DataFrame({"x": [np.nan, 10.0]}))
    assert features[:, 0].tolist() == [fill, 10.0]
    assert encoder.transform_features(train)[3, 0] == fill


def test_impute_then_standardize():
    train = pd.DataFrame({"x": [1.0, 3.0, np.nan], "y": [1.0, 2.0, 3.0]})
    features = _fit(train, target="y", impute="mean").transform_features(train)
    filled = np.array([1.0, 3.0, 2.0])
    np.testing.assert_allclose(features[:, 0], (filled - 2.0) / filled.std(), rtol=1e-6)


def test_impute_encodes_missing_category_as_zeros():
    train = pd.DataFrame({"c": ["a", None, "b", " "], "y": [1.0, 2.0, 3.0, 4.0]})
    encoder = _fit(train, target="y", impute="median")
    assert encoder.feature_names_out == ["c=a", "c=b"]
    assert encoder.transform_features(train).tolist() == [[1, 0], [0, 0], [0, 1], [0, 0]]


def test_impute_nullable_integer_column():
    train = pd.DataFrame({"n": pd.array([1, None, 5], dtype="Int64"), "y": [1.0, 2.0, 3.0]})
    encoder = _fit(train, target="y", impute="mean", standardize_inputs=False)
    assert encoder.transform_features(train)[:, 0].tolist() == [1.0, 3.0, 5.0]


def test_all_missing_column_is_refused_even_when_imputing():
    train = pd.DataFrame({"empty": [np.nan, np.nan], "x": [1.0, 2.0], "y": [1.0, 2.0]})
    message = _error(TableEncoder(EncodingOptions(target="y", impute="mean")).fit, train)
    assert "'empty'" in message and "--drop empty" in message


@pytest.mark.parametrize("impute", [None, "mean"])
def test_missing_target_is_never_imputed(impute):
    df = _with(_frame(), "price", 2, np.nan)
    options = EncodingOptions(target="price", drop=("species",), impute=impute)
    message = _error(TableEncoder(options).fit, df)
    assert "target column 'price'" in message and "row 3" in message and "never imputed" in message
    message = _error(_fit(impute=impute).transform_target, df)
    assert "row 3" in message


def test_missing_text_target_is_refused():
    df = _with(_frame(), "species", 1, "")
    message = _error(TableEncoder(EncodingOptions(target="species", drop=("price",))).fit, df)
    assert "'species'" in message and "row 2" in message


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_feature_names_column_and_row(value):
    df = _with(_frame(), "x1", 1, value)
    message = _error(TableEncoder(EncodingOptions(target="price", drop=("species",),
                                                  impute="mean")).fit, df)
    assert "'x1'" in message and "is infinite" in message and "row 2" in message
    message = _error(_fit().transform_features, df)
    assert "'x1'" in message and "row 2" in message


def test_infinite_target_names_row():
    df = _with(_frame(), "price", 5, np.inf)
    message = _error(TableEncoder(EncodingOptions(target="price", drop=("species",))).fit, df)
    assert "'price'" in message and "is infinite" in message and "row 6" in message


# -- persistence --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"target": "price", "drop": ("species",)},
        {"target": "price", "drop": ["species", "id"], "standardize_target": False, "impute": "mean"},
        {"target": "species", "drop": ("price",), "unseen_category": "zeros"},
    ],
)
def test_to_dict_round_trips_exactly_through_json(options):
    encoder = TableEncoder(EncodingOptions(**options)).fit(_frame())
    state = encoder.to_dict()
    assert json.loads(json.dumps(state)) == state
    restored = TableEncoder.from_dict(json.loads(json.dumps(state)))
    assert restored.to_dict() == state
    assert restored.options == encoder.options
    for name in ("input_columns", "feature_names_out", "task", "classes"):
        assert getattr(restored, name) == getattr(encoder, name)
    np.testing.assert_array_equal(restored.transform_features(_frame()),
                                  encoder.transform_features(_frame()))
    np.testing.assert_array_equal(restored.transform_target(_frame()),
                                  encoder.transform_target(_frame()))


@pytest.mark.parametrize("labels", [[True, False, True], [2, 0, 2]])
def test_to_dict_keeps_label_types(labels):
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": labels})
    encoder = _fit(df, target="label", task="classification")
    restored = TableEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert restored.classes == encoder.classes
    assert [type(c) for c in restored.classes] == [type(c) for c in encoder.classes]


def test_from_dict_refuses_other_data():
    assert "TableEncoder" in _error(TableEncoder.from_dict, {"format": "something else"})
    state = _fit().to_dict()
    del state["target"]
    assert "damaged" in _error(TableEncoder.from_dict, state)


def test_unfitted_encoder_says_so():
    encoder = TableEncoder(EncodingOptions(target="price"))
    with pytest.raises(RuntimeError, match="not fitted"):
        encoder.transform_features(_frame())
    with pytest.raises(AttributeError):
        encoder.feature_names_out


# -- from a file ----------------------------------------------------------------------------


def test_csv_with_gaps_encodes_end_to_end(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(
        "size,member,city,y\n"
        "1.5,True,paris,3\n"
        ",False,rome,4\n"
        "2.5,,paris,5\n"
        "3.5,True,,6\n"
    )
    df = read_table(path)
    encoder = TableEncoder(EncodingOptions(target="y", impute="mean", standardize_inputs=False)).fit(df)
    assert encoder.feature_names_out == ["size", "member", "city=paris", "city=rome"]
    assert encoder.transform_features(df).tolist() == [
        [1.5, 1.0, 1, 0],
        [2.5, 0.0, 0, 1],
        [2.5, np.float32(2 / 3), 1, 0],
        [3.5, 1.0, 0, 0],
    ]
    message = _error(TableEncoder(EncodingOptions(target="y")).fit, df)
    assert "'size'" in message and "row 2" in message
