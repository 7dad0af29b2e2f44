"""A plain PyTorch training loop on a pretext pipeline, resumable after a kill.

    python examples/python/train_torch.py pipelines/quickstart.yaml --out runs/torch --steps 300

BertForMaskedLM made from a config (nothing downloaded), AdamW, a StatefulDataLoader over a
``PretextDataset``. Every ``--checkpoint-every`` steps the model, the optimizer, the RNG and the
loader's state are written atomically to ``OUT/checkpoint.pt``; run the same command again after a
crash (or ``kill -9``) and it continues from there with exactly the batches it would have seen.
The trained tokenizer is kept in ``OUT/tokenizer`` so the resumed run sees the same vocabulary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import BertConfig, BertForMaskedLM

import torch
from pretext.torch import PretextDataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline", help="the pipeline file (an mlm task)")
    p.add_argument("--out", required=True, help="where the checkpoint and the tokenizer are kept")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a pipeline override")
    return p.parse_args(argv)


def save(path: str, state: dict) -> None:
    """Writes a checkpoint so that a kill at any moment leaves the previous one intact."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    dataset = PretextDataset(args.pipeline, args.set, tokenizer_dir=os.path.join(args.out, "tokenizer"), forever=True)
    info = dataset.pipeline.info
    seq_len = dataset.schema.field("input_ids").type.list_size
    config = BertConfig(
        vocab_size=info["vocab_size"],
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=seq_len,
        pad_token_id=info["pad_token_id"] or 0,
    )
    model = BertForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    loader = StatefulDataLoader(dataset, batch_size=None, num_workers=args.workers)

    checkpoint = os.path.join(args.out, "checkpoint.pt")
    step = 0
    state = torch.load(checkpoint, weights_only=False) if os.path.exists(checkpoint) else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        step = state["step"]
    # Starting the loader draws its base seed from torch's RNG: the RNG is restored after it, so
    # that dropout continues exactly where the checkpoint left it.
    batches = iter(loader)
    if state is not None:
        torch.set_rng_state(state["rng"])
        print(f"resumed at step {step}", flush=True)

    model.train()
    started = time.perf_counter()
    tokens = 0
    for batch in batches:
        if step >= args.steps:
            break
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += int(batch["attention_mask"].sum())
        print(f"step {step} loss {out.loss.item():.6f}", flush=True)
        if step % args.checkpoint_every == 0 or step == args.steps:
            save(
                checkpoint,
                {
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "loader": loader.state_dict(),
                    "rng": torch.get_rng_state(),
                },
            )
            print(f"checkpoint at step {step}", flush=True)
    seconds = time.perf_counter() - started
    print(f"done: {step} steps, {tokens / max(seconds, 1e-9):,.0f} tokens/s", file=sys.stderr)


if __name__ == "__main__":
    main()
