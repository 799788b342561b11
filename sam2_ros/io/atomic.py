"""Outputs that appear whole or not at all (``masks.npz``, the output bag)."""

from __future__ import annotations

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
