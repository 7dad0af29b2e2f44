"""Type stubs for the PyO3 extension ``pretext._pretext`` (the Rust side of the package).

The public API is ``pretext.Pipeline`` and ``pretext.torch``; these are the building blocks they
use. Capsules follow the Arrow PyCapsule interface (``arrow_schema``, ``arrow_array``,
``arrow_array_stream``).
"""

from typing import Any, final

__version__: str

class Error(Exception):
    """Every error pretext raises."""

class SpecError(Error):
    """The pipeline file or a ``set`` override is wrong.

    ``errors`` lists every problem as a dict with ``file``, ``line``, ``column`` (``None`` for an
    override), ``set`` (the override's text, or ``None``), ``path`` (the YAML path), ``message``
    and ``hint``.
    """

    errors: list[dict[str, Any]]

class DataError(Error):
    """The data the pipeline reads is wrong or unreadable."""

class EnvError(Error):
    """The environment refused something (a file, a directory, permissions, a lock)."""

class StoppedError(Error):
    """A signal stopped the command at a safe point; ``signal`` is its number."""

    signal: int

class InternalError(Error):
    """A broken invariant inside pretext: please report it."""

@final
class _Pipeline:
    def __init__(self, path: str, sets: list[str], tokenizer_dir: str | None = None) -> None: ...
    @property
    def name(self) -> str: ...
    def build(self) -> None: ...
    def validate(self) -> None: ...
    def preview(self, n: int) -> str: ...
    def schema(self) -> object: ...
    def info(self) -> dict[str, Any]: ...
    def start_cursor(self, epoch: int) -> str: ...
    def iter(
        self, split_name: str, cursor: str | None = None, forever: bool = False, prefetch: int = 4
    ) -> _BatchIter: ...
    def rebalance(self, cursors: list[str], world_size: int, split_name: str) -> list[str]: ...
    def export(
        self,
        out: str | None = None,
        resume: bool = False,
        allow_new_data: bool = False,
        progress_bar: bool = False,
    ) -> dict[str, Any]: ...

@final
class _BatchIter:
    def __iter__(self) -> _BatchIter: ...
    def __next__(self) -> tuple[object, object, str]: ...
    def stream(self) -> object: ...

def cli_main(argv: list[str]) -> int:
    """Runs the ``pretext`` command with ``argv`` (program name first); returns its exit code."""

def _before_fork() -> None:
    """Stops this process's pipeline threads before ``fork`` (registered by ``pretext``)."""
