"""The ``r3d eval-motion --html`` page: the metric table (mean ± 95 % interval over replications) and a
few animated samples per caption beside the caption's reference motion."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r3d.core.io import atomic_write_text
from r3d.motion.artifacts import Motion
from r3d.report.blocks import esc, motion_cell, page, table

# (row title, caption, motions) of the samples section
SampleRow = tuple[str, str, Sequence[Motion]]


def _interval(v: Sequence[float] | None, signed: bool = False) -> str:
    if v is None:
        return ""
    return f"{v[0]:+.4f} ± {v[1]:.4f}" if signed else f"{v[0]:.4f} ± {v[1]:.4f}"


def metric_table(report: dict[str, Any]) -> str:
    """The eval-motion metrics as an HTML table (same columns as the terminal table)."""
    paired = report.get("paired")
    header = ["metric", "ground truth"]
    header += (
        ["base model", "with adapter", "adapter − base (paired)"] if paired is not None else ["generated"]
    )
    rows = []
    for metric, values in report["summary"].items():
        row = [metric, _interval(values.get("ground truth") if metric != "FID" else None)]
        if paired is not None:
            row.append(_interval(report["baseline"]["summary"][metric].get("generated")))
        row.append(_interval(values.get("generated")))
        if paired is not None:
            row.append(_interval(paired.get(metric), signed=True))
        rows.append(row)
    return table(header, rows)


def write_motion_report(report: dict[str, Any], rows: Sequence[SampleRow], path: Path) -> Path:
    """Write the page to ``path`` atomically."""
    s = report["settings"]
    subtitle = (
        f"{s['source']} · evaluator {s['evaluator']} · reference {s['reference']} · "
        f"{s['replications']} replication(s) × {s['num_samples']} samples"
    )
    parts = [
        "<h2>Metrics</h2><p>mean ± 95 % interval over replications (1.96·std/√n).</p>",
        metric_table(report),
    ]
    parts.append("<h2>Samples</h2><p>Animated skeletons; drag one sideways to turn it.</p>")
    captions = list(dict.fromkeys(text for _, text, _ in rows))
    for text in captions:
        cells = [
            motion_cell(m.joints(), f"{title} #{j}", fps=m.fps)
            for title, t, motions in rows
            if t == text
            for j, m in enumerate(motions)
        ]
        parts.append(f'<h3>{esc(text)}</h3><div class="grid">{"".join(cells)}</div>')
    return atomic_write_text(path, page("r3d eval-motion", "".join(parts), subtitle))
