"""Progress reporting for long imports, exports and embeddings: tqdm on the command line, nothing elsewhere."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

_T = TypeVar("_T")


class Progress(Protocol):
    """Wraps an iterable to show how far it got."""

    def __call__(self, iterable: Iterable[_T], *, desc: str, total: int) -> Iterable[_T]: ...


def no_progress(iterable: Iterable[_T], *, desc: str, total: int) -> Iterable[_T]:
    return iterable


def tqdm_progress(iterable: Iterable[_T], *, desc: str, total: int) -> Iterable[_T]:
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in logs and pipes.
    return tqdm(iterable, desc=desc, total=total, unit="row", disable=None)
