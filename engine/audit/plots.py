"""The audit's plots, drawn from the audit.json summary with matplotlib's Agg backend.

``make_figures(summary)`` returns ``{name: Figure}``; names are stable file stems (the HTML
embeds ``<name>.png``, MLflow gets ``plots/<name>.png``). Callers close the figures
(``close_figures``) once saved.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

SIZE = (5.2, 3.4)
DPI = 100
COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3")


def _subplots(figsize: tuple[float, float] = SIZE, ncols: int = 1):
    """A figure with fixed margins (``tight_layout`` costs more than the rest of a plot)."""
    fig, ax = plt.subplots(1, ncols, figsize=figsize, dpi=DPI)
    fig.subplots_adjust(left=0.13, right=0.96, bottom=0.15, top=0.88, wspace=0.3)
    return fig, ax


def _hist_figure(hist: dict, title: str, xlabel: str, log_x: bool = False) -> Figure:
    fig, ax = _subplots()
    edges = np.asarray(hist["edges"])
    counts = np.asarray(hist["counts"], dtype=float)
    total = counts.sum() + hist["underflow"] + hist["overflow"]
    share = counts / total if total else counts
    ax.stairs(share, edges, fill=True, color=COLOURS[0])
    if log_x:
        ax.set_xscale("log")
    else:
        _zoom_x(ax, hist)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share")
    notes = []
    if hist.get("mean") is not None:
        notes.append(f"mean {hist['mean']:.3g}")
    if hist["overflow"]:
        notes.append(f"{hist['overflow']} above {edges[-1]:g}")
    if notes:
        ax.text(
            0.98, 0.95, ", ".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=8
        )
    return fig


def _zoom_x(ax, hist: dict) -> None:
    """Show the bins up to the largest value (a 0–400 axis for 5 masks per image is empty)."""
    edges = hist["edges"]
    if hist.get("max") is None or hist["overflow"]:
        return
    i = int(np.searchsorted(edges, hist["max"], side="right"))
    hi = edges[min(i, len(edges) - 1)]
    if edges[0] < hi < edges[-1]:
        ax.set_xlim(edges[0], hi + 0.05 * (hi - edges[0]))


def _centre_figure(heatmap: dict) -> Figure:
    fig, ax = _subplots((4.4, 3.6))
    counts = np.asarray(heatmap["counts"], dtype=float)
    total = counts.sum()
    image = ax.imshow(counts / total if total else counts, extent=(0, 1, 1, 0), cmap="magma")
    fig.colorbar(image, ax=ax, label="share of masks")
    ax.set_title("mask centres (normalised image coordinates)")
    ax.set_xlabel("x / width")
    ax.set_ylabel("y / height")
    return fig


def _image_size_figure(hists: dict) -> Figure:
    fig, axes = _subplots((7.0, 3.0), ncols=2)
    for ax, name in zip(axes, ("image_width", "image_height")):
        h = hists[name]
        edges = np.asarray(h["edges"])
        ax.stairs(h["counts"], edges, fill=True, color=COLOURS[1])
        _zoom_x(ax, h)
        ax.set_xlabel(name.replace("image_", "") + " (px)")
        ax.set_ylabel("images")
    fig.suptitle("image sizes")
    return fig


def _curve_from_hist(hist: dict, denominator: int) -> tuple[np.ndarray, np.ndarray]:
    """Share of matched pairs with IoU ≥ t per bin edge t, over ``denominator``."""
    counts = np.asarray(hist["counts"], dtype=float)
    at_least = np.cumsum(counts[::-1])[::-1] + hist["overflow"]  # IoU ≥ left edge of each bin
    return np.asarray(hist["edges"][:-1]), at_least / max(denominator, 1)


def _recall_figure(ref: dict) -> Figure:
    fig, ax = _subplots()
    hist = ref["matched_iou_histogram"]
    for name, den, colour in (
        ("recall", ref["references"], COLOURS[0]),
        ("precision", ref["masks"], COLOURS[1]),
        ("matched pairs", ref["matched"], COLOURS[2]),
    ):
        t, share = _curve_from_hist(hist, den)
        ax.plot(t, share, label=name, color=colour)
    for t in (0.5, 0.75, 0.9):
        ax.axvline(t, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("IoU threshold t")
    ax.set_ylabel("share with IoU ≥ t")
    ax.set_ylim(0, 1.02)
    ax.set_title("recall / precision / matched pairs vs IoU threshold")
    ax.legend(fontsize=8)
    return fig


def _bars_figure(table: dict[str, dict], title: str, value_key: str = "recall") -> Figure:
    """Grouped bars: one group per row of ``table``, one bar per IoU threshold."""
    fig, ax = _subplots()
    names = list(table)
    thresholds = ("0.50", "0.75", "0.90")
    width = 0.8 / len(thresholds)
    x = np.arange(len(names))
    for i, t in enumerate(thresholds):
        values = [table[n][value_key][t] or 0.0 for n in names]
        ax.bar(x + i * width, values, width=width, label=f"IoU ≥ {t}", color=COLOURS[i])
    ax.set_xticks(x + width, names, rotation=20 if len(names) > 4 else 0, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(value_key.replace("_", " "))
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def _reliability_figure(calibration: dict) -> Figure:
    fig, ax = _subplots((4.4, 4.0))
    bins = [b for b in calibration["bins"] if b["masks"]]
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect calibration")
    if bins:
        ax.plot(
            [b["mean_predicted_iou"] for b in bins],
            [b["mean_actual_iou"] for b in bins],
            marker="o",
            color=COLOURS[0],
            label="masks",
        )
    ece = calibration["ece"]
    ax.set_title("predicted-IoU reliability" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    ax.set_xlabel("mean predicted IoU (bin)")
    ax.set_ylabel("mean actual IoU (best reference)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def make_figures(summary: dict) -> dict[str, Figure]:
    """Every plot of the report, by stable name (reference plots only with a reference)."""
    data = summary["dataset"]
    hists = data["histograms"]
    figures = {
        "masks_per_image": _hist_figure(hists["masks_per_image"], "masks per image", "masks"),
        "relative_area": _hist_figure(
            hists["relative_area"], "relative mask area", "mask area / image area", log_x=True
        ),
        "centre_heatmap": _centre_figure(data["centre_heatmap"]),
        "concavity": _hist_figure(hists["concavity"], "mask concavity", "1 − area / hull area"),
        "overlap": _hist_figure(
            hists["nn_iou"], "overlap: largest IoU with another mask of the image", "IoU"
        ),
        "coverage": _hist_figure(
            hists["coverage"], "share of image pixels covered", "covered share"
        ),
        "predicted_iou": _hist_figure(hists["predicted_iou"], "predicted IoU", "predicted_iou"),
        "stability_score": _hist_figure(
            hists["stability_score"], "stability score", "stability_score"
        ),
        "image_size": _image_size_figure(hists),
    }
    ref = summary.get("reference")
    if ref:
        figures["matched_iou"] = _hist_figure(
            ref["matched_iou_histogram"], "IoU of matched pairs", "IoU"
        )
        figures["recall_curve"] = _recall_figure(ref)
        if ref["recall_by_level"]:
            figures["recall_by_level"] = _bars_figure(
                ref["recall_by_level"], "recall by granularity level"
            )
        figures["recall_by_size"] = _bars_figure(
            ref["recall_by_size"], "recall by object size (COCO buckets)"
        )
        figures["calibration"] = _reliability_figure(ref["calibration"])
        if ref["by_group"]:
            figures["iou_above_by_group"] = _bars_figure(
                ref["by_group"], "matched pairs above IoU, by stage/round", "iou_above"
            )
            figures["recall_by_group"] = _bars_figure(
                ref["by_group"], "recall by stage/round", "recall"
            )
    return figures


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def close_figures(figures: dict[str, Figure]) -> None:
    for fig in figures.values():
        plt.close(fig)
