"""The Hydra layer: the only module that imports ``hydra``.

Configs live in ``configs/`` at the repository root, found by absolute path from this file
(never by search-path name). The dataclasses of ``stages.config`` are registered in Hydra's
ConfigStore as the schema of each primary config, so a wrong type or an unknown key fails
composition with a message naming the key — before any work starts. Composition uses
Hydra's compose API with ``version_base="1.3"``: no working-directory change and no
``outputs/`` folders; the job writes its resolved config into its own run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stages.config import ExportOnnxConfig, TrainJobConfig
from stages.run_config import RunConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
VERSION_BASE = "1.3"


class ConfigError(ValueError):
    """A config that does not compose or validate; the message says which key and why."""


def register_configs() -> None:
    """Store the schemas (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="train_job_schema", node=TrainJobConfig)
    store.store(name="run_schema", node=RunConfig)
    store.store(name="export_onnx_schema", node=ExportOnnxConfig)


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with command-line ``overrides``; resolved."""
    register_configs()
    if not CONFIG_DIR.is_dir():
        raise ConfigError(f"config directory not found: {CONFIG_DIR}")
    try:
        with initialize_config_dir(version_base=VERSION_BASE, config_dir=str(CONFIG_DIR)):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_message(exc)) from exc
    return cfg


def to_dataclass(cfg: DictConfig) -> Any:
    """The typed dataclass tree of a composed config; ConfigError on a missing value."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(_message(exc)) from exc


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def load_train_job(overrides: list[str]) -> tuple[TrainJobConfig, dict[str, Any], str]:
    """``sa-engine train`` overrides → (typed config, resolved dict, resolved YAML)."""
    cfg = compose_config("train_job", overrides)
    job = to_dataclass(cfg)
    return job, to_container(cfg), to_yaml(cfg)


def load_export_onnx(overrides: list[str]) -> tuple[ExportOnnxConfig, str]:
    """``sa-engine export-onnx`` overrides → (typed config, resolved YAML)."""
    cfg = compose_config("export_onnx", overrides)
    return to_dataclass(cfg), to_yaml(cfg)


def groups_help() -> str:
    """The config groups and their options, for ``--help``."""
    lines = []
    for group in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir()):
        options = ", ".join(sorted(f.stem for f in group.glob("*.yaml")))
        lines.append(f"  {group.name}: {options}")
    return "\n".join(lines)


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text = f"{text}\n{str(cause).strip()}"
    return text


def run_app() -> int:
    """``sa-engine run``: a ``hydra.main`` app (so ``-m`` sweeps, ``--cfg``, tab completion
    work); Hydra reads ``sys.argv``. Each job runs in its own run directory: ``run_dir`` for
    a single run, ``<runs_root>/multirun/<name>/<job number>`` in a sweep."""
    register_configs()
    status: list[int] = []

    @hydra.main(config_path=str(CONFIG_DIR), config_name="run", version_base=VERSION_BASE)
    def _job(cfg: DictConfig) -> int:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from stages.run_cmd import execute

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            run_dir = Path(hydra_cfg.runtime.output_dir)
        else:
            run_dir = Path(cfg.run_dir)
        config = to_dataclass(cfg)
        code = execute(config, to_container(cfg), to_yaml(cfg), run_dir)
        status.append(code)
        return code

    _job()
    return max(status, default=0)
