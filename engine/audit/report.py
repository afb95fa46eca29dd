"""audit.json and audit.html: the numbers, and one self-contained page to read them.

The HTML is a single file with inline CSS, every plot and gallery image embedded as a
``data:image/png;base64`` URI, no script and no external resource, so it opens offline.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from engine.audit.gallery import GalleryImage

# The paper's figures for SA-1B (FACTS.md): shown beside ours in the header table.
PAPER = {
    "images": "11M",
    "masks": "1.1B",
    "masks_per_image": "~100",
    "iou_above_0.90": "94%",
    "iou_above_0.75": "97%",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; }
figcaption { font-size: 0.8em; color: #555; max-width: 384px; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
"""


def write_json(summary: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, sort_keys=False, allow_nan=False) + "\n")
    return path


def _num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def summary_table(summary: dict) -> str:
    """The header table: this dataset beside SA-1B's published numbers."""
    d = summary["dataset"]
    hists = d["histograms"]
    rows = [
        ["images", _num(d["images"]), PAPER["images"]],
        ["masks", _num(d["masks"]), PAPER["masks"]],
        ["masks per image", _num(d["masks_per_image"]), PAPER["masks_per_image"]],
        ["median relative mask area", _num(hists["relative_area"]["p50"]), ""],
        ["mean concavity", _num(hists["concavity"]["mean"]), ""],
        ["mean share of pixels covered", _pct(hists["coverage"]["mean"]), ""],
        ["mask pairs with IoU > 0.5", _pct(d["overlap"]["pairs_iou_above"]["0.50"]), ""],
        [
            "masks with a near-duplicate (IoU > 0.9)",
            _pct(d["overlap"]["masks_with_iou_above"]["0.90"]),
            "",
        ],
        ["mean predicted IoU", _num(hists["predicted_iou"]["mean"]), ""],
        ["mean stability score", _num(hists["stability_score"]["mean"]), ""],
    ]
    privacy = summary.get("privacy")
    if privacy:
        rows.append(["faces and licence plates blurred", _privacy_cell(privacy), "blurred"])
    ref = summary.get("reference")
    if ref:
        rows += [
            [
                "matched pairs with IoU ≥ 0.90",
                _pct(ref["iou_above"]["0.90"]),
                PAPER["iou_above_0.90"],
            ],
            [
                "matched pairs with IoU ≥ 0.75",
                _pct(ref["iou_above"]["0.75"]),
                PAPER["iou_above_0.75"],
            ],
            ["recall at IoU ≥ 0.75", _pct(ref["recall"]["0.75"]), ""],
            ["recall at IoU ≥ 0.90", _pct(ref["recall"]["0.90"]), ""],
            ["precision at IoU ≥ 0.50 (lower bound)", _pct(ref["precision"]["0.50"]), ""],
            ["predicted-IoU calibration error (ECE)", _num(ref["calibration"]["ece"]), ""],
        ]
    return _table(["", "this dataset", "SA-1B (paper)"], rows)


def _privacy_cell(privacy: dict) -> str:
    """``"3 boxes in 2 of 10 images"``, plus the images no privacy filter ran on, if any."""
    text = (
        f"{privacy['blurred_boxes']} boxes in {privacy['images_blurred']} of "
        f"{privacy['images_filtered']} filtered images"
    )
    if privacy["images_not_filtered"]:
        text += f"; {privacy['images_not_filtered']} images not filtered"
    return text


def _levels_cell(levels: dict | None) -> str:
    """``"12 / 5 / 3"`` masks by granularity, or ``"—"`` when the index gives no level."""
    if not levels or not any(levels.values()):
        return "—"
    return " / ".join(str(levels[name]) for name in ("whole", "part", "subpart"))


def groups_table(summary: dict) -> str:
    """Per stage/round, like the paper's data-engine table (plus reference columns)."""
    ref_groups = (summary.get("reference") or {}).get("by_group", {})
    header = [
        "stage / round",
        "images",
        "masks",
        "masks/image",
        "clicks/mask",
        "seconds/mask",
        "hand-fixed",
        "mean predicted IoU",
        "whole / part / subpart",
        "with parent",
    ]
    if ref_groups:
        header += ["pairs IoU ≥ 0.90", "recall @0.75", "recall @0.90", "ECE"]
    rows = []
    for name, g in summary["groups"].items():
        row = [
            name,
            _num(g["images"]),
            _num(g["masks"]),
            _num(g["masks_per_image"]),
            _num(g["clicks_per_mask"]),
            _num(g["seconds_per_mask"]),
            _pct(g["hand_fixed_share"]),
            _num(g["mean_predicted_iou"]),
            _levels_cell(g.get("granularity")),
            _num(g.get("with_parent")),
        ]
        if ref_groups:
            r = ref_groups.get(name)
            row += (
                [
                    _pct(r["iou_above"]["0.90"]),
                    _pct(r["recall"]["0.75"]),
                    _pct(r["recall"]["0.90"]),
                    _num(r["calibration"]["ece"]),
                ]
                if r
                else ["—"] * 4
            )
        rows.append(row)
    return _table(header, rows)


def _recall_rows(table: dict) -> list[list[str]]:
    return [
        [name, _num(v["references"])] + [_pct(v["recall"][t]) for t in ("0.50", "0.75", "0.90")]
        for name, v in table.items()
    ]


def reference_section(summary: dict) -> str:
    ref = summary.get("reference")
    if not ref:
        return "<p class='note'>No reference given: reference-free statistics only.</p>"
    info = summary["reference_info"]
    t3 = ("0.50", "0.75", "0.90")
    parts = [
        f"<p class='note'>Reference: {html.escape(str(info['source']))}; "
        f"{info['images_with_reference']:,} of {summary['dataset']['images']:,} images have one. "
        "Generated masks are matched one-to-one to reference masks per image (Hungarian "
        "assignment maximising total IoU). A COCO-style reference labels only whole "
        "'thing' objects, so precision against it is a <b>lower bound</b>: an unmatched "
        "generated mask may be a correct part, background region or unlabelled object.</p>",
        _table(
            ["", "IoU ≥ 0.50", "IoU ≥ 0.75", "IoU ≥ 0.90"],
            [
                ["matched pairs above"] + [_pct(ref["iou_above"][t]) for t in t3],
                ["recall (reference objects)"] + [_pct(ref["recall"][t]) for t in t3],
                ["precision (generated masks)"] + [_pct(ref["precision"][t]) for t in t3],
            ],
        ),
        "<h3>Recall by granularity level</h3>",
        _table(
            ["level", "references", "@0.50", "@0.75", "@0.90"], _recall_rows(ref["recall_by_level"])
        ),
        "<h3>Recall by object size (COCO: small &lt; 32², medium &lt; 96² px)</h3>",
        _table(
            ["size", "references", "@0.50", "@0.75", "@0.90"], _recall_rows(ref["recall_by_size"])
        ),
        "<h3>Matched pairs by mask source</h3>",
        _table(
            ["source", "masks", "matched", "mean IoU", "pairs ≥ 0.90", "precision @0.90"],
            [
                [
                    name,
                    _num(v["masks"]),
                    _num(v["matched"]),
                    _num(v["mean_matched_iou"]),
                    _pct(v["iou_above"]["0.90"]),
                    _pct(v["precision"]["0.90"]),
                ]
                for name, v in ref["by_source"].items()
            ],
        ),
    ]
    return "\n".join(parts)


def gallery_section(images: list[GalleryImage], score_name: str) -> str:
    if not images:
        return "<p class='note'>No gallery (no image bytes were read).</p>"
    parts = []
    for kind in ("best", "worst", "random"):
        chosen = [g for g in images if g.kind == kind]
        if not chosen:
            continue
        parts.append(f"<h3>{kind}</h3><div>")
        for g in chosen:
            refs = "" if g.references is None else f", {g.references} references"
            caption = f"{g.key} ({g.masks} masks{refs}); {score_name} {_num(g.score)}"
            parts.append(
                f"<figure>{_img(g.png, g.key)}<figcaption>{html.escape(caption)}</figcaption>"
                "</figure>"
            )
        parts.append("</div>")
    return "\n".join(parts)


def render_html(summary: dict, plots: dict[str, bytes], gallery: list[GalleryImage]) -> str:
    """The whole audit page as one string (see module doc)."""
    read = summary["read"]
    score_name = "mean reference IoU" if summary.get("reference") else "mean predicted IoU"
    figures = "\n".join(
        f"<figure>{_img(png, name)}<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in plots.items()
    )
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in read["problems"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sa-engine audit</title>
<style>{STYLE}</style></head><body>
<h1>Dataset audit</h1>
<p class="note">{_num(read["samples"])} images read from {len(summary["inputs"]["shards"])}
shard(s); {_num(read["skipped"])} skipped, {_num(read["failed_shards"])} shard(s) failed.</p>
<h2>Summary</h2>
{summary_table(summary)}
<h2>By stage and round</h2>
{groups_table(summary)}
<h2>Agreement with the reference</h2>
{reference_section(summary)}
<h2>Plots</h2>
{figures}
<h2>Gallery</h2>
<p class="note">Generated masks filled in colour; reference masks outlined in white. Ranked by
{score_name}.</p>
{gallery_section(gallery, score_name)}
<h2>Read problems</h2>
<ul>{problems or "<li>none</li>"}</ul>
</body></html>
"""


def write_html(
    summary: dict, plots: dict[str, bytes], gallery: list[GalleryImage], path: str | Path
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(summary, plots, gallery), encoding="utf-8")
    return path
