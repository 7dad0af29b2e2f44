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


def fingerprint(batch: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in ("input_ids", "labels"):
        h.update(batch[name].numpy().astype("int64").tobytes())
    return h.hexdigest()


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
        dl = StatefulDataLoader(ds, batch_size=None, num_workers=0)
        if state is not None:
            dl.load_state_dict(state)
        return dl

    return loader, lambda: None


def make_hf(corpus: str, tok_file: str, work: str) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
    from torchdata.stateful_dataloader import StatefulDataLoader

    import torch

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
    import numpy as np

    cols = grouped.with_format("numpy")
    for start in range(0, len(grouped), 4096):
        chunk = cols[start : start + 4096]
        for i in range(len(chunk["input_ids"])):
            yield {
                "input_ids": np.asarray(chunk["input_ids"][i], dtype=np.int32),
                "special_tokens_mask": np.asarray(chunk["special_tokens_mask"][i], dtype=np.int8),
            }


def make_mosaic(corpus: str, tok_file: str, work: str) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
    from streaming import MDSWriter, StreamingDataset

    tok, grouped = hf_tokenized(corpus, tok_file, os.path.join(work, "cache"), WORKERS)
    out = os.path.join(work, "mds")
    with MDSWriter(
        out=out, columns={"input_ids": "ndarray:int32", "special_tokens_mask": "ndarray:int8"}, compression=None
    ) as w:
        for row in rows_of(grouped):
            w.write(row)
    collate = collator(tok)

    def to_features(items: list[dict[str, Any]]) -> Any:
        return collate(
            [
                {"input_ids": r["input_ids"].tolist(), "special_tokens_mask": r["special_tokens_mask"].tolist()}
                for r in items
            ]
        )

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
    collate = collator(tok)

    def to_features(items: list[dict[str, Any]]) -> Any:
        return collate(
            [
                {"input_ids": r["input_ids"].tolist(), "special_tokens_mask": r["special_tokens_mask"].tolist()}
                for r in items
            ]
        )

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


def run_one(system: str, corpus: str, tok_file: str) -> dict[str, Any]:
    work = tempfile.mkdtemp(prefix=f"bench-{system}-")
    try:
        t0 = time.perf_counter()
        make, cleanup = SYSTEMS[system](corpus, tok_file, work)
        prep = time.perf_counter() - t0
        loader = make(None)
        prints: list[str] = []
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
        cleanup()
        return {
            "system": system,
            "batches": len(prints),
            "prep_s": prep,
            "first_s": first,
            "steady_tok_s": tokens / steady_s,
            "resume_first_s": resume_first,
            "resume_exact": rest == prints[half:],
            "resume_delivered": len(rest),
            "resume_expected": len(prints) - half,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus")
    p.add_argument("tokenizer")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, os.path.abspath(args.corpus), os.path.abspath(args.tokenizer))), flush=True)
        return
    systems = args.systems.split(",")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for r in range(args.runs):
        # Alternate the order so no system always runs on a cold or a warm page cache.
        order = systems[r % len(systems) :] + systems[: r % len(systems)]
        for s in order:
            out = subprocess.run(
                [sys.executable, __file__, args.corpus, args.tokenizer, "--one", s], capture_output=True, text=True
            )
            if out.returncode != 0:
                print(f"{s}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
                continue
            line = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(line), flush=True)
            results[s].append(line)
    med = {
        s: {
            k: statistics.median(x[k] for x in v)
            for k in ("prep_s", "first_s", "steady_tok_s", "resume_first_s", "peak_rss_mb")
        }
        for s, v in results.items()
        if v
    }
    base = med.get("pretext")
    print(
        "\n| system | prep s | first batch s | steady tokens/s | pretext ÷ it | resume: first batch s | resumed exactly | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for s, m in med.items():
        ratio = f"{base['steady_tok_s'] / m['steady_tok_s']:.1f}×" if base and s != "pretext" else "—"
        exact = all(x["resume_exact"] for x in results[s])
        print(
            f"| {s} | {m['prep_s']:.1f} | {m['first_s']:.1f} | {m['steady_tok_s']:,.0f} | {ratio} | {m['resume_first_s']:.2f} | {'yes' if exact else 'no'} | {m['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
