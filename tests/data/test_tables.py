"""Reading CSV, TSV, Parquet and NPZ files, and the errors for bad files."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from paratrain.data import SUPPORTED_EXTENSIONS, read_table
from paratrain.data.tables import (bool_values, column_kind, missing_mask, numeric_values,
                                   preview_names, text_values)
from paratrain.errors import DataError


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x1": [0.5, -1.25, 3.0, 7.5],
            "count": [1, 2, 3, 4],
            "color": ["red", "blue", "red", "green"],
            "y": [1.0, 2.0, 3.0, 4.0],
        }
    )


def _read_error(path) -> str:
    """Read ``path`` expecting a DataError; return its message, checked to be one line."""
    with pytest.raises(DataError) as caught:
        read_table(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _assert_same(read: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(read.columns) == list(expected.columns)
    for name in expected.columns:
        assert read[name].tolist() == expected[name].tolist(), name


# -- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".CSV", ".csv.gz"])
def test_csv_round_trip(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    _frame().to_csv(path, index=False, compression="gzip" if suffix.endswith(".gz") else None)
    read = read_table(path)
    _assert_same(read, _frame())
    assert pd.api.types.is_float_dtype(read["x1"])
    assert pd.api.types.is_integer_dtype(read["count"])


def test_csv_gz_is_really_decompressed(tmp_path):
    path = tmp_path / "data.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("a,b\n1,2\n3,4\n")
    assert read_table(path)["b"].tolist() == [2, 4]


@pytest.mark.parametrize("suffix", [".tsv", ".tsv.gz"])
def test_tsv_round_trip(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    _frame().to_csv(path, sep="\t", index=False)
    _assert_same(read_table(str(path)), _frame())


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_round_trip(tmp_path, suffix):
    pytest.importorskip("pyarrow")
    path = tmp_path / f"data{suffix}"
    _frame().to_parquet(path, index=False)
    _assert_same(read_table(path), _frame())


def test_npz_one_array_per_column(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, a=np.array([1.0, 2.0, 3.0]), b=np.array([4, 5, 6]),
             label=np.array(["u", "v", "u"]))
    read = read_table(path)
    assert list(read.columns) == ["a", "b", "label"]
    assert read["a"].tolist() == [1.0, 2.0, 3.0]
    assert read["b"].tolist() == [4, 5, 6]
    assert read["label"].tolist() == ["u", "v", "u"]


def test_npz_bytes_column_becomes_text(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, a=np.array([1, 2]), tag=np.array([b"p", b"q"]))
    assert read_table(path)["tag"].tolist() == ["p", "q"]


def test_npz_matrix_with_target(tmp_path):
    path = tmp_path / "data.npz"
    features = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.savez(path, X=features, y=np.array([0.0, 1.0, 0.0, 1.0]))
    read = read_table(path)
    assert list(read.columns) == ["x0", "x1", "x2", "y"]
    np.testing.assert_array_equal(read[["x0", "x1", "x2"]].to_numpy(), features)
    assert read["y"].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_npz_matrix_without_target(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.ones((2, 2)))
    assert list(read_table(path).columns) == ["x0", "x1"]


def test_npz_matrix_with_column_names_and_column_target(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.ones((3, 2)), y=np.arange(3).reshape(3, 1),
             columns=np.array(["height", "width"]))
    read = read_table(path)
    assert list(read.columns) == ["height", "width", "y"]
    assert read["y"].tolist() == [0, 1, 2]


def test_npz_matrix_with_bytes_column_names(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.ones((2, 2)), columns=np.array([b"a", b"b"]))
    assert list(read_table(path).columns) == ["a", "b"]


def test_supported_extensions_are_listed():
    assert {".csv", ".csv.gz", ".tsv", ".parquet", ".pq", ".npz"} <= set(SUPPORTED_EXTENSIONS)


# -- errors -----------------------------------------------------------------------------


def test_missing_file_names_it(tmp_path):
    message = _read_error(tmp_path / "x.csv")
    assert "x.csv" in message and "does not exist" in message


def test_directory_is_refused(tmp_path):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    assert "directory" in _read_error(folder)


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("whatever")
    message = _read_error(path)
    assert "data.xlsx" in message
    for suffix in (".csv", ".tsv", ".parquet", ".pq", ".npz"):
        assert suffix in message


def test_empty_csv_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    message = _read_error(path)
    assert "empty.csv" in message and "empty" in message


def test_header_only_csv_has_no_rows(tmp_path):
    path = tmp_path / "head.csv"
    path.write_text("a,b,c\n")
    message = _read_error(path)
    assert "head.csv" in message and "no rows" in message and "a, b, c" in message


def test_malformed_csv_gives_parser_reason_on_one_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n")
    message = _read_error(path)
    assert "bad.csv" in message and "cannot read" in message
    assert "line 3" in message  # pandas' own explanation is kept


def test_corrupt_gzip_csv(tmp_path):
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(b"this is not gzip data at all")
    assert "bad.csv.gz" in _read_error(path)


def test_corrupt_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 garbage garbage garbage")
    message = _read_error(path)
    assert "bad.parquet" in message and "parquet" in message


def test_corrupt_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file")
    assert "bad.npz" in _read_error(path)


def test_npz_with_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, a=np.array([{"k": 1}, None], dtype=object))
    message = _read_error(path)
    assert "objects.npz" in message and "'a'" in message and "string array" in message


def test_empty_npz(tmp_path):
    path = tmp_path / "none.npz"
    np.savez(path)
    assert "no arrays" in _read_error(path)


def test_npz_x_must_be_2d(tmp_path):
    path = tmp_path / "flat.npz"
    np.savez(path, X=np.arange(3))
    message = _read_error(path)
    assert "X must be 2-D" in message and "(3,)" in message


def test_npz_y_length_must_match_x(tmp_path):
    path = tmp_path / "short.npz"
    np.savez(path, X=np.ones((4, 2)), y=np.ones(3))
    message = _read_error(path)
    assert "y must be 1-D with 4 values" in message and "(3,)" in message


def test_npz_columns_must_match_x_width(tmp_path):
    path = tmp_path / "names.npz"
    np.savez(path, X=np.ones((4, 2)), columns=np.array(["a", "b", "c"]))
    message = _read_error(path)
    assert "columns must be 2 strings" in message and "(3,)" in message


def test_npz_columns_must_be_unique_and_not_y(tmp_path):
    repeated = tmp_path / "repeated.npz"
    np.savez(repeated, X=np.ones((2, 2)), columns=np.array(["a", "a"]))
    assert "repeated names" in _read_error(repeated)
    clash = tmp_path / "clash.npz"
    np.savez(clash, X=np.ones((2, 2)), y=np.ones(2), columns=np.array(["a", "y"]))
    assert "'y'" in _read_error(clash)


def test_npz_with_x_refuses_extra_arrays(tmp_path):
    path = tmp_path / "extra.npz"
    np.savez(path, X=np.ones((2, 2)), weights=np.ones(2))
    message = _read_error(path)
    assert "weights" in message and "only also hold y and columns" in message


def test_npz_columns_must_be_1d(tmp_path):
    path = tmp_path / "cols.npz"
    np.savez(path, a=np.ones(3), grid=np.ones((3, 2)))
    message = _read_error(path)
    assert "'grid'" in message and "(3, 2)" in message and "X" in message


def test_npz_columns_must_share_length(tmp_path):
    path = tmp_path / "ragged.npz"
    np.savez(path, a=np.ones(3), b=np.ones(2))
    message = _read_error(path)
    assert "'a': 3" in message and "'b': 2" in message


def test_npz_with_zero_rows(tmp_path):
    path = tmp_path / "zero.npz"
    np.savez(path, X=np.ones((0, 2)))
    assert "no rows" in _read_error(path)


# -- reading values out of columns --------------------------------------------------------


def test_missing_mask_counts_nan_none_and_blank_text():
    series = pd.Series(["a", None, "", "  ", np.nan, "b"], dtype=object)
    assert missing_mask(series).tolist() == [False, True, True, True, True, False]
    assert missing_mask(pd.Series([1.0, np.nan])).tolist() == [False, True]


def test_missing_and_text_values_of_mixed_and_string_columns():
    # Every kind of value an object or string column can hold, against the per-value definition.
    mixed = pd.Series(["a", None, "", "  ", np.nan, np.str_(" "), np.str_("z"), 3, 2.5, True, pd.NA, "b "],
                      dtype=object)
    expected_missing = [False, True, True, True, True, True, False, False, False, False, True, False]
    assert missing_mask(mixed).tolist() == expected_missing
    texts = text_values(mixed)
    assert texts.tolist() == ["a", None, None, None, None, None, "z", "3", "2.5", "True", None, "b "]
    assert all(type(t) is str for t in texts if t is not None)
    strings = pd.Series(["x", None, " ", "y"], dtype="string")
    assert missing_mask(strings).tolist() == [False, True, True, False]
    assert text_values(strings).tolist() == ["x", None, None, "y"]
    categorical = pd.Series(["u", None, "v"], dtype="category")
    assert missing_mask(categorical).tolist() == [False, True, False]
    assert text_values(categorical).tolist() == ["u", None, "v"]


def test_column_kind():
    assert column_kind(pd.Series([1, 2])) == "numeric"
    assert column_kind(pd.Series([1.5, np.nan])) == "numeric"
    assert column_kind(pd.Series([True, False])) == "bool"
    assert column_kind(pd.Series([True, None, False], dtype=object)) == "bool"
    assert column_kind(pd.Series(["a", "b"])) == "category"
    assert column_kind(pd.Series([1, 2], dtype="category")) == "category"


def test_numeric_values_parses_text_and_names_bad_values():
    values = numeric_values(pd.Series(["1.5", " 2", None, ""], dtype=object), "column 'v'")
    np.testing.assert_array_equal(values[:2], [1.5, 2.0])
    assert np.isnan(values[2:]).all()
    with pytest.raises(DataError, match=r"column 'v' has value 'abc' at row 2, which is not a number"):
        numeric_values(pd.Series(["1", "abc"], dtype=object), "column 'v'")
    with pytest.raises(DataError, match=r"column 'v' is infinite at row 3"):
        numeric_values(pd.Series([1.0, 2.0, -np.inf]), "column 'v'")


def test_bool_values():
    values = bool_values(pd.Series([True, None, "false", 1], dtype=object), "column 'b'")
    assert values[0] == 1.0 and np.isnan(values[1]) and values[2] == 0.0 and values[3] == 1.0
    with pytest.raises(DataError, match=r"column 'b' is boolean but has value 'maybe' at row 2"):
        bool_values(pd.Series([True, "maybe"], dtype=object), "column 'b'")


def test_text_values_and_preview():
    assert text_values(pd.Series([1, None, "x"], dtype=object)).tolist() == ["1", None, "x"]
    assert preview_names(["a", "b"]) == "a, b"
    assert preview_names([f"c{i}" for i in range(15)], limit=3) == "c0, c1, c2, ... (12 more)"
