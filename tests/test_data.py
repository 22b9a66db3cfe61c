from __future__ import annotations

import json
from pathlib import Path

import pytest

from distilsent import DataError
from distilsent.formats import LabelledData, encode_labels, label_names, read_labelled


def test_sst2_tsv_needs_no_flags(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text('sentence\tlabel\nit \'s a "charming" film \t1\nbleak \t0\n')
    data = read_labelled(path)
    assert data.texts == ['it \'s a "charming" film', "bleak"]
    assert data.labels == [1, 0]
    assert label_names(data.labels) == {0: "NEGATIVE", 1: "POSITIVE"}


def test_csv_with_named_columns_and_label_names(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('review,stars\n"great, really",pos\nawful,neg\nfine,neu\n')
    data = read_labelled(path, text_column="review", label_column="stars")
    assert data.texts[0] == "great, really"
    assert label_names(data.labels) == {0: "neg", 1: "neu", 2: "pos"}
    assert encode_labels(data, label_names(data.labels)) == [2, 0, 1]


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in [{"text": "good", "label": 1}, {"text": "bad", "label": 0}])
    )
    assert read_labelled(path).labels == [1, 0]


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["good", "bad"], "label": [1, 0]}), path)
    assert read_labelled(path).texts == ["good", "bad"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.tsv", "", "no data rows"),
        ("a.tsv", "sentence\tlabel\n", "no data rows"),
        ("a.tsv", "text\tstars\ngood\t1\n", "no label column"),
        ("a.tsv", "review\tlabel\ngood\t1\n", "no text column"),
        ("a.tsv", "sentence\tlabel\ngood\t1\nbad\n", "a.tsv:3: 1 fields"),
        ("a.tsv", "sentence\tlabel\ngood\t1\n \t0\n", "a.tsv:3: empty or missing text"),
        ("a.tsv", "sentence\tlabel\ngood\t\n", "a.tsv:2: missing label"),
        ("a.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "label": 0\n', "a.jsonl:2: invalid JSON"),
        ("a.jsonl", '{"text": "good", "label": 1.5}\n', "neither an integer nor a name"),
        ("a.txt", "good\n", "cannot tell the format"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        read_labelled(path)


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.tsv"
    path.write_bytes(b"sentence\tlabel\ngood\t1\nbad \xff film\t0\n")
    with pytest.raises(DataError, match=r"a\.tsv:3: not valid UTF-8"):
        read_labelled(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_labelled(tmp_path / "nope.tsv")


def test_unseen_labels_are_listed() -> None:
    data = LabelledData(path=Path("dev.tsv"), texts=["a", "b"], labels=[1, 2])
    with pytest.raises(DataError, match=r"labels \['2'\] are not among the known labels"):
        encode_labels(data, {0: "NEGATIVE", 1: "POSITIVE"})


def test_mixed_or_gapped_integer_labels() -> None:
    with pytest.raises(DataError, match="mix"):
        label_names([0, "pos"])
    with pytest.raises(DataError, match=r"0\.\.1"):
        label_names([0, 2])
