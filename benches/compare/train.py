"""pretext's trainer against PyTorch + transformers: the same model, weights, batches and AdamW.

    python3 benches/compare/train.py --pretext target/release/pretext --corpus CORPUS.parquet \\
        --tokenizer tokenizer.json [--images data/shapes] [--steps 8] [--runs 3] [--threads 2] \\
        [--only encoder,decoder,cnn] [--baseline OLD_PRETEXT]

For each shape (the BERT-style encoder, MLM; the GPT-2-style decoder, causal; 4 layers, hidden
256, 4 heads, seq 128, batch 32, dropout 0.1): pretext exports the examples once, a one-step
pretext run gives the initial weights (`export-model`), then, alternately, `runs` times each:
pretext trains `steps` steps from those weights on the export (`init_from`, `format: pretext`),
and `transformers` (BertForMaskedLM / GPT2LMHeadModel, eager attention, given pretext's
document-wise causal mask) trains the same steps on the same rows with `torch.optim.AdamW` and
the same schedule, clipping and weight decay. Both use `threads` threads. Tokens/s counts the
tokens of each optimizer step (rows × seq_len) over its wall time, the first step left out (both
warm up there); the median of the runs is reported with the ratio. With `--baseline`, another
pretext binary (an earlier build) trains the same steps in the same alternation, so a change is
measured against the state before it in the same run.

The third shape is SimCLR's on the shapes images (`cnn`): pretext's small ResNet-style CNN
(widths 16, 32, 64, group norm, projection 64) on two 32×32 views per image, batch 64, NT-Xent at
temperature 0.5, against the same network written in PyTorch (`SimclrCnn` below, pretext's
parameter names) loaded with pretext's initial weights; its measure is images per second.
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
CNN_BATCH = 64
CNN_TASK = "contrastive_image: { image: { size: 32 }, preset: simclr, augment: { blur: { p: 0.0 }, crop: { scale: [0.3, 1.0] } } }"
CNN_TRAIN = """train:
  model: {{ cnn: {{ widths: [16, 32, 64], projection: 64 }} }}
  steps: {steps}
  log_every: 1
  optimizer: {{ adamw: {{ lr: {lr}, weight_decay: 0.05 }} }}
  schedule: {{ warmup_steps: 1 }}
  temperature: 0.5
  device: cpu
"""
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


def simclr_cnn():
    """pretext's contrastive CNN (`src/train/models/cnn.rs`) in PyTorch, with its parameter names."""
    import torch
    from torch import nn

    class ConvNorm(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.norm = nn.GroupNorm(next(g for g in range(8, 0, -1) if cout % g == 0), cout, eps=1e-5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.conv(x))

    class Block(nn.Module):
        def __init__(self, w: int) -> None:
            super().__init__()
            self.conv1, self.conv2 = ConvNorm(w, w, 1), ConvNorm(w, w, 1)

    class Stage(nn.Module):
        def __init__(self, cin: int, w: int) -> None:
            super().__init__()
            self.down, self.block = ConvNorm(cin, w, 2), Block(w)

    class Body(nn.Module):
        def __init__(self, widths: list[int]) -> None:
            super().__init__()
            self.stem = ConvNorm(3, widths[0], 1)
            self.stages = nn.ModuleList(Stage(i, w) for i, w in zip([widths[0]] + widths[:-1], widths, strict=True))

    class SimclrCnn(nn.Module):
        def __init__(self, widths: list[int], projection: int) -> None:
            super().__init__()
            self.cnn = Body(widths)
            self.projection = nn.Sequential(
                nn.Linear(widths[-1], widths[-1]), nn.ReLU(), nn.Linear(widths[-1], projection)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.cnn.stem(x).relu()
            for s in self.cnn.stages:
                x = s.down(x).relu()
                y = s.block.conv2(s.block.conv1(x).relu())
                x = (x + y).relu()
            return self.projection(x.mean((2, 3)))

    return SimclrCnn([16, 32, 64], 64)


def nt_xent(a, b, temperature: float):
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([a, b]), dim=1, eps=1e-8)
    n2 = z.shape[0]
    sim = z @ z.T / temperature - 1e9 * torch.eye(n2)
    return F.cross_entropy(sim, (torch.arange(n2) + n2 // 2) % n2)


def torch_images_per_s(init: Path, export: Path, steps: int, lrs: list[float], threads: int) -> tuple[float, float]:
    """Images per second, and the first step's loss (a check that the two networks agree)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    model = simclr_cnn()
    model.load_state_dict(load_file(init))
    model.train()
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=lrs[0]
    )
    table = pa.concat_tables([pq.read_table(p) for p in sorted(export.glob("part-*.parquet"))])
    table = table.slice(0, steps * CNN_BATCH)
    views = [
        torch.from_numpy(table.column(c).combine_chunks().flatten().to_numpy().reshape(-1, 3, 32, 32).copy())
        for c in ("view_a", "view_b")
    ]
    times, losses = [], []
    for step in range(steps):
        started = time.perf_counter()
        a, b = (v[step * CNN_BATCH : (step + 1) * CNN_BATCH] for v in views)
        for g in opt.param_groups:
            g["lr"] = lrs[step]
        loss = nt_xent(model(a), model(b), 0.5)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - started)
    return CNN_BATCH * (steps - 1) / sum(times[1:]), losses[0]


def pretext_images_per_s(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    steps = records[1:]
    return CNN_BATCH * len(steps) / sum(r["compute_s"] + r["data_wait_s"] for r in steps)


def bench_cnn(pretext: str, baseline: str | None, images: Path, steps: int, runs: int, threads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        head = (
            f"seed: 7\nsource: {{ path: '{images.resolve()}', key_column: id, image_column: image }}\n"
            f"task: {{ {CNN_TASK} }}\nstream: {{ batch_size: {CNN_BATCH} }}\n"
        )
        # The initial weights: one step at learning rate 0 leaves them as the seed made them.
        first = CNN_TRAIN.format(steps=1, lr=0.0)
        (d / "source.yaml").write_text(f"name: s\n{head}export: {{ rows_per_file: {steps * CNN_BATCH} }}\n{first}")
        run([pretext, "export", "source.yaml", "--out", "ex", "--quiet"], d, threads)
        run([pretext, "train", "source.yaml", "--run-dir", "first", "--quiet"], d, threads)
        init = d / "first" / "checkpoint-0000001" / "model.safetensors"
        train = CNN_TRAIN.format(steps=steps, lr=1.0e-3)
        (d / "bench.yaml").write_text(
            f"name: b\nseed: 7\nsource: {{ path: ex, format: pretext }}\ntask: {{ {CNN_TASK} }}\n"
            f"stream: {{ batch_size: {CNN_BATCH} }}\n{train}"
        )
        ours, theirs, before = [], [], []
        for i in range(runs):
            run([pretext, "train", "bench.yaml", "--run-dir", f"run{i}", "--quiet"], d, threads)
            ours.append(pretext_images_per_s(d / f"run{i}"))
            if baseline:
                run([baseline, "train", "bench.yaml", "--run-dir", f"base{i}", "--quiet"], d, threads)
                before.append(pretext_images_per_s(d / f"base{i}"))
            records = [json.loads(r) for r in (d / f"run{i}" / "metrics.jsonl").read_text().splitlines() if r]
            lrs = [r["lr"] for r in records]
            speed, first_loss = torch_images_per_s(init, d / "ex", steps, lrs, threads)
            theirs.append(speed)
            base = f", baseline {before[-1]:,.0f}" if before else ""
            print(
                f"cnn run {i + 1}: pretext {ours[-1]:,.0f} images/s, PyTorch {theirs[-1]:,.0f}{base} "
                f"(first loss {records[0]['loss']:.6f} and {first_loss:.6f})",
                flush=True,
            )
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"cnn: pretext {o:,.0f} images/s, PyTorch {t:,.0f} images/s: {o / t:.2f}x (median of {runs})")
        report_baseline("cnn", o, before, "images/s")


def report_baseline(shape: str, ours: float, before: list[float], unit: str) -> None:
    if before:
        b = statistics.median(before)
        print(
            f"{shape}: pretext {ours:,.0f} {unit}, baseline {b:,.0f} {unit}: {ours / b:.2f}x (median of {len(before)})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretext", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", default=str(Path(__file__).resolve().parents[2] / "data" / "shapes"))
    p.add_argument("--only", default="encoder,decoder,cnn")
    p.add_argument("--baseline", help="another pretext binary to time in the same runs (an earlier build)")
    a = p.parse_args()
    pretext = str(Path(a.pretext).resolve())
    baseline = str(Path(a.baseline).resolve()) if a.baseline else None
    for shape in a.only.split(","):
        if shape == "cnn":
            bench_cnn(pretext, baseline, Path(a.images), a.steps, a.runs, a.threads)
            continue
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
            ours, theirs, before, lrs = [], [], [], None
            for i in range(a.runs):
                run([pretext, "train", "bench.yaml", "--run-dir", f"run{i}", "--quiet"], d, a.threads)
                ours.append(pretext_tokens_per_s(d / f"run{i}"))
                if baseline:
                    run([baseline, "train", "bench.yaml", "--run-dir", f"base{i}", "--quiet"], d, a.threads)
                    before.append(pretext_tokens_per_s(d / f"base{i}"))
                if lrs is None:
                    records = (d / f"run{i}" / "metrics.jsonl").read_text().splitlines()
                    lrs = [json.loads(r)["lr"] for r in records if r]
                theirs.append(torch_tokens_per_s(d / "init", d / "ex", kind, a.steps, lrs, a.threads))
                base = f", baseline {before[-1]:,.0f}" if before else ""
                print(
                    f"{shape} run {i + 1}: pretext {ours[-1]:,.0f} tokens/s, transformers {theirs[-1]:,.0f}{base}",
                    flush=True,
                )
            o, t = statistics.median(ours), statistics.median(theirs)
            print(
                f"{shape}: pretext {o:,.0f} tokens/s, PyTorch + transformers {t:,.0f} tokens/s: {o / t:.2f}x (median of {a.runs})"
            )
            report_baseline(shape, o, before, "tokens/s")


if __name__ == "__main__":
    main()
