"""The quality audit: how good a dataset is, in numbers (audit.json), pictures (audit.html)
and MLflow. ``run_audit`` is the entry point; ``sa-engine audit`` its command line.

See ``docs/audit.md`` for every audit.json key. ``run_audit`` is imported lazily so that
worker processes, which only need ``engine.audit.auditor``, do not import matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_audit"]


def __getattr__(name: str) -> Any:
    if name == "run_audit":
        from engine.audit.run import run_audit

        return run_audit
    raise AttributeError(f"module 'engine.audit' has no attribute {name!r}")
