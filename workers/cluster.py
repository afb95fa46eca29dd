"""Start (or join) the Ray cluster the engine runs on.

``local_cluster(num_cpus=2)`` starts an embedded single-node cluster bound to 127.0.0.1 and
shuts it down on exit; ``local_cluster(address="ray://…" or "10.0.0.5:6379")`` connects to
an existing one and leaves it running. Worker output is not forwarded to the driver
(``log_to_driver=False``): logs stay in Ray's session directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

import ray

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when nothing accepts TCP connections at a ``host:port`` / ``ray://host:port``.

    ``ray.init(address=...)`` retries an unreachable GCS for many minutes; this probe turns that
    into a ``ConnectionError`` naming the address within ``timeout_s``. Addresses without a
    port (``"auto"``) are left to Ray.
    """
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConnectionError(
            f"no Ray cluster reachable at {address!r} (cluster.address): {exc}"
        ) from None


def start_cluster(
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    log_to_driver: bool = False,
) -> bool:
    """Connect to ``address`` or start a loopback-only local cluster.

    Returns True when this call started Ray (the caller should shut it down), False when
    Ray was already initialised or an existing cluster was joined.
    """
    if ray.is_initialized():
        return False
    if address:
        check_reachable(address)
        ray.init(address=address, log_to_driver=log_to_driver, logging_level=logging.WARNING)
        return False
    if num_cpus is not None and num_cpus < 1:
        raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
    # keeps every socket of the embedded cluster on 127.0.0.1 (STACK.md); set before init
    os.environ.setdefault(LOOPBACK_ENV, "0")
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=log_to_driver,
        logging_level=logging.WARNING,
        configure_logging=True,
    )
    return True


@contextlib.contextmanager
def local_cluster(
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    log_to_driver: bool = False,
) -> Iterator[None]:
    """``with local_cluster(num_cpus=2): ...`` — shuts down only what it started."""
    started = start_cluster(address, num_cpus, num_gpus, log_to_driver)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
