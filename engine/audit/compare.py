"""``sa-engine audit --compare A B``: two audits side by side, with deltas (B − A).

A and B are audit.json files, audit directories or run directories (``<run>/audit/audit.json``).
The rows are the audit's flat numbers (``engine.audit.run.summary_metrics``: the names MLflow
gets), in three tables: dataset and reference numbers, per stage/round, per level / size.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from engine.audit.report import STYLE
from engine.audit.run import summary_metrics

SECTIONS = (
    ("summary", "dataset and reference"),
    ("group", "by stage and round"),
    ("breakdown", "recall by level and size"),
)


def load_summary(path: str | Path) -> dict:
    """audit.json from a file, an audit directory or a run directory; ``ValueError`` if none."""
    path = Path(path)
    for candidate in (path, path / "audit.json", path / "audit" / "audit.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except ValueError as exc:
                raise ValueError(f"{candidate} is not valid JSON: {exc}") from exc
    raise ValueError(f"no audit.json at {path} (give the file, its directory or a run directory)")


def _section(name: str) -> str:
    if name.startswith("group/"):
        return "group"
    if name.startswith(("recall_by_level/", "recall_by_size/")):
        return "breakdown"
    return "summary"


def compare_summaries(a: dict, b: dict) -> dict:
    """``{section: [{"name", "a", "b", "delta"}, ...]}`` over the union of both audits' numbers.

    A number missing on one side is ``None`` there, and its delta is ``None``.
    """
    ma, mb = summary_metrics(a), summary_metrics(b)
    out: dict[str, list[dict]] = {key: [] for key, _ in SECTIONS}
    for name in sorted(set(ma) | set(mb), key=lambda n: (_section(n), n)):
        va, vb = ma.get(name), mb.get(name)
        delta = vb - va if va is not None and vb is not None else None
        out[_section(name)].append({"name": name, "a": va, "b": vb, "delta": delta})
    return out


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _delta(value: float | None) -> str:
    return "—" if value is None else f"{value:+.4g}"


def format_text(table: dict, label_a: str = "A", label_b: str = "B") -> str:
    """Plain-text tables for the terminal."""
    lines = []
    for key, title in SECTIONS:
        rows = table[key]
        if not rows:
            continue
        width = max(len(r["name"]) for r in rows)
        lines.append(f"== {title} ==")
        lines.append(f"{'':{width}}  {label_a:>12}  {label_b:>12}  {'delta':>12}")
        for r in rows:
            lines.append(
                f"{r['name']:{width}}  {_fmt(r['a']):>12}  {_fmt(r['b']):>12}  "
                f"{_delta(r['delta']):>12}"
            )
        lines.append("")
    return "\n".join(lines)


def render_html(table: dict, label_a: str, label_b: str) -> str:
    """A self-contained page with the three tables."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>sa-engine audit comparison</title><style>{STYLE}</style></head><body>",
        "<h1>Audit comparison</h1>",
        f"<p class='note'>A = {html.escape(label_a)}<br>B = {html.escape(label_b)}</p>",
    ]
    for key, title in SECTIONS:
        if not table[key]:
            continue
        parts.append(f"<h2>{html.escape(title)}</h2><table>")
        parts.append("<tr><th></th><th>A</th><th>B</th><th>B − A</th></tr>")
        for r in table[key]:
            parts.append(
                f"<tr><td>{html.escape(r['name'])}</td><td>{_fmt(r['a'])}</td>"
                f"<td>{_fmt(r['b'])}</td><td>{_delta(r['delta'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def compare(a: str | Path, b: str | Path, out_dir: str | Path | None = None) -> dict:
    """Compare two audits; with ``out_dir``, write compare.json and compare.html there."""
    table = compare_summaries(load_summary(a), load_summary(b))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        document = {"a": str(a), "b": str(b), "tables": table}
        (out / "compare.json").write_text(json.dumps(document, indent=1) + "\n")
        (out / "compare.html").write_text(render_html(table, str(a), str(b)), encoding="utf-8")
    return table
