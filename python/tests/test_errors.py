"""Errors reach Python as typed exceptions with the CLI's messages, never as a panic."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pretext
from conftest import QUICKSTART


def write(tmp_path, text: str, name: str = "p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_problem_with_line_column_and_hint(tmp_path) -> None:
    path = write(tmp_path, "name: x\nsource: { path: data }\ntask: { mlm: { seq_len: long, mask_prob: 1.5 } }\n")
    with pytest.raises(pretext.SpecError) as e:
        pretext.Pipeline(path)
    message = str(e.value)
    assert "p.yaml:3:25: task.mlm.seq_len: expected a whole number, found the string `long`" in message
    assert "task.mlm.mask_prob: 1.5 is out of range" in message
    assert "2 problems in" in message
    errors = e.value.errors
    assert [(x["line"], x["column"], x["path"]) for x in errors] == [
        (3, 25, "task.mlm.seq_len"),
        (3, 42, "task.mlm.mask_prob"),
    ]
    assert errors[0]["file"].endswith("p.yaml") and errors[0]["hint"] and errors[0]["set"] is None
    assert isinstance(e.value, pretext.Error)


def test_malformed_yaml_and_unknown_key(tmp_path) -> None:
    with pytest.raises(pretext.SpecError, match=r"p.yaml:3:1: invalid YAML"):
        pretext.Pipeline(write(tmp_path, "name: x\nsource: [unclosed\n"))
    with pytest.raises(pretext.SpecError, match=r"did you mean `text_column`\?"):
        pretext.Pipeline(write(tmp_path, "name: x\nsource: { path: data, text_colum: text }\ntask: { mlm: {} }\n"))


def test_a_bad_override_names_the_set(tmp_path) -> None:
    with pytest.raises(pretext.SpecError) as e:
        pretext.Pipeline(QUICKSTART, {"stream.batch_size": "many"})
    (err,) = e.value.errors
    assert err["set"] == "stream.batch_size=many" and err["line"] is None
    assert "stream.batch_size" in str(e.value)
    with pytest.raises(pretext.SpecError, match="unknown key"):
        pretext.Pipeline(QUICKSTART, ["stream.batch_sise=3"])
    with pytest.raises(TypeError):
        pretext.Pipeline(QUICKSTART, [3])  # type: ignore[list-item]


def test_missing_file_and_missing_data(tmp_path) -> None:
    with pytest.raises(pretext.Error) as e:
        pretext.Pipeline(tmp_path / "absent.yaml")
    assert "absent.yaml" in str(e.value)
    p = None
    with pytest.raises(pretext.Error, match=r"`nowhere` does not exist"):
        p = pretext.Pipeline(write(tmp_path, "name: x\nsource: { path: nowhere }\ntask: { mlm: {} }\n"))
        p.build()


def test_data_errors_are_data_errors(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.parquet").write_bytes(b"not parquet at all")
    p = pretext.Pipeline(write(tmp_path, "name: x\nsource: { path: data/a.parquet }\ntask: { mlm: {} }\n"))
    with pytest.raises(pretext.DataError, match=r"is not a readable Parquet file"):
        p.build()
    pq.write_table(pa.table({"id": [1, 2], "text": [3, 4]}), tmp_path / "data" / "a.parquet")
    p = pretext.Pipeline(write(tmp_path, "name: x\nsource: { path: data/a.parquet }\ntask: { mlm: {} }\n"))
    with pytest.raises(pretext.Error, match="text"):
        p.validate()


def test_a_wrong_cursor_or_split_is_a_value_error(tokenizer_dir: str, tmp_path) -> None:
    p = pretext.Pipeline(QUICKSTART, tokenizer_dir=tokenizer_dir)
    with pytest.raises(ValueError, match="not a pretext stream cursor"):
        next(p.iter_batches({"what": 1}))
    train = {k for b, _ in p.iter_batches(split="train") for k in b.column("example_key").to_pylist()}
    held_out = {k for b, _ in p.iter_batches(split="eval") for k in b.column("example_key").to_pylist()}
    assert train and held_out and not train & held_out  # the quickstart's train.eval
    plain = write(
        tmp_path,
        f"name: x\nsource: {{ path: '{QUICKSTART.parent.parent / 'data' / 'quickstart'}', text_column: text }}\ntask: {{ mlm: {{}} }}\n",
    )
    with pytest.raises(ValueError, match="train.eval"):
        next(pretext.Pipeline(plain, tokenizer_dir=tokenizer_dir).iter_batches(split="train"))
    with pytest.raises(ValueError, match='split must be "all"'):
        next(p.iter_batches(split="valid"))


def test_a_cursor_of_another_shard_is_refused(tokenizer_dir: str) -> None:
    a = pretext.Pipeline(QUICKSTART, {"stream.shard": {"rank": 0, "world_size": 2}}, tokenizer_dir=tokenizer_dir)
    _, cursor = next(a.iter_batches())
    b = pretext.Pipeline(QUICKSTART, {"stream.shard": {"rank": 1, "world_size": 2}}, tokenizer_dir=tokenizer_dir)
    with pytest.raises(pretext.DataError, match="saved by rank 0 of 2, and this is rank 1 of 2"):
        next(b.iter_batches(cursor))
