"""Trains a `transformers` model the way a pretext run did, for the parity test in tests/interop.rs.

    python3 train_parity.py INIT_DIR FINAL_DIR EXPORT_DIR KIND SETTINGS.json

INIT_DIR holds the weights both runs start from, FINAL_DIR pretext's weights after its run
(both written by `pretext export-model`), EXPORT_DIR the examples pretext trained on (a pretext
export, read in order), KIND `mlm` (BertForMaskedLM) or `causal` (GPT2LMHeadModel). SETTINGS
gives the batch size, the learning rate of each step (from pretext's metrics), AdamW's betas,
eps and weight decay, and the clipping norm. Prints one JSON line: this run's loss per step and,
per parameter tensor, the largest difference to pretext's final weights, the tensor's largest
magnitude, and the largest difference between this run and the same run with each batch's
gradient summed in two halves (how far rounding alone moves a correct run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM


def train(
    init_dir: str, kind: str, rows: dict[str, torch.Tensor], s: dict, dtype: torch.dtype, halves: bool = False
) -> tuple:
    """The run in `dtype`: its loss per step and its final weights."""
    load = AutoModelForMaskedLM if kind == "mlm" else AutoModelForCausalLM
    model = load.from_pretrained(init_dir, attn_implementation="eager").to(dtype)
    model.train()
    # Weight decay on weights, not on biases and norms, as pretext marks them.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name or ".ln_" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s["lrs"][0],
        betas=(s["beta1"], s["beta2"]),
        eps=s["eps"],
    )
    batch = s["batch_size"]
    losses = []
    for step, lr in enumerate(s["lrs"]):
        for g in opt.param_groups:
            g["lr"] = lr
        inputs = {c: t[step * batch : (step + 1) * batch] for c, t in rows.items()}
        if kind == "causal":
            # pretext's decoder attends within each document of a packed row (causal and block-
            # diagonal by `segment_ids`): the same mask, in the 4D form transformers takes.
            seg = inputs.pop("segment_ids")
            w = seg.shape[1]
            causal = torch.ones(w, w, dtype=torch.bool).tril()
            allowed = (seg[:, :, None] == seg[:, None, :]) & causal
            blocked = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
            inputs["attention_mask"] = blocked[:, None, :, :]
        opt.zero_grad()
        if halves:
            # The same gradient summed in another order: two half-batches, each weighted by its
            # share of the predicted tokens.
            def counted(labels: torch.Tensor) -> int:
                return int((labels[:, 1:] if kind == "causal" else labels).ne(-100).sum())

            total = counted(inputs["labels"])
            half = batch // 2
            loss = torch.zeros((), dtype=dtype)
            for part in (slice(0, half), slice(half, batch)):
                piece = {c: t[part] for c, t in inputs.items()}
                part_loss = model(**piece).loss * (counted(piece["labels"]) / total)
                part_loss.backward()
                loss = loss + part_loss.detach()
        else:
            loss = model(**inputs).loss
            loss.backward()
        if s["clip_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s["clip_grad_norm"])
        opt.step()
        losses.append(loss.item())
    return losses, {n: p.detach().to(torch.float64) for n, p in model.state_dict().items() if p.dtype.is_floating_point}


def compared(name: str, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The parts of a tensor to compare. A key bias adds the same amount to every score of a
    query, which softmax ignores: its gradient is zero but for rounding, and Adam scales that noise
    to full-size steps in every run alike."""
    if name.endswith("attention.self.key.bias"):
        return None
    if name.endswith("attn.c_attn.bias"):
        h = p.shape[0] // 3
        return torch.cat([p[:h], p[2 * h :]]), torch.cat([q[:h], q[2 * h :]])
    return p, q


def main() -> None:
    init_dir, final_dir, export_dir, kind, settings_path = sys.argv[1:6]
    s = json.loads(Path(settings_path).read_text())
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    parts = sorted(Path(export_dir).glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    columns = ["input_ids", "attention_mask", "labels"] + (["segment_ids"] if kind == "causal" else [])
    rows = {c: torch.tensor(table.column(c).to_pylist(), dtype=torch.long) for c in columns}
    losses, ours = train(init_dir, kind, rows, s, torch.float32)
    # The same run with each batch's gradient summed in another order: how far rounding alone
    # carries two correct float32 runs apart.
    _, reordered = train(init_dir, kind, rows, s, torch.float32, halves=True)
    load = AutoModelForMaskedLM if kind == "mlm" else AutoModelForCausalLM
    theirs = load.from_pretrained(final_dir, attn_implementation="eager").state_dict()
    diffs = {}
    for name, p in ours.items():
        if name not in theirs:
            continue
        pair = compared(name, p, theirs[name].to(torch.float64))
        spread = compared(name, p, reordered[name])
        if pair is None or spread is None:
            continue
        diffs[name] = [
            float((pair[0] - pair[1]).abs().max()),
            float(pair[1].abs().max()),
            float((spread[0] - spread[1]).abs().max()),
        ]
    print(json.dumps({"losses": losses, "diffs": diffs}))


if __name__ == "__main__":
    main()
