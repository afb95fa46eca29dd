"""The ``sa-engine`` command: one entry point, one sub-command per job.

``run`` (the default), ``train`` and ``export-onnx`` are Hydra apps (overrides like
``model=tiny stages.rounds=2``); ``annotate`` takes ``key=value`` arguments; ``audit``,
``validate`` and ``export-coco`` take ordinary flags and paths.
Each sub-command's module exposes ``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import importlib
import sys

from engine.progress import progress_enabled

# sub-command -> module holding ``main(argv) -> int`` (imported lazily: start-up stays fast)
COMMANDS = {
    "run": "stages.run_cmd",
    "validate": "engine.dataset.validate",
    "audit": "engine.audit.cli",
    "train": "stages.train_cmd",
    "annotate": "stages.annotate_cmd",
    "export-coco": "stages.export_coco_cmd",
    "export-onnx": "stages.export_onnx_cmd",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("commands: " + ", ".join(COMMANDS))
        return 0
    command = "run"
    if argv and argv[0] in COMMANDS:
        command = argv.pop(0)
    elif argv and not ("=" in argv[0] or argv[0].startswith("-")):
        print(f"sa-engine: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        return 2
    try:
        progress_enabled()  # a bad SA_ENGINE_PROGRESS fails here, before any work starts
    except ValueError as err:
        print(f"sa-engine: {err}")
        return 2
    module = importlib.import_module(COMMANDS[command])
    return int(module.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
