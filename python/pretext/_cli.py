"""The ``pretext`` console script: the cargo binary's command line, run in-process."""

from __future__ import annotations

import signal
import sys

from pretext import _pretext


def main() -> None:
    """Runs ``pretext`` with this process's arguments and exits with its exit code.

    SIGINT and SIGTERM are handed to the command itself (a graceful stop at the next safe point,
    exit code 130 or 143, a second signal stops at once), exactly as with the cargo binary.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(_pretext.cli_main(["pretext", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
