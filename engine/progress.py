"""Progress bars for long work (training steps, audited shards, validated shards, round images).

``progress_bar(total, desc)`` returns a ``tqdm`` bar on stderr, or a disabled one (same
methods, prints nothing). Whether it shows is decided by, in order: the caller's ``enabled``
(True/False; None = no opinion), the ``SA_ENGINE_PROGRESS`` environment variable (``1`` on,
``0`` off), and otherwise whether stderr is a terminal — so CI logs, pipes and tests stay quiet.

Only a driver process shows bars: code that may run inside a Ray worker passes
``enabled=False`` (a worker's output is not a terminal anyone watches).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from tqdm import tqdm

ENV = "SA_ENGINE_PROGRESS"
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def progress_enabled(enabled: bool | None = None, stream: TextIO | None = None) -> bool:
    """Whether to show progress: ``enabled`` if given, else ``$SA_ENGINE_PROGRESS``, else
    whether ``stream`` (default ``sys.stderr``) is a terminal."""
    if enabled is not None:
        return bool(enabled)
    value = os.environ.get(ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    if value:
        raise ValueError(f"{ENV} must be 1 or 0 (or unset), got {os.environ[ENV]!r}")
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(
    total: int | None,
    desc: str,
    unit: str = "it",
    initial: int = 0,
    enabled: bool | None = None,
) -> tqdm:
    """A tqdm bar of ``total`` units on stderr, disabled unless ``progress_enabled(enabled)``.

    Use it as a context manager (or call ``close()``); ``update(n)``, ``set_postfix(...)``
    work on a disabled bar too and print nothing.
    """
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        file=sys.stderr,
        disable=not progress_enabled(enabled),
        dynamic_ncols=True,
        leave=True,
    )
