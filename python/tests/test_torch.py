"""`pretext.torch`: tensors, StatefulDataLoader exact resume, shards, elastic rebalance."""

from __future__ import annotations

import hashlib
import os
import resource

import pytest
from torchdata.stateful_dataloader import StatefulDataLoader

import pretext
import torch
from conftest import QUICKSTART, SMALL
from pretext.torch import PretextDataset, rebalance, to_tensors


def unsigned(keys: torch.Tensor) -> list[int]:
    """Example keys are uint64; their tensor holds the same bits as int64."""
    return [k & 0xFFFF_FFFF_FFFF_FFFF for k in keys.tolist()]


WITH_KEYS = ["example_key", "input_ids", "attention_mask", "labels"]


def fingerprint(batch: dict) -> str:
    h = hashlib.sha256()
    for name in WITH_KEYS:
        h.update(batch[name].numpy().tobytes())
    return h.hexdigest()


def dataset(tokenizer_dir: str, **kw) -> PretextDataset:
    kw.setdefault("columns", WITH_KEYS)
    return PretextDataset(QUICKSTART, SMALL, tokenizer_dir=tokenizer_dir, **kw)


def test_tensors_are_ready_for_the_model_and_share_arrow_buffers(tokenizer_dir: str, env_no_rank) -> None:
    p = pretext.Pipeline(QUICKSTART, SMALL, tokenizer_dir=tokenizer_dir)
    batch, _ = next(p.iter_batches())
    t = to_tensors(batch)
    assert sorted(t) == ["attention_mask", "input_ids", "labels"]  # model(**t) takes exactly these
    assert t["input_ids"].shape == (64, 128) and t["input_ids"].dtype == torch.int32
    assert t["labels"].dtype == torch.int64 and (t["labels"] == -100).any()
    # No copy: the tensor's memory is the Arrow values buffer.
    values = batch.column("input_ids").values.buffers()[1]
    assert t["input_ids"].data_ptr() == values.address
    assert t["attention_mask"].data_ptr() == batch.column("attention_mask").values.buffers()[1].address
    keys = to_tensors(batch, ["example_key"])["example_key"]
    assert keys.dtype == torch.int64 and keys.data_ptr() == batch.column("example_key").buffers()[1].address

    from transformers import BertConfig, BertForMaskedLM

    info = p.info
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=info["vocab_size"],
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    )
    loss = model(**t).loss
    assert torch.isfinite(loss)


def run(loader, n=None):
    out = []
    for batch in loader:
        out.append(fingerprint(batch))
        if n is not None and len(out) == n:
            break
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resumes_exactly(tokenizer_dir: str, env_no_rank, workers: int) -> None:
    whole = run(StatefulDataLoader(dataset(tokenizer_dir), batch_size=None, num_workers=workers))
    assert len(whole) > 20
    for cut in (5, len(whole) // 2):
        loader = StatefulDataLoader(dataset(tokenizer_dir), batch_size=None, num_workers=workers)
        first = run(loader, cut)
        state = loader.state_dict()
        resumed = StatefulDataLoader(dataset(tokenizer_dir), batch_size=None, num_workers=workers)
        resumed.load_state_dict(state)
        assert first + run(resumed) == whole


def test_workers_partition_the_pass(tokenizer_dir: str, pass_keys, env_no_rank) -> None:
    def keys(loader) -> list[int]:
        return [k for b in loader for k in unsigned(b["example_key"])]

    one = keys(StatefulDataLoader(dataset(tokenizer_dir), batch_size=None, num_workers=0))
    two = keys(StatefulDataLoader(dataset(tokenizer_dir), batch_size=None, num_workers=2))
    assert len(one) == len(set(one)) and sorted(one) == sorted(pass_keys)
    assert len(two) == len(set(two)) and set(two) == set(one)


def test_ranks_from_the_environment(tokenizer_dir: str, pass_keys, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ds = dataset(tokenizer_dir)
    assert (ds.rank, ds.world_size) == (1, 2)
    mine = [k for b in ds for k in unsigned(b["example_key"])]
    other = [k for b in dataset(tokenizer_dir, rank=0, world_size=2) for k in unsigned(b["example_key"])]
    assert not set(mine) & set(other) and sorted(mine + other) == sorted(pass_keys)


def test_epochs_and_set_epoch(tokenizer_dir: str, env_no_rank) -> None:
    ds = dataset(tokenizer_dir)
    first = run(ds)
    assert ds.epoch == 1 and ds.state_dict()["epoch"] == 1
    second = run(ds)
    assert second != first and len(second) == len(first)
    ds.set_epoch(0)
    assert run(ds) == first


def keys_of(ds, n=None) -> list[int]:
    out = []
    for i, b in enumerate(ds):
        out.extend(unsigned(b["example_key"]))
        if n is not None and i + 1 == n:
            break
    return out


@pytest.mark.parametrize("new_world", [1, 4])
def test_elastic_resume_from_two_ranks(tokenizer_dir: str, pass_keys, env_no_rank, new_world: int) -> None:
    seen: list[int] = []
    states = []
    for rank in range(2):
        ds = dataset(tokenizer_dir, rank=rank, world_size=2)
        loader = StatefulDataLoader(ds, batch_size=None, num_workers=0)
        seen += keys_of(loader, 7)
        states.append(loader.state_dict())
    new = rebalance(states, new_world, dataset=dataset(tokenizer_dir))
    assert len(new) == new_world
    for rank in range(new_world):
        ds = dataset(tokenizer_dir, rank=rank, world_size=new_world)
        ds.load_state_dict(new[rank])
        seen += keys_of(StatefulDataLoader(ds, batch_size=None, num_workers=0))
    assert sorted(seen) == sorted(pass_keys)


def test_elastic_resume_with_loader_workers(tokenizer_dir: str, pass_keys, env_no_rank) -> None:
    # Two ranks with two workers each (4 readers) resume on one rank with two workers.
    seen: list[int] = []
    states = []
    for rank in range(2):
        loader = StatefulDataLoader(dataset(tokenizer_dir, rank=rank, world_size=2), batch_size=None, num_workers=2)
        seen += keys_of(loader, 6)
        states.append(loader.state_dict())
    (new,) = rebalance(states, 1, num_workers=2, dataset=dataset(tokenizer_dir))
    ds = dataset(tokenizer_dir, rank=0, world_size=1)
    ds.load_state_dict(new)
    seen += keys_of(StatefulDataLoader(ds, batch_size=None, num_workers=2))
    assert sorted(seen) == sorted(pass_keys)


def test_a_state_for_another_world_is_refused(tokenizer_dir: str, env_no_rank) -> None:
    loader = StatefulDataLoader(dataset(tokenizer_dir, rank=0, world_size=2), batch_size=None)
    keys_of(loader, 2)
    ds = dataset(tokenizer_dir)
    ds.load_state_dict(loader.state_dict()["dataset_state"])
    with pytest.raises(ValueError, match="rebalance"):
        next(iter(ds))
    with pytest.raises(ValueError, match="lack readers"):
        rebalance([loader.state_dict()], 1, dataset=ds)


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_memory_stays_flat_over_a_long_iteration(tokenizer_dir: str, env_no_rank) -> None:
    ds = dataset(tokenizer_dir, forever=True)
    it = iter(StatefulDataLoader(ds, batch_size=None, num_workers=0))
    for _ in range(100):
        next(it)
    start = rss_mb()
    for _ in range(1500):  # about 35 passes over the quickstart
        next(it)
    grown = rss_mb() - start
    assert grown < 50, f"RSS grew {grown:.0f} MB over 1,500 batches"
