"""PyTorch data loaders side by side: pretext's `PretextDataset` against the loaders PyTorch users
write today, on one corpus, one BERT WordPiece tokenizer, MLM at seq_len 128, the same cores.

    python3 benches/python/loaders.py CORPUS.parquet TOKENIZER.json [--runs 3] [--systems a,b]

Systems (each run in a fresh process, so peak RSS is its own):

- `pretext`: `PretextDataset` through torchdata's `StatefulDataLoader(batch_size=None)`;
  preparation = building the plan (nothing is tokenized ahead).
- `hf`: HuggingFace `datasets` as transformers' run_mlm.py writes it (`map(tokenize)`, `map(group_texts)`,
  then `DataCollatorForLanguageModeling` in a `DataLoader` with 2 workers); preparation = the two maps.
- `mosaic`: MosaicML `streaming`: the grouped token rows written as MDS shards (`MDSWriter`), read by
  `StreamingDataset` + the same collator in a `DataLoader` with 2 workers; preparation = tokenizing,
  grouping and writing the shards.
- `litdata`: `litdata.optimize` of the grouped rows, read by `StreamingDataset` +
  `StreamingDataLoader` with the collator, 2 workers; preparation = tokenizing, grouping, optimize.

Measured per run: `prep_s` (start to the loader being ready), `first_s` (start to the first batch),
steady tokens/s to a loop that only touches the tensors (`steady_tok_s`, over the whole pass after
the first batch), peak RSS, and resuming at 50 % of the pass: time from a new loader restored from
the state saved there to its first batch (`resume_first_s`) and whether the resumed batches are
exactly the ones the uninterrupted pass delivered (`resume_exact`). A system whose loader cannot
restore mid-epoch says how it resumes. Prints one JSON line per run and a median table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

SEQ = 128
BATCH = 64
WORKERS = 2


def fingerprint(batch: dict[str, Any]) -> tuple[str, str]:
    """(which examples, which bytes): the hash of the unmasked token rows (the collators mask with
    a fresh random draw on every pass, so only the rows can match across passes for them), and the
    hash of the batch's `input_ids` and `labels` as delivered."""
    import torch

    ids, labels = batch["input_ids"].to(torch.int64), batch["labels"].to(torch.int64)
    rows = torch.where(labels == -100, ids, labels)
    return (
        hashlib.sha256(rows.numpy().tobytes()).hexdigest(),
        hashlib.sha256(ids.numpy().tobytes() + labels.numpy().tobytes()).hexdigest(),
    )


def bert_steps(loader: Any, vocab: int, steps: int) -> dict[str, float]:
    """A small BERT (4 layers, hidden 256) trained on `steps` batches of `loader` on the CPU:
    the share of the loop spent waiting for the next batch, and tokens/s through the step."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=SEQ,
    )
    model = BertForMaskedLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    it = iter(loader)
    wait = work = 0.0
    tokens = 0
    for step in range(steps + 2):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        inputs = {k: batch[k].to(torch.int64) for k in ("input_ids", "attention_mask", "labels") if k in batch}
        loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if step >= 2:  # the first two steps warm up allocator and workers
            wait += t1 - t0
            work += t2 - t1
            tokens += batch["input_ids"].numel()
    return {"bert_wait_pct": 100 * wait / (wait + work), "bert_tok_s": tokens / (wait + work)}


def touch(batch: dict[str, Any]) -> int:
    """What a loop that only touches the tensors does: read their shapes and one value each."""
    for t in batch.values():
        if hasattr(t, "shape"):
            _ = t.shape, t.reshape(-1)[-1].item()
    return batch["input_ids"].numel()


def hf_tokenized(corpus: str, tok_file: str, cache: str, num_proc: int) -> Any:
    """run_mlm.py's preparation: tokenize, then group into rows of SEQ tokens."""
    import datasets
    from transformers import PreTrainedTokenizerFast

    datasets.disable_progress_bars()
    tok = PreTrainedTokenizerFast(
        tokenizer_file=tok_file,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    raw = datasets.load_dataset("parquet", data_files=corpus, split="train", cache_dir=cache)
    raw = raw.filter(lambda b: [t is not None and t.strip() != "" for t in b["text"]], batched=True, num_proc=num_proc)
    tokenized = raw.map(
        lambda b: tok(b["text"], return_special_tokens_mask=True),
        batched=True,
        num_proc=num_proc,
        remove_columns=raw.column_names,
    )

    def group_texts(examples: dict[str, list]) -> dict[str, list]:
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = (len(concatenated["input_ids"]) // SEQ) * SEQ
        return {k: [t[i : i + SEQ] for i in range(0, total, SEQ)] for k, t in concatenated.items()}

    grouped = tokenized.map(group_texts, batched=True, num_proc=num_proc)
    return tok, grouped


def collator(tok: Any) -> Callable:
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15, return_tensors="pt")


class ToFeatures:
    """The collator over rows of numpy arrays (a class, so spawned workers can pickle it)."""

    def __init__(self, tok: Any) -> None:
        self.collate = collator(tok)

    def __call__(self, items: list[dict[str, Any]]) -> Any:
        return self.collate(
            [
                {"input_ids": r["input_ids"].tolist(), "special_tokens_mask": r["special_tokens_mask"].tolist()}
                for r in items
            ]
        )


def make_pretext(corpus: str, tok_file: str, work: str) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
    from torchdata.stateful_dataloader import StatefulDataLoader

    from pretext.torch import PretextDataset

    yaml = os.path.join(work, "bench.yaml")
    with open(yaml, "w") as f:
        f.write(
            f"name: bench\nseed: 0\nsource: {{ path: '{corpus}', text_column: text, key_column: id }}\n"
            f"tokenizer: {{ file: '{tok_file}' }}\ntask: {{ mlm: {{ seq_len: {SEQ} }} }}\n"
            f"stream: {{ batch_size: {BATCH}, workers: auto }}\n"
        )
    ds = PretextDataset(yaml, columns=["input_ids", "attention_mask", "labels"])

    def loader(state: Any = None) -> Any:
        # A finished pass moves the dataset to the next epoch (fresh masks); every pass here is
        # epoch 0, as each peer's fresh loader is.
        ds.set_epoch(0)
        dl = StatefulDataLoader(ds, batch_size=None, num_workers=0)
        if state is not None:
            dl.load_state_dict(state)
        return dl

    return loader, lambda: None


def make_hf(corpus: str, tok_file: str, work: str) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
    import torch
    from torchdata.stateful_dataloader import StatefulDataLoader

    tok, grouped = hf_tokenized(corpus, tok_file, os.path.join(work, "cache"), WORKERS)
    grouped = grouped.with_format("python")
    collate = collator(tok)

    def loader(state: Any = None) -> Any:
        # Map-style with a seeded generator, in StatefulDataLoader so it can resume mid-epoch
        # (a plain DataLoader cannot: it replays the epoch up to the step).
        g = torch.Generator().manual_seed(0)
        dl = StatefulDataLoader(
            grouped, batch_size=BATCH, shuffle=True, generator=g, collate_fn=collate, num_workers=WORKERS
        )
        if state is not None:
            dl.load_state_dict(state)
        return dl

    return loader, lambda: None


def rows_of(grouped: Any) -> Iterable[dict[str, Any]]:
    """The grouped rows as numpy arrays (every row is SEQ long), read through Arrow in chunks
    (datasets' numpy format imports torchvision.io, which not every torchvision has)."""
    import numpy as np

    table = grouped.with_format("arrow")
    for start in range(0, len(grouped), 4096):
        chunk = table[start : start + 4096]
        ids = chunk.column("input_ids").combine_chunks().flatten().to_numpy().astype(np.int32).reshape(-1, SEQ)
        special = chunk.column("special_tokens_mask").combine_chunks().flatten().to_numpy().astype(np.int8)
        for row, mask in zip(ids, special.reshape(-1, SEQ), strict=True):
            yield {"input_ids": row, "special_tokens_mask": mask}


def make_mosaic(corpus: str, tok_file: str, work: str) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
    from streaming import MDSWriter, StreamingDataset

    tok, grouped = hf_tokenized(corpus, tok_file, os.path.join(work, "cache"), WORKERS)
    out = os.path.join(work, "mds")
    with MDSWriter(
        out=out, columns={"input_ids": "ndarray:int32", "special_tokens_mask": "ndarray:int8"}, compression=None
    ) as w:
        for row in rows_of(grouped):
            w.write(row)
    to_features = ToFeatures(tok)

    def loader(state: Any = None) -> Any:
        from streaming import StreamingDataLoader

        ds = StreamingDataset(local=out, shuffle=True, shuffle_seed=0, batch_size=BATCH)
        dl = StreamingDataLoader(ds, batch_size=BATCH, collate_fn=to_features, num_workers=WORKERS)
        if state is not None:
            dl.load_state_dict(state)
        return dl

    def cleanup() -> None:
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()

    return loader, cleanup


def make_litdata(corpus: str, tok_file: str, work: str) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
    import litdata

    tok, grouped = hf_tokenized(corpus, tok_file, os.path.join(work, "cache"), WORKERS)
    out = os.path.join(work, "lit")
    rows = list(rows_of(grouped))

    litdata.optimize(
        fn=_identity, inputs=rows, output_dir=out, chunk_bytes="16MB", num_workers=WORKERS, mode="overwrite"
    )
    to_features = ToFeatures(tok)

    def loader(state: Any = None) -> Any:
        ds = litdata.StreamingDataset(out, shuffle=True, seed=0)
        dl = litdata.StreamingDataLoader(ds, batch_size=BATCH, collate_fn=to_features, num_workers=WORKERS)
        if state is not None:
            dl.load_state_dict(state)
        return dl

    return loader, lambda: None


def _identity(row: dict[str, Any]) -> dict[str, Any]:
    return row


SYSTEMS = {"pretext": make_pretext, "hf": make_hf, "mosaic": make_mosaic, "litdata": make_litdata}


def run_one(system: str, corpus: str, tok_file: str, bert: int) -> dict[str, Any]:
    # What every system imports anyway is imported before the clock starts.
    import torch  # noqa: F401
    import torchdata.stateful_dataloader  # noqa: F401
    import transformers  # noqa: F401

    work = tempfile.mkdtemp(prefix=f"bench-{system}-")
    try:
        t0 = time.perf_counter()
        make, cleanup = SYSTEMS[system](corpus, tok_file, work)
        prep = time.perf_counter() - t0
        loader = make(None)
        prints: list[tuple[str, str]] = []
        tokens = 0
        first = None
        t_first = 0.0
        for batch in loader:
            if first is None:
                first = time.perf_counter() - t0
                t_first = time.perf_counter()
            else:
                tokens += touch(batch)
            prints.append(fingerprint(batch))
        steady_s = time.perf_counter() - t_first
        end_to_end = time.perf_counter() - t0
        # Resume at 50 %: the state after half the batches, restored in a new loader.
        half = len(prints) // 2
        loader = make(None)
        it = iter(loader)
        for _ in range(half):
            next(it)
        state = loader.state_dict()
        del it, loader
        t1 = time.perf_counter()
        resumed = make(state)
        rest = []
        resume_first = None
        for batch in resumed:
            if resume_first is None:
                resume_first = time.perf_counter() - t1
            rest.append(fingerprint(batch))
        peak = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        )
        step = {}
        if bert:
            with open(tok_file) as f:
                vocab = len(json.load(f)["model"]["vocab"])
            step = bert_steps(make(None), vocab, bert)
        cleanup()
        return {
            "system": system,
            "batches": len(prints),
            "prep_s": prep,
            "first_s": first,
            "steady_tok_s": tokens / steady_s,
            "end_to_end_s": end_to_end,
            "resume_first_s": resume_first,
            "resume_exact": [r[0] for r in rest] == [p[0] for p in prints[half:]],
            "resume_bytes": rest == prints[half:],
            "resume_delivered": len(rest),
            "resume_expected": len(prints) - half,
            "peak_rss_mb": peak,
            **step,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus")
    p.add_argument("tokenizer")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--bert", type=int, default=8, help="BERT steps per run for the data-wait figure (0: none)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(
            json.dumps(run_one(args.one, os.path.abspath(args.corpus), os.path.abspath(args.tokenizer), args.bert)),
            flush=True,
        )
        return
    systems = args.systems.split(",")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for r in range(args.runs):
        # Alternate the order so no system always runs on a cold or a warm page cache.
        order = systems[r % len(systems) :] + systems[: r % len(systems)]
        for s in order:
            out = subprocess.run(
                [sys.executable, __file__, args.corpus, args.tokenizer, "--one", s, "--bert", str(args.bert)],
                check=False,
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(f"{s}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
                continue
            line = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(line), flush=True)
            results[s].append(line)
    keys = ["prep_s", "first_s", "end_to_end_s", "steady_tok_s", "resume_first_s", "peak_rss_mb"]
    if args.bert:
        keys += ["bert_wait_pct", "bert_tok_s"]
    med = {s: {k: statistics.median(x[k] for x in v) for k in keys} for s, v in results.items() if v}
    base = med.get("pretext")

    def ratio(s: str, k: str, smaller_is_better: bool = False) -> str:
        if not base or s == "pretext":
            return "—"
        r = med[s][k] / base[k] if smaller_is_better else base[k] / med[s][k]
        return f"{r:.1f}×"

    print(
        "\n| system | prep s | first batch s | prep + one pass s | pretext faster end to end | steady tokens/s"
        " | pretext ÷ it (steady) | resume: first batch s | resumed: same examples / same bytes | peak RSS MB"
        + (" | BERT step: data wait % | BERT tokens/s" if args.bert else "")
        + " |"
    )
    print("|---" * (10 + 2 * bool(args.bert)) + "|")
    for s, m in med.items():
        same = "yes" if all(x["resume_exact"] for x in results[s]) else "no"
        byte = "yes" if all(x["resume_bytes"] for x in results[s]) else "no"
        row = (
            f"| {s} | {m['prep_s']:.1f} | {m['first_s']:.1f} | {m['end_to_end_s']:.1f} | {ratio(s, 'end_to_end_s', True)}"
            f" | {m['steady_tok_s']:,.0f} | {ratio(s, 'steady_tok_s')} | {m['resume_first_s']:.2f} | {same} / {byte}"
            f" | {m['peak_rss_mb']:.0f}"
        )
        if args.bert:
            row += f" | {m['bert_wait_pct']:.1f} | {m['bert_tok_s']:,.0f}"
        print(row + " |")


if __name__ == "__main__":
    main()
