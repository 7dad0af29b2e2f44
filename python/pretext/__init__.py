"""pretext: self-supervised pretraining data from data-lake tables, streamed into PyTorch.

A pipeline is one YAML file (see the repository's README for its reference). From Python::

    import pretext

    p = pretext.Pipeline("pipelines/quickstart.yaml", {"stream.batch_size": 64})
    for batch, cursor in p.iter_batches():
        ...  # batch: pyarrow.RecordBatch; cursor: where the stream stands after it

``pretext.torch.PretextDataset`` wraps a pipeline as a stateful, shard-aware PyTorch
``IterableDataset``. Every error pretext raises is a :class:`pretext.Error`; a wrong pipeline
file or override raises :class:`pretext.SpecError` with every problem in ``.errors``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from pretext._pretext import (
    DataError,
    EnvError,
    Error,
    InternalError,
    SpecError,
    StoppedError,
    __version__,
    _before_fork,
    _Pipeline,
)

# The pipeline's threads are stopped (and joined) before a fork, so that a forked DataLoader worker
# starts with no Rust thread caught holding a lock; the runtime restarts on next use in both.
os.register_at_fork(before=_before_fork)

__all__ = [
    "Pipeline",
    "Cursor",
    "Sets",
    "Error",
    "SpecError",
    "DataError",
    "EnvError",
    "StoppedError",
    "InternalError",
    "__version__",
]

#: Overrides of pipeline keys, as ``--set`` takes them: a mapping ``{"stream.batch_size": 64}``
#: or a sequence of ``"key=value"`` strings.
Sets = Mapping[str, Any] | Sequence[str] | None

#: A stream cursor: a small JSON-able dict saying where a stream stands after a batch.
Cursor = dict[str, Any]


def _set_args(sets: Sets) -> list[str]:
    """``set`` as the ``key=value`` strings of ``--set`` (values of a mapping as JSON/YAML)."""
    if sets is None:
        return []
    if isinstance(sets, str):
        return [sets]
    if isinstance(sets, Mapping):
        out = []
        for key, value in sets.items():
            if not isinstance(key, str):
                raise TypeError(f"set: keys are dotted pipeline paths (str), not {key!r}")
            text = value if isinstance(value, str) else json.dumps(value)
            out.append(f"{key}={text}")
        return out
    out = []
    for item in sets:
        if not isinstance(item, str):
            raise TypeError(f"set: a list holds 'key=value' strings, not {item!r}")
        out.append(item)
    return out


def _remove_dir(path: str, owner: int) -> None:
    # Only the process that made the directory removes it (not a forked loader worker).
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


class Pipeline:
    """A pipeline file, ready to stream its examples as Arrow batches.

    Args:
        path: the pipeline's YAML file.
        set: overrides, as ``--set`` takes them: ``{"stream.batch_size": 64}`` or
            ``["stream.batch_size=64"]``.
        tokenizer_dir: where a tokenizer the pipeline trains is written and, when it is already
            there, loaded from. Default: a temporary directory removed with the object. Pass a
            directory kept with your checkpoints when an exact resume must see the same vocabulary.

    Raises:
        SpecError: the file or an override is wrong (``.errors`` lists every problem).
        EnvError: the file cannot be read.

    The plan (sources listed and checked, tokenizer trained or loaded) is resolved on first use
    in each process, so a ``Pipeline`` made in a parent works in forked workers.
    """

    def __init__(
        self, path: str | os.PathLike[str], set: Sets = None, *, tokenizer_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self._path = os.fspath(path)
        self._sets = _set_args(set)
        if tokenizer_dir is None:
            tokenizer_dir = tempfile.mkdtemp(prefix="pretext-tokenizer-")
            self._cleanup = weakref.finalize(self, _remove_dir, tokenizer_dir, os.getpid())
        self._tokenizer_dir = os.fspath(tokenizer_dir)
        self._inner = _Pipeline(self._path, self._sets, self._tokenizer_dir)

    def __repr__(self) -> str:
        return f"pretext.Pipeline({self._path!r}, set={self._sets!r})"

    @property
    def path(self) -> str:
        """The pipeline file."""
        return self._path

    @property
    def sets(self) -> list[str]:
        """The overrides, as ``key=value`` strings."""
        return list(self._sets)

    @property
    def tokenizer_dir(self) -> str:
        """Where the pipeline's trained tokenizer is kept."""
        return self._tokenizer_dir

    @property
    def name(self) -> str:
        """The pipeline's ``name``."""
        return self._inner.name

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of every batch (resolves the plan)."""
        return pa.Schema._import_from_c_capsule(self._inner.schema())

    @property
    def info(self) -> dict[str, Any]:
        """``batch_size``, ``epochs``, ``seed``, ``task``, ``rank``, ``world_size``, ``vocab_size``
        and the special ids (``pad_token_id``, ``mask_token_id``, …; ``None`` where absent)."""
        return dict(self._inner.info())

    def build(self) -> None:
        """Resolves the plan now: lists and checks the sources, trains or loads the tokenizer."""
        self._inner.build()

    def validate(self) -> None:
        """Checks the pipeline as ``pretext validate`` does (sources, columns, SQL, tokenizer
        settings) without training a tokenizer; raises the first error found."""
        self._inner.validate()

    def preview(self, n: int = 3) -> str:
        """The first ``n`` examples decoded, as ``pretext preview`` prints them."""
        if n < 0:
            raise ValueError("preview: n must be 0 or more")
        return self._inner.preview(n)

    def start_cursor(self, epoch: int = 0) -> Cursor:
        """The cursor at the start of pass ``epoch``."""
        return json.loads(self._inner.start_cursor(epoch))

    def iter_batches(
        self,
        cursor: Cursor | None = None,
        *,
        split: str = "all",
        forever: bool = False,
        prefetch: int = 4,
    ) -> Iterator[tuple[pa.RecordBatch, Cursor]]:
        """Batches as ``(pyarrow.RecordBatch, cursor)`` pairs.

        ``cursor`` is where the stream stands after the batch it comes with: passing it back
        (``iter_batches(cursor)``) continues with exactly the next batch. One pass from
        ``cursor`` (default: the start of pass 0), or pass after pass when ``forever``.
        ``split`` is ``"all"``, or ``"train"`` / ``"eval"`` with ``train.eval`` set. The pipeline
        runs ahead on its own threads, ``prefetch`` batches at most; waiting releases the GIL.
        """
        it = self._inner.iter(split, _cursor_arg(cursor), forever, prefetch)
        for schema, array, cursor_json in it:
            yield pa.RecordBatch._import_from_c_capsule(schema, array), json.loads(cursor_json)

    def to_reader(self, cursor: Cursor | None = None, *, split: str = "all", prefetch: int = 4) -> pa.RecordBatchReader:
        """One pass as a ``pyarrow.RecordBatchReader`` (through the Arrow C stream interface)."""
        it = self._inner.iter(split, _cursor_arg(cursor), False, prefetch)
        return pa.RecordBatchReader._import_from_c_capsule(it.stream())

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """The Arrow PyCapsule stream interface: one pass, for polars, duckdb, pyarrow."""
        if requested_schema is not None:
            # Casting is the consumer's business; pretext's schema is fixed by the task.
            return self.to_reader().__arrow_c_stream__(requested_schema)
        return self._inner.iter("all", None, False, 4).stream()

    def rebalance(self, cursors: Sequence[Cursor], world_size: int, *, split: str = "all") -> list[Cursor]:
        """Cursors that every rank of a world saved after the same batch, turned into cursors for
        ``world_size`` ranks that together deliver exactly the rest of the pass."""
        texts = [json.dumps(c) for c in cursors]
        return [json.loads(c) for c in self._inner.rebalance(texts, world_size, split)]

    def export(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        resume: bool = False,
        allow_new_data: bool = False,
        progress: bool | None = None,
        quiet: bool = False,
    ) -> dict[str, Any]:
        """Writes the examples as a Parquet dataset, as ``pretext export`` does.

        ``out``: the dataset's directory or URL (default: the pipeline's ``export.path``).
        ``progress``: a progress bar on stderr (default: when stderr is a terminal). The CLI's
        result lines go to stderr unless ``quiet``. Returns the report: ``dir``, ``rows``,
        ``tokens``, ``parts``, ``resumed_parts``, ``already_complete``, ``seconds``,
        ``summary`` (the result lines).
        """
        if progress is None:
            progress = sys.stderr.isatty()
        report = dict(self._inner.export(None if out is None else os.fspath(out), resume, allow_new_data, progress))
        if not quiet:
            for line in report["summary"]:
                print(line, file=sys.stderr)
        return report


def _cursor_arg(cursor: Cursor | str | None) -> str | None:
    if cursor is None:
        return None
    if isinstance(cursor, str):
        return cursor
    return json.dumps(cursor)
