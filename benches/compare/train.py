"""pretext's trainer against PyTorch + transformers: the same model, weights, batches and AdamW.

    python3 benches/compare/train.py --pretext target/release/pretext --corpus CORPUS.parquet \\
        --tokenizer tokenizer.json [--steps 8] [--runs 3] [--threads 2] [--only encoder,decoder]

For each shape (the BERT-style encoder, MLM; the GPT-2-style decoder, causal; 4 layers, hidden
256, 4 heads, seq 128, batch 32, dropout 0.1): pretext exports the examples once, a one-step
pretext run gives the initial weights (`export-model`), then, alternately, `runs` times each:
pretext trains `steps` steps from those weights on the export (`init_from`, `format: pretext`),
and `transformers` (BertForMaskedLM / GPT2LMHeadModel, eager attention, given pretext's
document-wise causal mask) trains the same steps on the same rows with `torch.optim.AdamW` and
the same schedule, clipping and weight decay. Both use `threads` threads. Tokens/s counts the
tokens of each optimizer step (rows × seq_len) over its wall time, the first step left out (both
warm up there); the median of the runs is reported with the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    "encoder": ("mlm: { seq_len: 128 }", "encoder", "mlm"),
    "decoder": ("causal: { seq_len: 128, reset_position_ids: false }", "decoder", "causal"),
}
BATCH = 32
TRAIN = """train:
  model: {{ {model}: {{ layers: 4, hidden: 256, heads: 4, ffn: 1024, dropout: 0.1 }} }}
  steps: {steps}
  log_every: 1
  optimizer: {{ adamw: {{ lr: 0.0005, weight_decay: 0.01 }} }}
  schedule: {{ warmup_steps: 2 }}
  device: cpu
"""


def run(cmd: list[str], cwd: Path, threads: int) -> None:
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")


def pretext_tokens_per_s(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    steps = records[1:]
    tokens = BATCH * 128 * len(steps)
    return tokens / sum(r["compute_s"] + r["data_wait_s"] for r in steps)


def torch_tokens_per_s(init: Path, export: Path, kind: str, steps: int, lrs: list[float], threads: int) -> float:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    torch.set_num_threads(threads)
    load = AutoModelForMaskedLM if kind == "mlm" else AutoModelForCausalLM
    model = load.from_pretrained(init, attn_implementation="eager")
    model.train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name or ".ln_" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lrs[0]
    )
    table = pa.concat_tables([pq.read_table(p) for p in sorted(export.glob("part-*.parquet"))])
    columns = ["input_ids", "attention_mask", "labels"] + (["segment_ids"] if kind == "causal" else [])
    table = table.slice(0, steps * BATCH)
    rows = {c: torch.tensor(table.column(c).to_pylist(), dtype=torch.long) for c in columns}
    times = []
    for step in range(steps):
        started = time.perf_counter()
        inputs = {c: t[step * BATCH : (step + 1) * BATCH] for c, t in rows.items()}
        if kind == "causal":
            seg = inputs.pop("segment_ids")
            w = seg.shape[1]
            allowed = (seg[:, :, None] == seg[:, None, :]) & torch.ones(w, w, dtype=torch.bool).tril()
            mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
            inputs["attention_mask"] = mask[:, None, :, :]
        for g in opt.param_groups:
            g["lr"] = lrs[step]
        loss = model(**inputs).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        times.append(time.perf_counter() - started)
    return BATCH * 128 * (steps - 1) / sum(times[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretext", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="encoder,decoder")
    a = p.parse_args()
    pretext = str(Path(a.pretext).resolve())
    for shape in a.only.split(","):
        task, model, kind = SHAPES[shape]
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            head = (
                f"source: {{ path: '{Path(a.corpus).resolve()}' }}\ntokenizer: {{ file: '{Path(a.tokenizer).resolve()}' }}\n"
                f"task: {{ {task} }}\nstream: {{ batch_size: {BATCH} }}\n"
            )
            train = TRAIN.format(model=model, steps=1).replace("warmup_steps: 2", "warmup_steps: 1")
            (d / "source.yaml").write_text(f"name: s\n{head}export: {{ rows_per_file: {a.steps * BATCH} }}\n{train}")
            run([pretext, "export", "source.yaml", "--out", "ex", "--quiet"], d, a.threads)
            run(
                [
                    pretext,
                    "train",
                    "source.yaml",
                    "--run-dir",
                    "first",
                    "--quiet",
                    "--set",
                    "train.schedule.warmup_steps=1",
                ],
                d,
                a.threads,
            )
            run([pretext, "export-model", "first", "--to", "init"], d, a.threads)
            train = TRAIN.format(model=model, steps=a.steps) + "  init_from: init\n"
            (d / "bench.yaml").write_text(
                f"name: b\nsource: {{ path: ex, format: pretext }}\ntokenizer: {{ file: '{Path(a.tokenizer).resolve()}' }}\n"
                f"task: {{ {task} }}\nstream: {{ batch_size: {BATCH} }}\n{train}"
            )
            ours, theirs, lrs = [], [], None
            for i in range(a.runs):
                run([pretext, "train", "bench.yaml", "--run-dir", f"run{i}", "--quiet"], d, a.threads)
                ours.append(pretext_tokens_per_s(d / f"run{i}"))
                if lrs is None:
                    records = (d / f"run{i}" / "metrics.jsonl").read_text().splitlines()
                    lrs = [json.loads(r)["lr"] for r in records if r]
                theirs.append(torch_tokens_per_s(d / "init", d / "ex", kind, a.steps, lrs, a.threads))
                print(
                    f"{shape} run {i + 1}: pretext {ours[-1]:,.0f} tokens/s, transformers {theirs[-1]:,.0f}", flush=True
                )
            o, t = statistics.median(ours), statistics.median(theirs)
            print(
                f"{shape}: pretext {o:,.0f} tokens/s, PyTorch + transformers {t:,.0f} tokens/s: {o / t:.2f}x (median of {a.runs})"
            )


if __name__ == "__main__":
    main()
