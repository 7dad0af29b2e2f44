"""The `pretext` console script is the cargo binary's command line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import QUICKSTART


def pretext_cmd() -> list[str]:
    exe = shutil.which("pretext")
    assert exe, "the package's `pretext` console script is not on PATH"
    return [exe]


def test_version_and_help() -> None:
    out = subprocess.run([*pretext_cmd(), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("pretext ")
    out = subprocess.run([*pretext_cmd(), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "export" in out.stdout and "train" in out.stdout


def test_validate_and_exit_codes(tmp_path) -> None:
    ok = subprocess.run([*pretext_cmd(), "validate", str(QUICKSTART)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nsource: { path: data, text_colum: text }\ntask: { mlm: {} }\n")
    out = subprocess.run([*pretext_cmd(), "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "p.yaml:2:23: source.text_colum: unknown key `text_colum`" in out.stderr
    assert "did you mean `text_column`?" in out.stderr
    usage = subprocess.run([*pretext_cmd(), "frobnicate"], capture_output=True, text=True)
    assert usage.returncode == 2


@pytest.mark.skipif(not os.environ.get("PRETEXT_BIN"), reason="PRETEXT_BIN (the cargo binary) not given")
def test_same_output_as_the_cargo_binary(tmp_path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nsource: { path: data }\ntask: { mlm: { seq_len: long, mask_prob: 1.5 } }\n")
    for args in (["--help"], ["validate", str(bad)], ["preview", str(QUICKSTART), "-n", "1"], ["schema", "--help"]):
        a = subprocess.run([*pretext_cmd(), *args], capture_output=True, text=True, cwd=tmp_path)
        b = subprocess.run([os.environ["PRETEXT_BIN"], *args], capture_output=True, text=True, cwd=tmp_path)
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr), args


def test_sigterm_stops_an_export_at_a_safe_point(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            *pretext_cmd(),
            "export",
            str(QUICKSTART),
            "--out",
            str(out),
            "--set",
            "stream.batch_size=8",
            "--set",
            "export.rows_per_file=50",
            "--set",
            "stream.epochs=50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(out.glob("**/part-*.parquet")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "--resume" in err
