"""``sa-engine export-onnx``: write a model's prompt encoder + mask decoder as an ONNX file.

    sa-engine export-onnx                                        (the shipped model)
    sa-engine export-onnx model=vit_h model.checkpoint=sam_vit_h_4b8939.pth out=vit_h.onnx
    sa-engine export-onnx model=tiny out=decoder.onnx opset=17 return_single_mask=true

The file decodes prompts on a stored image embedding in onnxruntime (Python, C++, or the
browser with onnxruntime-web); inputs and outputs are the official SAM ONNX model's
(docs/onnx.md). After writing, the file is run in onnxruntime against the PyTorch model
(``verify=false`` skips it). Exit status: 0 written (and verified), 1 export or verification
failed, 2 bad config.
"""

from __future__ import annotations

import sys

USAGE = """usage: sa-engine export-onnx [--cfg] [KEY=VALUE ...]

Hydra overrides of configs/export_onnx.yaml: model=NAME model.checkpoint=PATH out=FILE.onnx
opset=14..20 return_single_mask=true|false verify=true|false tolerance=1e-3. --cfg prints
the resolved config and exits. Model options:
"""


def main(argv: list[str]) -> int:
    """Entry point of ``sa-engine export-onnx`` (called by ``stages.cli``)."""
    from stages import hydra_app

    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + hydra_app.groups_help())
        return 0
    from engine.model import PRESETS
    from engine.model.onnx_export import check_opset
    from engine.weights import resolve_checkpoint

    show_only = "--cfg" in argv
    try:
        job, yaml_text = hydra_app.load_export_onnx([a for a in argv if a != "--cfg"])
        check_opset(job.opset)
        if job.model.preset not in PRESETS:
            raise ValueError(
                f"model.preset must be one of {sorted(PRESETS)}, got {job.model.preset!r}"
            )
        if not job.out.endswith(".onnx"):
            raise ValueError(f"out must name a .onnx file, got {job.out!r}")
        if not job.tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {job.tolerance}")
        checkpoint = resolve_checkpoint(job.model.checkpoint) or None
    except (hydra_app.ConfigError, ValueError, TypeError) as exc:
        print(f"sa-engine export-onnx: config error: {exc}", file=sys.stderr)
        return 2
    if show_only:
        print(yaml_text)
        return 0
    return export(
        job.model.preset,
        checkpoint,
        job.out,
        job.opset,
        job.return_single_mask,
        job.verify,
        job.tolerance,
    )


def export(
    preset: str,
    checkpoint: str | None,
    out: str,
    opset: int,
    return_single_mask: bool,
    verify: bool,
    tolerance: float,
) -> int:
    """Build the model, write ``out``, verify it; the exit status."""
    from engine.model import build_sam
    from engine.model.onnx_export import export_decoder_onnx, verify_decoder_onnx

    try:
        model = build_sam(preset, checkpoint)
        path = export_decoder_onnx(model, out, opset=opset, return_single_mask=return_single_mask)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"sa-engine export-onnx: export failed: {exc}", file=sys.stderr)
        return 1
    source = checkpoint or "random init"
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {preset} from {source}, opset {opset}"
    )
    if not verify:
        return 0
    try:
        errors = verify_decoder_onnx(model, path, return_single_mask=return_single_mask)
    except ImportError as exc:
        print(f"sa-engine export-onnx: {exc} (or pass verify=false)", file=sys.stderr)
        return 1
    report = ", ".join(f"{name} {value:.2e}" for name, value in errors.items())
    if max(errors.values()) > tolerance:
        print(
            f"sa-engine export-onnx: onnxruntime differs from PyTorch beyond {tolerance}: {report}",
            file=sys.stderr,
        )
        return 1
    print(f"verified in onnxruntime, largest differences: {report}")
    return 0
