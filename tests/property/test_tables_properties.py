"""Any bytes in a table file: read_table and TableEncoder give a clean result or a DataError.

Never a traceback (another exception type), a NaN or infinite feature, or a hang.
"""

from __future__ import annotations

import codecs

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from paratrain.data.encoding import EncodingOptions, TableEncoder
from paratrain.data.tables import read_table
from paratrain.errors import DataError, ParatrainError
from tests.property.helpers import one_line

# Cells that stress the readers: numbers of every size, words, blanks, booleans, quotes,
# separators inside cells, non-ASCII text.
_NUMBER_TEXT = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e308", "-1e308", "1e309", "1e-320", "nan", "NaN", "inf", "-inf", "Infinity", "0x10",
                     "1_000", "1,5", "١٢", "²"]),
)
_CELL = st.one_of(
    _NUMBER_TEXT,
    st.sampled_from(["", " ", "True", "False", "true", "NA", "null", "None", "\"", "\"a,b\"", "a;b", "é", "日本"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
)
_HEADER = st.one_of(st.sampled_from(["x", "y", "y", "x", "Unnamed: 0", "", "é", "温度", "a b", "x.1"]),
                    st.text(min_size=0, max_size=6))
_SEPARATOR = st.sampled_from([",", ";", "\t", "|"])


@st.composite
def table_text(draw) -> str:
    """A CSV-ish file: maybe a header, maybe rows of varying width, some separator, maybe a BOM."""
    sep = draw(_SEPARATOR)
    width = draw(st.integers(1, 4))
    lines = []
    if draw(st.booleans()):
        lines.append(sep.join(draw(st.lists(_HEADER, min_size=width, max_size=width))))
    for _ in range(draw(st.integers(0, 6))):
        row_width = draw(st.sampled_from([width, width, width, width - 1, width + 1]))
        lines.append(sep.join(draw(st.lists(_CELL, min_size=max(row_width, 0), max_size=max(row_width, 0)))))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = ending.join(lines) + draw(st.sampled_from(["", ending]))
    return draw(st.sampled_from(["", "\ufeff"])) + text


def _read_or_data_error(path):
    try:
        return read_table(path)
    except DataError as error:
        assert one_line(str(error)), str(error)
        assert str(path) in str(error)
        return None


@given(text=table_text(), suffix=st.sampled_from([".csv", ".tsv"]), encoding=st.sampled_from(["utf-8", "latin-1"]))
@example(text="", suffix=".csv", encoding="utf-8")
@example(text="x,y\n", suffix=".csv", encoding="utf-8")
@example(text="\ufeffx,y\n1,2\n", suffix=".csv", encoding="utf-8")
@example(text="x,x\n1,2\n", suffix=".csv", encoding="utf-8")
@example(text="\n\n\n", suffix=".csv", encoding="utf-8")
def test_any_text_file_reads_or_refuses(tmp_path, text, suffix, encoding):
    path = tmp_path / f"t{suffix}"
    path.write_bytes(text.encode(encoding, errors="replace"))
    table = _read_or_data_error(path)
    if table is not None:
        assert table.shape[0] >= 1 and table.shape[1] >= 1


@given(data=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".tsv", ".parquet", ".npz", ".csv.gz"]))
@example(data=b"PK\x03\x04garbage", suffix=".npz")
@example(data=b"PAR1\x00\x00PAR1", suffix=".parquet")
@example(data=b"\xff\xfe\x00x", suffix=".csv")
def test_any_bytes_read_or_refuse(tmp_path, data, suffix):
    path = tmp_path / f"t{suffix}"
    path.write_bytes(data)
    _read_or_data_error(path)


def _encode_or_refuse(table: pd.DataFrame, target: str, impute) -> None:
    try:
        encoder = TableEncoder(EncodingOptions(target=target, impute=impute, max_categories=5)).fit(table)
        features = encoder.transform_features(table)
        labels = encoder.transform_target(table)
    except ParatrainError as error:
        assert one_line(str(error)), str(error)
        return
    # A clean result is a finite one: a NaN or inf here would train a NaN model silently.
    assert np.isfinite(features).all(), features
    if encoder.task == "regression":
        assert np.isfinite(labels).all(), labels
        back = encoder.inverse_target(labels)
        assert np.isfinite(back).all()
    else:
        assert labels.min() >= 0 and labels.max() < len(encoder.classes)


@given(text=table_text(), impute=st.sampled_from([None, "mean", "median"]),
       task_column=st.integers(0, 3))
@example(text="x,y\n1e308,1\n-1e308,2\n", impute=None, task_column=1)
@example(text="x,y\n1e308,1e308\n-1e308,-1e308\n", impute=None, task_column=1)
@example(text="x;y\n1;2\n3;4\n", impute=None, task_column=0)
def test_read_then_encode_is_finite_or_refused(tmp_path, text, impute, task_column):
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    table = _read_or_data_error(path)
    if table is None:
        return
    target = str(table.columns[task_column % table.shape[1]])
    if not target:
        return
    _encode_or_refuse(table, target, impute)


_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.sampled_from(["", " ", "1", "1.5", "True", "nan"]),
)


@st.composite
def frames(draw) -> pd.DataFrame:
    rows = draw(st.integers(1, 8))
    names = draw(st.lists(st.sampled_from(["x", "y", "z", "é", "温度", "0"]), min_size=2, max_size=4, unique=True))
    columns = {}
    for name in names:
        # One kind per column (usually), sometimes a mix: the mix is what CSVs with stray text look like.
        base = draw(st.sampled_from([st.floats(-1e300, 1e300), st.integers(-5, 5), st.booleans(),
                                     st.sampled_from(["a", "b", "c"]), _VALUES]))
        columns[name] = draw(st.lists(base, min_size=rows, max_size=rows))
    return pd.DataFrame(columns)


@given(frame=frames(), impute=st.sampled_from([None, "mean", "median"]), task=st.sampled_from(["auto", "regression",
                                                                                              "classification"]))
def test_encoder_on_any_frame_is_finite_or_refused(frame, impute, task):
    target = frame.columns[-1]
    try:
        options = EncodingOptions(target=target, impute=impute, task=task, max_categories=5)
        encoder = TableEncoder(options).fit(frame)
        features = encoder.transform_features(frame)
        labels = encoder.transform_target(frame)
    except ParatrainError as error:
        assert one_line(str(error)), str(error)
        return
    assert np.isfinite(features).all(), (frame, features)
    if encoder.task == "regression":
        assert np.isfinite(labels).all(), (frame, labels)
    # The saved state restores an encoder that encodes the same way.
    again = TableEncoder.from_dict(encoder.to_dict())
    np.testing.assert_array_equal(again.transform_features(frame), features)


@pytest.mark.parametrize("sep, suffix", [(",", ".csv"), ("\t", ".tsv")])
def test_bom_does_not_rename_the_first_column(tmp_path, sep, suffix):
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(codecs.BOM_UTF8 + f"x{sep}y\n1{sep}2\n".encode())
    assert list(read_table(path).columns) == ["x", "y"]


# --- the cases these properties found, kept as plain tests --------------------------------


def test_a_newline_in_a_column_name_keeps_errors_on_one_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('"\n0\n0\n"\n')  # one quoted header cell holding newlines, no rows
    with pytest.raises(DataError) as caught:
        read_table(path)
    assert one_line(str(caught.value)) and "\\n0\\n0\\n" in str(caught.value)
    frame = pd.DataFrame({"a\nb": [1.0, 2.0, np.nan], "y": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"column 'a\\nb' has a missing value") as caught:
        TableEncoder(EncodingOptions(target="y")).fit(frame)
    assert one_line(str(caught.value))


def test_repeated_header_names_are_refused_not_renamed(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x,x,y\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="columns x more than once"):
        read_table(path)


@pytest.mark.parametrize("text, suffix, hint", [("x;y\n1;2\n", ".csv", "semicolons"),
                                                ("x\ty\n1\t2\n", ".csv", "tabs"),
                                                ("x,y\n1,2\n", ".tsv", "commas")])
def test_a_file_with_another_separator_is_refused_with_a_hint(tmp_path, text, suffix, hint):
    path = tmp_path / f"t{suffix}"
    path.write_text(text)
    with pytest.raises(DataError, match=hint):
        read_table(path)


def test_a_single_column_table_still_reads(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x\n1\n2\n")
    assert list(read_table(path).columns) == ["x"]


def test_a_nearly_constant_column_of_huge_values_encodes_finite():
    # Found by the encoder property: 7.16e202 with rounding-level differences gave a std of
    # 1.0 (the constant-column fallback), so (x - mean) / 1 overflowed float32 to inf.
    values = np.array([7.161408e202, 7.161408e202 * (1 + 1e-15), 7.161408e202, np.nan])
    frame = pd.DataFrame({"x": values, "y": [0.0, 1.0, 2.0, 3.0]})
    encoder = TableEncoder(EncodingOptions(target="y", impute="mean")).fit(frame)
    features = encoder.transform_features(frame)
    assert np.isfinite(features).all() and np.abs(features).max() <= 1.0


def test_a_value_too_large_for_float32_is_refused_at_transform():
    train = pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 2.0]})
    encoder = TableEncoder(EncodingOptions(target="y", standardize_inputs=False)).fit(train)
    with pytest.raises(DataError, match=r"column 'x' has value 1e\+300 at row 2, too far"):
        encoder.transform_features(pd.DataFrame({"x": [0.0, 1e300]}))


def test_a_huge_regression_target_is_finite_or_refused():
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [1e308, 1e308, -1e308]})
    encoder = TableEncoder(EncodingOptions(target="y")).fit(frame)
    assert np.isfinite(encoder.transform_target(frame)).all()
    assert np.isfinite(encoder.inverse_target(encoder.transform_target(frame))).all()


_DTYPES = ["f8", "f4", "f2", "i8", "u8", "u1", "?", "U3", "S3", "c16", "M8[D]", "m8[s]", "V4", "f8,i4"]


@st.composite
def npz_arrays(draw) -> dict[str, np.ndarray]:
    rows = draw(st.integers(0, 5))
    arrays = {}
    for name in draw(st.lists(st.sampled_from(["a", "b", "X", "y", "columns", "é"]), min_size=1, max_size=3,
                              unique=True)):
        dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
        shape = draw(st.sampled_from([(rows,), (rows, 2), (rows + 1,), ()]))
        raw = draw(st.binary(min_size=dtype.itemsize * int(np.prod(shape)), max_size=dtype.itemsize * int(np.prod(shape))))
        arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(shape) if dtype.itemsize else np.zeros(shape, dtype)
    return arrays


@given(arrays=npz_arrays())
@example(arrays={"feat": np.array([1 + 2j, 3, 2j]), "y": np.array([0.0, 1.0, 2.0])})
@example(arrays={"feat": np.zeros(3, dtype="V4"), "y": np.array([0.0, 1.0, 2.0])})
@example(arrays={"a": np.array([0.0]), "b": np.array([0, 0, 0x200000], dtype=np.uint32).view("<U3")})
def test_any_npz_reads_and_encodes_or_refuses(tmp_path, arrays):
    path = tmp_path / "t.npz"
    np.savez(path, **arrays)
    table = _read_or_data_error(path)
    if table is not None and table.shape[1] >= 2:
        _encode_or_refuse(table, str(table.columns[-1]), "mean")


@pytest.mark.parametrize("dtype", ["c16", "V4", "f8,i4"])
def test_npz_arrays_that_are_not_columns_are_refused(tmp_path, dtype):
    path = tmp_path / "t.npz"
    np.savez(path, feat=np.zeros(3, dtype=dtype), y=np.arange(3.0))
    with pytest.raises(DataError, match=f"array 'feat' has dtype"):
        read_table(path)


def test_npz_text_outside_unicode_is_refused(tmp_path):
    # Found by the NPZ property: a code point above U+10FFFF failed later with UnicodeDecodeError.
    path = tmp_path / "t.npz"
    not_unicode = np.array([ord("o"), ord("k"), 0x200000, 0], dtype=np.uint32).view("<U2")  # ["ok", ?]
    np.savez(path, a=np.arange(2.0), b=not_unicode)
    with pytest.raises(DataError, match="not valid Unicode"):
        read_table(path)


@given(frame=frames(), sep=st.sampled_from([",", "\t"]))
def test_a_table_written_by_pandas_reads_back_as_written(tmp_path, frame, sep):
    """No value or column is lost or moved on the way in (only repeated names would be refused)."""
    frame = frame.astype(str)  # compare as text: the reader may infer types
    path = tmp_path / ("t.csv" if sep == "," else "t.tsv")
    frame.to_csv(path, index=False, sep=sep)
    table = _read_or_data_error(path)
    if table is None:
        return
    assert [str(c) for c in table.columns] == [str(c) for c in frame.columns]
    assert table.shape == frame.shape


def test_rows_with_one_value_more_than_the_header_are_refused(tmp_path):
    # pandas would silently make the first column the row labels: x would vanish.
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="the rows have 3 values but the header names 2 columns"):
        read_table(path)
