"""Outputs that appear whole or not at all (``masks.npz``, the output bag)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType


class AtomicOutput:
    """An output written in steps: as a context manager, ``close()`` finishes it when the block succeeds
    and ``abort()`` drops it when the block raises, so a failed run leaves nothing half-written."""

    def close(self) -> object:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``path`` whole or not at all: a sibling ``.tmp`` file moved into place (removed on failure)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
