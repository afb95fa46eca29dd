"""``sa-engine annotate``: serve a round's queue to people in a browser (the web annotation tool).

    sa-engine annotate run_dir=PATH [prefix=stage1-r00] [host=127.0.0.1] [port=8765]
                       [token=...] [claim_seconds=900] [embed_cache=8] [demo=N]

Without ``prefix`` the newest queue that still needs images is served. The server binds
127.0.0.1 unless told otherwise; any other address needs an access token (``token=`` or the
``SA_ENGINE_ANNOTATE_TOKEN`` environment variable) and it refuses to start without one.
``demo=N`` first writes a queue over N synthetic scenes (to try the tool without a pipeline).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys

TOKEN_ENV = "SA_ENGINE_ANNOTATE_TOKEN"
DEFAULTS = {
    "run_dir": None,
    "prefix": None,
    "host": "127.0.0.1",
    "port": "8765",
    "token": None,
    "claim_seconds": "900",
    "embed_cache": "8",
    "demo": "0",
}


def parse_args(argv: list[str]) -> dict[str, str | None]:
    """``key=value`` arguments over ``DEFAULTS``; ``ValueError`` names an unknown or bad one."""
    args = dict(DEFAULTS)
    for arg in argv:
        name, sep, value = arg.partition("=")
        name = name.lstrip("-").replace("-", "_")
        if not sep or name not in DEFAULTS:
            raise ValueError(
                f"unknown argument {arg!r}; expected key=value with key in {list(DEFAULTS)}"
            )
        args[name] = value
    if not args["run_dir"]:
        raise ValueError("run_dir=PATH is required")
    return args


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _int(args: dict, name: str, low: int, high: int) -> int:
    try:
        value = int(args[name])
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {args[name]!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        args = parse_args(argv)
        port = _int(args, "port", 1, 65535)
        embed_cache = _int(args, "embed_cache", 1, 1024)
        demo = _int(args, "demo", 0, 10_000)
        claim_seconds = float(args["claim_seconds"])
    except ValueError as exc:
        print(f"sa-engine annotate: {exc}", file=sys.stderr)
        return 2
    host = args["host"]
    token = args["token"] or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host) and token is None:
        print(
            f"sa-engine annotate: refusing to bind {host} without an access token; "
            f"pass token=... or set {TOKEN_ENV} (e.g. token={secrets.token_urlsafe(24)})",
            file=sys.stderr,
        )
        return 2

    import uvicorn

    from engine.webtool import create_app
    from engine.webtool.demo_queue import write_demo_queue
    from engine.webtool.security import LOOPBACK_HOSTS

    if demo:
        write_demo_queue(args["run_dir"], count=demo, prefix=args["prefix"] or "stage1-r00")
    try:
        app = create_app(
            args["run_dir"],
            args["prefix"],
            token=token,
            allowed_hosts=LOOPBACK_HOSTS if is_loopback(host) else None,
            embed_cache=embed_cache,
            claim_seconds=claim_seconds,
        )
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"sa-engine annotate: {exc}", file=sys.stderr)
        return 2
    service = app.state.service
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"annotating {service.queue.prefix} ({len(service.queue.entries)} images) at {url}")
    print(f"status page: http://{shown}:{port}/status", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)
    return 0
