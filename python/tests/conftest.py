"""Shared fixtures: the repository's quickstart pipeline, small, with one trained tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "pipelines" / "quickstart.yaml"
EXAMPLES = REPO / "examples" / "python"

#: Small batches so a pass over the quickstart's 2,643 training documents has many of them; one
#: document per example, so shards partition the example keys (packing packs each shard's own rows).
SMALL = {"stream.batch_size": 64, "stream.workers": 2, "task.mlm.packing": False}


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One trained quickstart vocabulary for the whole session (training is not deterministic
    across runs of the trainer, so every pipeline compared in a test shares it)."""
    import pretext

    path = str(tmp_path_factory.mktemp("tokenizer"))
    pretext.Pipeline(QUICKSTART, SMALL, tokenizer_dir=path).build()
    return path


@pytest.fixture(scope="session")
def pass_keys(tokenizer_dir: str) -> list[int]:
    """The example keys of one pass of the small quickstart, in order."""
    import pretext

    p = pretext.Pipeline(QUICKSTART, SMALL, tokenizer_dir=tokenizer_dir)
    return [k for b, _ in p.iter_batches() for k in b.column("example_key").to_pylist()]


@pytest.fixture()
def env_no_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def pythonpath_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env
