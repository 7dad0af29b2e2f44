"""The examples run: a kill -9 mid-run resumes to the same losses; torchrun shards disjointly."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pretext
from conftest import EXAMPLES, QUICKSTART, REPO, pythonpath_env

TINY = ["--set", "stream.batch_size=16", "--set", "task.mlm.packing=false"]


def losses(text: str) -> dict[int, float]:
    return {int(s): float(v) for s, v in re.findall(r"^step (\d+) loss ([0-9.]+)$", text, re.M)}


def train_torch(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(EXAMPLES / "train_torch.py"),
        str(QUICKSTART),
        "--out",
        str(out),
        "--steps",
        "24",
        "--checkpoint-every",
        "8",
        *TINY,
        *extra,
    ]


def test_train_torch_resumes_after_kill_9_to_the_same_losses(tmp_path, tokenizer_dir: str) -> None:
    env = pythonpath_env()
    env["OMP_NUM_THREADS"] = "1"
    straight = subprocess.run(train_torch(tmp_path / "a"), env=env, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr
    want = losses(straight.stdout)
    assert sorted(want) == list(range(1, 25))

    # The same vocabulary (a trained one is not reproduced byte for byte by a second training).
    out = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / "tokenizer", out / "tokenizer")
    proc = subprocess.Popen(train_torch(out), env=env, stdout=subprocess.PIPE, text=True)
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step 11 "):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumed = subprocess.run(train_torch(out), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at step 8" in resumed.stdout
    got = losses(resumed.stdout)
    assert sorted(got) == list(range(9, 25))
    for step in got:
        assert got[step] == want[step], (step, got[step], want[step])


def test_train_torch_with_loader_workers_resumes_too(tmp_path) -> None:
    env = pythonpath_env()
    env["OMP_NUM_THREADS"] = "1"
    cmd = lambda out, steps: [
        sys.executable,
        str(EXAMPLES / "train_torch.py"),
        str(QUICKSTART),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--checkpoint-every",
        "6",
        "--workers",
        "2",
        *TINY,
    ]  # noqa: E731
    straight = subprocess.run(cmd(tmp_path / "a", 12), env=env, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr
    shutil.copytree(tmp_path / "a" / "tokenizer", tmp_path / "b" / "tokenizer")
    first = subprocess.run(cmd(tmp_path / "b", 6), env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cmd(tmp_path / "b", 12), env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    want, got = losses(straight.stdout), {**losses(first.stdout), **losses(second.stdout)}
    assert got == want


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_cover_the_pass_disjointly(tmp_path, tokenizer_dir: str) -> None:
    env = pythonpath_env()
    env["OMP_NUM_THREADS"] = "1"
    keys = tmp_path / "keys"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(EXAMPLES / "train_ddp.py"),
        str(QUICKSTART),
        "--out",
        str(tmp_path / "ddp"),
        "--keys-out",
        str(keys),
        *TINY,
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    ranks = [{int(k) & 0xFFFF_FFFF_FFFF_FFFF for k in (keys / f"rank-{r}.txt").read_text().split()} for r in range(2)]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]
    every = {
        k
        for b, _ in pretext.Pipeline(QUICKSTART, TINY[1::2], tokenizer_dir=tokenizer_dir).iter_batches()
        for k in b.column("example_key").to_pylist()
    }
    assert ranks[0] | ranks[1] == every


def test_hf_trainer_runs(tmp_path) -> None:
    env = pythonpath_env()
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        str(EXAMPLES / "hf_trainer.py"),
        str(QUICKSTART),
        "--out",
        str(tmp_path / "hf"),
        "--max-steps",
        "6",
        *TINY,
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "trained 6 steps" in run.stdout
