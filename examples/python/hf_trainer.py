"""`transformers.Trainer` on a pretext pipeline.

    python examples/python/hf_trainer.py pipelines/quickstart.yaml --out runs/hf --max-steps 200

The pipeline makes whole batches (``stream.batch_size``), so the Trainer's loader takes one item
at a time (``per_device_train_batch_size=1``) and the collator unwraps it. ``forever=True``: the
Trainer stops at ``max_steps``, and a pass that ends simply starts the next.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from transformers import BertConfig, BertForMaskedLM, Trainer, TrainingArguments

import torch
from pretext.torch import PretextDataset


def one_batch(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The collator for pre-made batches: the loader's one item is the batch."""
    (batch,) = items
    return batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline")
    p.add_argument("--out", required=True)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()

    torch.manual_seed(0)
    dataset = PretextDataset(args.pipeline, args.set, tokenizer_dir=os.path.join(args.out, "tokenizer"), forever=True)
    info = dataset.pipeline.info
    config = BertConfig(
        vocab_size=info["vocab_size"],
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=dataset.schema.field("input_ids").type.list_size,
        pad_token_id=info["pad_token_id"] or 0,
    )
    training = TrainingArguments(
        output_dir=args.out,
        max_steps=args.max_steps,
        per_device_train_batch_size=1,
        learning_rate=1e-3,
        warmup_steps=max(1, args.max_steps // 10),
        logging_steps=max(1, args.max_steps // 10),
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=BertForMaskedLM(config), args=training, train_dataset=dataset, data_collator=one_batch)
    result = trainer.train()
    print(f"trained {result.global_step} steps, final loss {result.training_loss:.4f}")


if __name__ == "__main__":
    main()
