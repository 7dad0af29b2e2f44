"""pretext pipelines as PyTorch datasets: stateful, shard-aware, elastic.

::

    from torchdata.stateful_dataloader import StatefulDataLoader
    from pretext.torch import PretextDataset

    ds = PretextDataset("pipelines/quickstart.yaml", tokenizer_dir="ckpt/tokenizer")
    loader = StatefulDataLoader(ds, batch_size=None, num_workers=2)
    for batch in loader:          # dict[str, torch.Tensor], ready for model(**batch)
        ...
    state = loader.state_dict()   # small: one pretext cursor per loader worker

Each loader worker of each rank reads shard ``rank × num_workers + worker_id`` of
``world_size × num_workers``, so the ranks and their workers together deliver every example of a
pass once. Batches are made by the pipeline (``stream.batch_size``): use ``batch_size=None`` in
the ``DataLoader``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch.utils.data

import torch
from pretext import Cursor, Pipeline, Sets, _set_args

__all__ = ["PretextDataset", "rebalance", "to_tensors", "DEFAULT_EXCLUDED"]

#: Columns left out of the tensors by default: bookkeeping a model's ``forward`` does not take.
#: Name them in ``columns=`` to have them.
DEFAULT_EXCLUDED = frozenset({"example_key", "special_tokens_mask", "word_ids", "segment_ids"})

_STATE_VERSION = 1


def _world() -> tuple[int, int]:
    """This process's rank and world size: ``torch.distributed`` when initialised, else
    torchrun's ``RANK`` / ``WORLD_SIZE``, else a world of one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None or world is None:
        return 0, 1
    try:
        r, w = int(rank), int(world)
    except ValueError:
        raise ValueError(f"RANK={rank!r} / WORLD_SIZE={world!r} are not integers (torchrun sets them)") from None
    if not 0 <= r < w:
        raise ValueError(f"RANK={r} is not below WORLD_SIZE={w}")
    return r, w


def _shard_key(rank: int, world_size: int) -> str:
    return f"{rank}/{world_size}"


def _default_tokenizer_dir(path: str, sets: list[str], world_size: int) -> str | None:
    """A tokenizer directory every rank of one distributed job agrees on (so that a trained
    vocabulary is trained once and shared), or ``None`` (a private temporary one)."""
    if world_size <= 1:
        return None
    job = os.environ.get("TORCHELASTIC_RUN_ID") or "{}:{}".format(
        os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    )
    digest = hashlib.sha256(json.dumps([os.path.abspath(path), sets, job]).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"pretext-tokenizer-{digest}")


def to_tensors(batch: pa.RecordBatch, columns: Sequence[str] | None = None) -> dict[str, torch.Tensor | list[Any]]:
    """A batch as a dict of tensors, without copying where the dtype allows.

    Fixed-size lists (nested for images) become ``(rows, …)`` tensors over the Arrow values
    buffer, and scalar columns ``(rows,)`` tensors. Copies are made only where PyTorch needs
    another layout: ``labels`` / ``label`` become ``int64`` (the loss functions' index type; a
    null label becomes −100), booleans (bit-packed in Arrow) become ``torch.bool``, and
    ``uint64`` keys are reinterpreted as ``int64`` (no copy). Strings stay Python lists.
    """
    names = list(columns) if columns is not None else [n for n in batch.schema.names if n not in DEFAULT_EXCLUDED]
    out: dict[str, torch.Tensor | list[Any]] = {}
    for name in names:
        index = batch.schema.get_field_index(name)
        if index < 0:
            raise KeyError(f"the batch has no column {name!r}; it has {batch.schema.names}")
        out[name] = _column_tensor(name, batch.column(index))
    return out


def _column_tensor(name: str, col: pa.Array) -> torch.Tensor | list[Any]:
    shape = [len(col)]
    values = col
    while pa.types.is_fixed_size_list(values.type):
        shape.append(values.type.list_size)
        values = values.flatten()
    t = values.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        return col.to_pylist()
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise TypeError(f"column {name!r} of type {col.type} has no tensor form; leave it out with columns=[...]")
    label = name in ("labels", "label")
    if values.null_count:
        if not label:
            raise ValueError(f"column {name!r} holds nulls: a tensor cannot; leave it out with columns=[...]")
        values = values.fill_null(-100)
    if pa.types.is_boolean(t):
        array = values.to_numpy(zero_copy_only=False)
    else:
        array = values.to_numpy(zero_copy_only=True)
        if t == pa.uint64():
            array = array.view(np.int64)
        elif t in (pa.uint32(), pa.uint16()):
            array = array.astype(np.int64)
    with warnings.catch_warnings():
        # Arrow buffers are immutable: the tensor shares them read-only, which torch warns about.
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(array)
    if label and tensor.dtype != torch.int64:
        tensor = tensor.to(torch.int64)
    return tensor.view(shape)


class PretextDataset(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """A pipeline as a PyTorch ``IterableDataset`` of ready batches (``dict[str, Tensor]``).

    Args:
        path: the pipeline's YAML file.
        set: overrides, as ``--set`` takes them (a dict or ``"key=value"`` strings).
        tokenizer_dir: where a tokenizer the pipeline trains is kept. Keep it with your
            checkpoints: a resumed run must see the same vocabulary. Default: a temporary
            directory (shared by the ranks of one ``torchrun`` job on one node; the first rank
            trains, the others load).
        columns: the columns to deliver (default: all but :data:`DEFAULT_EXCLUDED`).
        split: ``"all"``, or ``"train"`` / ``"eval"`` when the pipeline sets ``train.eval``.
        forever: one iteration runs pass after pass without end (for ``max_steps`` loops);
            default: one iteration is one pass (``set_epoch`` picks it, as with
            ``DistributedSampler``).
        rank, world_size: this process's place in the job (default: ``torch.distributed``, else
            ``RANK`` / ``WORLD_SIZE``).
        prefetch: batches the pipeline makes ahead of the loop.

    The pipeline file is checked and its plan resolved (tokenizer trained or loaded) when the
    dataset is made; the Rust runtime starts in the process that iterates (a loader worker
    makes its own).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        set: Sets = None,
        *,
        tokenizer_dir: str | os.PathLike[str] | None = None,
        columns: Sequence[str] | None = None,
        split: str = "all",
        forever: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        prefetch: int = 4,
    ) -> None:
        super().__init__()
        self._path = os.fspath(path)
        self._sets = _set_args(set)
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if rank is None or world_size is None:
            rank, world_size = _world()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not below world_size {world_size}")
        self.rank, self.world_size = rank, world_size
        if tokenizer_dir is None:
            tokenizer_dir = _default_tokenizer_dir(self._path, self._sets, world_size)
        self._pipeline = Pipeline(self._path, self._sets, tokenizer_dir=tokenizer_dir)
        self._tokenizer_dir = self._pipeline.tokenizer_dir
        self._build_locked(self._pipeline)
        self._columns = list(columns) if columns is not None else None
        if self._columns is not None:
            names = self._pipeline.schema.names
            missing = [c for c in self._columns if c not in names]
            if missing:
                raise ValueError(f"columns {missing} are not in the pipeline's batches; they have {names}")
        self._split = split
        self._forever = forever
        self._prefetch = prefetch
        self._epoch = 0
        # Loaded positions by shard ("rank/world"); the cursor after the last batch handed out.
        self._cursors: dict[str, Cursor] = {}
        self._shard: tuple[int, int] | None = None
        self._last: Cursor | None = None
        self._finished = False
        self._shard_pipelines: dict[tuple[int, int, int], Pipeline] = {}

    def _build_locked(self, pipeline: Pipeline) -> None:
        # Ranks sharing a tokenizer directory take turns: the first trains, the others load.
        os.makedirs(self._tokenizer_dir, exist_ok=True)
        with open(os.path.join(self._tokenizer_dir, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                pipeline.build()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline (the whole data, unsharded)."""
        return self._pipeline

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the pipeline's batches."""
        return self._pipeline.schema

    @property
    def epoch(self) -> int:
        """The pass the next iteration delivers."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Picks the pass the next iteration delivers (each pass has its own order and masks).
        A position loaded for another pass is dropped."""
        if epoch < 0:
            raise ValueError("epoch must be 0 or more")
        if epoch != self._epoch:
            self._cursors = {}
            self._last = None
            self._finished = False
        self._epoch = epoch

    def _reader_shard(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        return self.rank * workers + worker, self.world_size * workers

    def _shard_pipeline(self, shard: tuple[int, int]) -> Pipeline:
        key = (os.getpid(), *shard)
        p = self._shard_pipelines.get(key)
        if p is None:
            sets = [*self._sets, f"stream.shard.rank={shard[0]}", f"stream.shard.world_size={shard[1]}"]
            p = Pipeline(self._path, sets, tokenizer_dir=self._tokenizer_dir)
            self._shard_pipelines = {k: v for k, v in self._shard_pipelines.items() if k[0] == os.getpid()}
            self._shard_pipelines[key] = p
        return p

    def __iter__(self) -> Iterator[dict[str, torch.Tensor | list[Any]]]:
        shard = self._reader_shard()
        key = _shard_key(*shard)
        cursor = self._cursors.get(key)
        if cursor is not None and cursor.get("epoch") != self._epoch:
            cursor = None
        if cursor is None and self._cursors and key not in self._cursors:
            raise ValueError(
                f"the loaded state has positions for shards {sorted(self._cursors)}, and this reader is shard {key}: "
                "resume with the same world size and num_workers, or rebalance the states (pretext.torch.rebalance)"
            )
        pipeline = self._shard_pipeline(shard)
        if cursor is None:
            cursor = pipeline.start_cursor(self._epoch)
        self._shard, self._last, self._finished = shard, cursor, False
        for batch, after in pipeline.iter_batches(
            cursor, split=self._split, forever=self._forever, prefetch=self._prefetch
        ):
            tensors = to_tensors(batch, self._columns)
            self._last = after
            yield tensors
        # The pass is over: the next iteration (and a state saved now) starts the next one.
        self._finished = True
        self._epoch = (self._last or {}).get("epoch", self._epoch) + 1
        self._cursors = {}

    def state_dict(self) -> dict[str, Any]:
        """Where this reader stands: the pass and the cursor after the last batch handed out
        (not after what the pipeline made ahead). Small and JSON-able."""
        if self._shard is None:
            state: dict[str, Any] = {"version": _STATE_VERSION, "epoch": self._epoch}
            if self._cursors:
                state["cursors"] = dict(self._cursors)
            return state
        epoch = self._epoch if self._finished or self._last is None else self._last.get("epoch", self._epoch)
        state = {"version": _STATE_VERSION, "epoch": epoch, "shard": list(self._shard), "cursor": self._last}
        if self._finished:
            # `cursor` is where the finished pass ended (elastic resume needs it); `epoch` is next.
            state["finished"] = True
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a :meth:`state_dict` (or one rank's entry of :func:`rebalance`): the next
        iteration continues with exactly the batch that would have come next."""
        epoch, cursors = _parse_state(state)
        self._epoch = epoch
        self._cursors = cursors
        self._shard, self._last, self._finished = None, None, False


def _parse_state(state: Mapping[str, Any]) -> tuple[int, dict[str, Cursor]]:
    if not isinstance(state, Mapping) or "epoch" not in state:
        raise ValueError(f"not a PretextDataset state: {state!r:.200}")
    if state.get("version", _STATE_VERSION) != _STATE_VERSION:
        raise ValueError(
            f"a PretextDataset state of version {state.get('version')}; this pretext reads {_STATE_VERSION}"
        )
    epoch = int(state["epoch"])
    cursors: dict[str, Cursor] = {}
    if "cursors" in state:
        cursors = {str(k): dict(v) for k, v in state["cursors"].items()}
    elif state.get("cursor") is not None and state.get("shard") is not None and not state.get("finished"):
        rank, world = state["shard"]
        cursors = {_shard_key(int(rank), int(world)): dict(state["cursor"])}
    return epoch, cursors


def _reader_states(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The PretextDataset states inside one rank's state: a dataset state, or a
    ``StatefulDataLoader`` state (one per loader worker, or the dataset's with no workers)."""
    if "epoch" in state:
        return [state]
    if isinstance(state.get("dataset_state"), Mapping):
        return [state["dataset_state"]]
    snapshot = state.get("_snapshot")
    if isinstance(snapshot, Mapping):
        workers = snapshot.get("_worker_snapshots") or {}
        out = [w["dataset_state"] for w in workers.values() if w.get("dataset_state") is not None]
        main = snapshot.get("_main_snapshot", {}).get("dataset_state")
        if main is not None:
            out.append(main)
        if out:
            return out
    raise ValueError(
        "not a PretextDataset or StatefulDataLoader state (no 'epoch', no worker snapshots): "
        "pass what dataset.state_dict() or loader.state_dict() returned"
    )


def rebalance(
    states: Sequence[Mapping[str, Any]],
    new_world_size: int,
    *,
    num_workers: int = 0,
    dataset: PretextDataset,
) -> list[dict[str, Any]]:
    """Elastic resume: the states of every rank of a job (all saved after the same step, each a
    ``PretextDataset.state_dict()`` or a ``StatefulDataLoader.state_dict()``) turned into one
    state per rank of a job of ``new_world_size`` ranks with ``num_workers`` loader workers each,
    which together deliver exactly what the old job had not: nothing lost, nothing repeated.

    Load entry ``rank`` with ``dataset.load_state_dict(...)`` on the new rank, before its loader
    starts iterating (not through ``loader.load_state_dict``: the loader's own bookkeeping is for
    the old world). ``dataset`` is any ``PretextDataset`` over the same pipeline and overrides.
    """
    if new_world_size < 1:
        raise ValueError("new_world_size must be at least 1")
    if num_workers < 0:
        raise ValueError("num_workers must be 0 or more")
    # Per old reader: its pass, where it stands in it (None: not begun), and whether it finished.
    readers: dict[str, tuple[int, Cursor | None, bool]] = {}
    worlds = set()
    for state in states:
        for reader in _reader_states(state):
            shard = reader.get("shard")
            epoch = int(reader["epoch"])
            if shard is None:
                # A reader that never iterated: at the position it was loaded with, or the start.
                for key, cursor in (reader.get("cursors") or {}).items():
                    readers[key] = (epoch, cursor, False)
                    worlds.add(int(key.split("/")[1]))
                continue
            key = _shard_key(*shard)
            finished = bool(reader.get("finished"))
            readers[key] = (epoch, reader.get("cursor"), finished)
            worlds.add(int(shard[1]))
    if len(worlds) != 1:
        raise ValueError(
            f"the states come from readers of {sorted(worlds) or 'no'} shard counts: "
            "give the states of every rank of one job, saved after the same step"
        )
    old_world = worlds.pop()
    missing = [r for r in range(old_world) if _shard_key(r, old_world) not in readers]
    if missing:
        raise ValueError(
            f"the states lack readers {missing} of {old_world} (ranks × loader workers): give every rank's state"
        )
    pipeline = dataset.pipeline
    passes = {c["epoch"] for _, c, _ in readers.values() if c is not None}
    if not passes:
        epoch = min(e for e, _, _ in readers.values())
        return [{"version": _STATE_VERSION, "epoch": epoch} for _ in range(new_world_size)]
    if len(passes) != 1:
        raise ValueError(f"the readers are in different passes {sorted(passes)}: give states saved after the same step")
    epoch = passes.pop()
    if all(f for _, _, f in readers.values()):
        # Every reader finished the pass: the new world starts the next one.
        return [{"version": _STATE_VERSION, "epoch": epoch + 1} for _ in range(new_world_size)]
    old = []
    for r in range(old_world):
        _, cursor, _ = readers[_shard_key(r, old_world)]
        old.append(cursor if cursor is not None else pipeline.start_cursor(epoch))
    new_readers = max(num_workers, 1)
    new = pipeline.rebalance(old, new_world_size * new_readers, split=dataset._split)
    out = []
    for rank in range(new_world_size):
        cursors = {
            _shard_key(rank * new_readers + w, new_world_size * new_readers): new[rank * new_readers + w]
            for w in range(new_readers)
        }
        out.append({"version": _STATE_VERSION, "epoch": epoch, "cursors": cursors})
    return out
