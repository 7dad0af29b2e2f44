"""`pretext.Pipeline`: schema, preview, batches with cursors, Arrow readers, export."""

from __future__ import annotations

import json
import threading
import time

import pyarrow as pa
import pyarrow.dataset as pads

import pretext
from conftest import QUICKSTART, SMALL


def batches(p: pretext.Pipeline, cursor=None):
    return list(p.iter_batches(cursor))


def test_schema_and_info(tokenizer_dir: str) -> None:
    p = pretext.Pipeline(QUICKSTART, SMALL, tokenizer_dir=tokenizer_dir)
    assert p.name == "quickstart"
    schema = p.schema
    assert isinstance(schema, pa.Schema)
    assert schema.names == ["example_key", "input_ids", "attention_mask", "labels", "special_tokens_mask"]
    assert schema.field("input_ids").type == pa.list_(pa.field("item", pa.int32(), nullable=False), 128)
    info = p.info
    assert info["batch_size"] == 64 and info["task"] == "mlm" and info["world_size"] == 1
    assert 100 < info["vocab_size"] <= 2000 and info["mask_token_id"] is not None


def test_set_as_dict_or_list_is_the_same(tokenizer_dir: str) -> None:
    a = pretext.Pipeline(QUICKSTART, {"stream.batch_size": 32, "seed": 7}, tokenizer_dir=tokenizer_dir)
    b = pretext.Pipeline(QUICKSTART, ["stream.batch_size=32", "seed=7"], tokenizer_dir=tokenizer_dir)
    first_a, _ = next(a.iter_batches())
    first_b, _ = next(b.iter_batches())
    assert first_a.num_rows == 32
    assert first_a.equals(first_b)


def test_validate_and_preview(tokenizer_dir: str) -> None:
    p = pretext.Pipeline(QUICKSTART, SMALL, tokenizer_dir=tokenizer_dir)
    p.validate()
    text = p.preview(2)
    assert "--- example 1 · example_key" in text and "--- example 2 · " in text and "--- example 3" not in text
    assert "[MASK=" in text and text.rstrip().splitlines()[-1].startswith("legend: ")


def test_a_pass_resumes_exactly_from_any_cursor(tokenizer_dir: str) -> None:
    p = pretext.Pipeline(QUICKSTART, SMALL, tokenizer_dir=tokenizer_dir)
    whole = batches(p)
    assert len(whole) > 10
    keys = pa.concat_arrays([b.column("example_key") for b, _ in whole]).to_pylist()
    assert len(keys) == len(set(keys)) == sum(b.num_rows for b, _ in whole)
    for cut in (1, len(whole) // 2, len(whole) - 1):
        cursor = json.loads(json.dumps(whole[cut - 1][1]))  # a cursor survives JSON
        rest = batches(pretext.Pipeline(QUICKSTART, SMALL, tokenizer_dir=tokenizer_dir), cursor)
        assert len(rest) == len(whole) - cut
        for (got, _), (want, _) in zip(rest, whole[cut:], strict=True):
            assert got.equals(want)


def test_reader_and_arrow_c_stream(tokenizer_dir: str) -> None:
    p = pretext.Pipeline(QUICKSTART, SMALL, tokenizer_dir=tokenizer_dir)
    want = pa.Table.from_batches([b for b, _ in batches(p)])
    reader = p.to_reader()
    assert isinstance(reader, pa.RecordBatchReader)
    assert reader.schema == p.schema
    assert reader.read_all().equals(want)
    # Any consumer of the Arrow PyCapsule stream interface.
    assert pa.RecordBatchReader.from_stream(p).read_all().equals(want)
    assert pa.table(p).equals(want)


def test_forever_runs_into_the_next_pass(tokenizer_dir: str) -> None:
    p = pretext.Pipeline(QUICKSTART, SMALL, tokenizer_dir=tokenizer_dir)
    n = len(batches(p))
    it = p.iter_batches(forever=True)
    epochs = [next(it)[1]["epoch"] for _ in range(n + 2)]
    assert epochs[0] == 0 and epochs[-1] == 1
    second = batches(p, p.start_cursor(1))
    assert len(second) == n
    assert not second[0][0].equals(batches(p)[0][0])  # each pass has its own order and masks


def test_waiting_releases_the_gil(tokenizer_dir: str) -> None:
    # Large batches, nothing made ahead: every next() waits for the pipeline.
    p = pretext.Pipeline(QUICKSTART, {"stream.batch_size": 2048}, tokenizer_dir=tokenizer_dir)
    p.build()
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.05)
        before = ticks
        started = time.perf_counter()
        it = p.iter_batches(prefetch=1)
        next(it)
        waited = time.perf_counter() - started
        during = ticks - before
    finally:
        stop.set()
        t.join()
    # With the GIL held for the whole wait the thread could not have counted at all.
    assert waited > 0.02
    assert during > 1000, (during, waited)


def test_export_reports_and_writes(tokenizer_dir: str, tmp_path, capsys) -> None:
    p = pretext.Pipeline(QUICKSTART, SMALL, tokenizer_dir=tokenizer_dir)
    out = tmp_path / "export"
    report = p.export(out)
    rows = sum(b.num_rows for b, _ in batches(p))
    assert report["rows"] == rows and report["parts"] >= 1 and not report["already_complete"]
    assert pads.dataset(sorted(map(str, out.glob("part-*.parquet"))), format="parquet").count_rows() == rows
    assert report["summary"][0].startswith(f"exported {rows} rows")
    assert report["summary"][0] in capsys.readouterr().err
    again = p.export(out, resume=True, quiet=True)
    assert again["already_complete"]
