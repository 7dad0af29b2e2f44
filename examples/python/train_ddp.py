"""Data-parallel training on a pretext pipeline under torchrun.

    torchrun --nproc_per_node 2 examples/python/train_ddp.py pipelines/quickstart.yaml --out runs/ddp

gloo on CPU, NCCL when CUDA is there (one GPU per rank). Each rank's ``PretextDataset`` reads its
own shard (rank × loader workers of world × workers): every example of a pass once across the job.
Ranks may get one batch more or less than each other; DDP's ``Join`` lets the ranks that run out
first keep answering the others' all-reduces. ``--keys-out DIR`` writes every ``example_key`` a
rank trained on to ``DIR/rank-N.txt`` (the tests use it to check the shards).
Checkpoints (rank 0 writes the model; every rank its loader state) resume with
``--resume``; a different world size resumes through ``pretext.torch.rebalance``.
"""

from __future__ import annotations

import argparse
import os

import torch.distributed as dist
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import BertConfig, BertForMaskedLM

import torch
from pretext.torch import PretextDataset, rebalance


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=1, help="passes over the data")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: the passes)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--keys-out", help="write each rank's example_keys here")
    p.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint (any world size)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)

    columns = ["input_ids", "attention_mask", "labels", "example_key"]
    dataset = PretextDataset(
        args.pipeline, args.set, tokenizer_dir=os.path.join(args.out, "tokenizer"), columns=columns
    )
    info = dataset.pipeline.info
    seq_len = dataset.schema.field("input_ids").type.list_size
    config = BertConfig(
        vocab_size=info["vocab_size"],
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=seq_len,
        pad_token_id=info["pad_token_id"] or 0,
    )
    model = BertForMaskedLM(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    step = 0
    states_path = os.path.join(args.out, "loader-states.pt")
    if args.resume:
        ckpt = torch.load(os.path.join(args.out, "checkpoint.pt"), weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        states = torch.load(states_path, weights_only=False)
        # The old job's per-rank states, rebalanced for this job's world and workers.
        dataset.load_state_dict(rebalance(states, world, num_workers=args.workers, dataset=dataset)[rank])
    ddp = DistributedDataParallel(model)
    loader = StatefulDataLoader(dataset, batch_size=None, num_workers=args.workers)

    keys: list[int] = []
    stop = False
    for epoch in range(dataset.epoch, args.epochs):
        # A resumed pass keeps its loaded position; a new pass starts at its beginning.
        dataset.set_epoch(epoch)
        with Join([ddp]):
            for batch in loader:
                keys.extend(batch.pop("example_key").tolist())
                batch = {k: v.to(device) for k, v in batch.items()}
                loss = ddp(**batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if rank == 0 and step % 10 == 0:
                    print(f"step {step} loss {loss.item():.4f}", flush=True)
                if args.max_steps and step >= args.max_steps:
                    stop = True
                    break
        if stop:
            break

    # Every rank's loader state, gathered on rank 0 beside the model.
    states = [None] * world
    dist.all_gather_object(states, loader.state_dict())
    if rank == 0:
        torch.save(
            {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
            os.path.join(args.out, "checkpoint.pt"),
        )
        torch.save(states, states_path)
    if args.keys_out:
        os.makedirs(args.keys_out, exist_ok=True)
        with open(os.path.join(args.keys_out, f"rank-{rank}.txt"), "w") as f:
            f.write("\n".join(map(str, keys)))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
