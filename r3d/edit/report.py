"""Per-category statistics and the JSON / Markdown / PNG reports of a bench-edit run.

Statistics over the samples whose judge produced a score: count, mean, std (population, ddof = 0),
median, min, max; plus ``failures`` (judged, but no score could be read — null, never imputed),
``edit_failures`` (the editor raised) and ``missing`` (not processed yet). The headline is the mean
of the category means (categories with at least one score), the GEdit-Bench convention; ``overall``
pools all samples. Numbers are rounded to 4 decimals so that reruns compare exactly.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r3d.core.io import atomic_write, atomic_write_json, atomic_write_text

ROUND = 4


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), ROUND)


def describe(values: Sequence[float]) -> dict[str, Any]:
    """count, mean, std (ddof 0), median, min, max of ``values`` (None when empty)."""
    if not values:
        return {"count": 0, "mean": None, "std": None, "median": None, "min": None, "max": None}
    return {
        "count": len(values),
        "mean": _r(statistics.fmean(values)),
        "std": _r(statistics.pstdev(values)),
        "median": _r(statistics.median(values)),
        "min": _r(min(values)),
        "max": _r(max(values)),
    }


def summarize(
    outcomes: Sequence[dict[str, Any]], categories: Sequence[str], metrics: Sequence[str]
) -> dict[str, Any]:
    """Aggregate per-sample outcomes ``{category, status, scores}`` (status: ok, failed, edit_failed,
    missing) into per-category and overall statistics of ``overall`` and the other ``metrics``."""

    def block(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        scored = [r for r in rows if r["status"] == "ok"]
        stats = describe([r["scores"]["overall"] for r in scored])
        stats["failures"] = sum(r["status"] == "failed" for r in rows)
        stats["edit_failures"] = sum(r["status"] == "edit_failed" for r in rows)
        stats["missing"] = sum(r["status"] == "missing" for r in rows)
        stats["samples"] = len(rows)
        extra = [m for m in metrics if m != "overall"]
        if extra:
            stats["metrics"] = {
                m: _r(statistics.fmean(v))
                if (v := [r["scores"][m] for r in scored if r["scores"].get(m) is not None])
                else None
                for m in extra
            }
        return stats

    per_category = {c: block([o for o in outcomes if o["category"] == c]) for c in categories}
    means = [s["mean"] for s in per_category.values() if s["mean"] is not None]
    return {
        "headline": _r(statistics.fmean(means)) if means else None,
        "categories": per_category,
        "overall": block(outcomes),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any]) -> str:
    """The Markdown report: setup, headline, per-category table, failures."""
    editor, judge = report["editor"], report["judge"]
    lines = [
        "# r3d bench-edit report",
        "",
        f"- data: `{report['data']['path']}` ({report['data']['selected']} samples selected)",
        f"- editor: `{editor['model']}` — {editor['num_inference_steps']} steps, true_cfg_scale {editor['true_cfg_scale']}, "
        f"negative prompt {editor['negative_prompt']!r}, seed {editor['seed']} (fingerprint `{editor['fingerprint']}`)",
        f"- judge: `{judge['model']}` via {judge['backend']} — protocol {judge['protocol']}, score {judge['score_mode']}"
        f" (fingerprint `{judge['fingerprint']}`)",
        "",
        f"**Headline (mean of category means, 0–10): {_fmt(report['headline'])}**",
        "",
        "| category | samples | scored | judge failures | edit failures | missing | mean | std | median | min | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [*report["categories"].items(), ("**all**", report["overall"])]
    for name, s in rows:
        cells = [s["samples"], s["count"], s["failures"], s["edit_failures"], s["missing"]]
        cells += [s["mean"], s["std"], s["median"], s["min"], s["max"]]
        lines.append(f"| {name} | " + " | ".join(_fmt(c) for c in cells) + " |")
    metric_names = list(report["overall"].get("metrics", {}))
    if metric_names:
        lines += [
            "",
            "Sub-score means (SC = min(edit_success, over_editing), PQ = min(naturalness, artifacts), overall = √(SC·PQ)):",
            "",
        ]
        lines.append("| category | " + " | ".join(metric_names) + " |")
        lines.append("|---|" + "---:|" * len(metric_names))
        for name, s in rows:
            lines.append(f"| {name} | " + " | ".join(_fmt(s["metrics"][m]) for m in metric_names) + " |")
    if report["failed_samples"]:
        lines += ["", "## Samples without a score", ""]
        for item in report["failed_samples"][:50]:
            lines.append(f"- `{item['id']}` ({item['category']}, {item['status']}): {item['error']}")
        if len(report["failed_samples"]) > 50:
            lines.append(f"- … and {len(report['failed_samples']) - 50} more (see records.jsonl)")
    lines += [
        "",
        "Scores that could not be read are counted as failures and excluded from the means; none is imputed.",
        "",
    ]
    return "\n".join(lines)


def bar_chart(report: dict[str, Any], path: Path) -> Path:
    """Per-category mean ± std bars with the headline as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["categories"])
    stats = [report["categories"][n] for n in names]
    means = [s["mean"] or 0.0 for s in stats]
    stds = [s["std"] or 0.0 for s in stats]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    bars = ax.bar(names, means, yerr=stds, capsize=4, color="#4C72B0")
    for bar, s in zip(bars, stats, strict=True):
        label = f"n={s['count']}" + (
            f", {s['failures'] + s['edit_failures']} failed" if s["failures"] + s["edit_failures"] else ""
        )
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, 0.2), ha="center", fontsize=7, color="white")
    if report["headline"] is not None:
        ax.axhline(report["headline"], ls="--", color="#C44E52", label=f"headline {report['headline']:.2f}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(0, 10)
    ax.set_ylabel("judge score (0–10)")
    ax.set_title(f"bench-edit: {report['editor']['model']} judged by {report['judge']['model']}", fontsize=9)
    fig.tight_layout()
    try:
        atomic_write(path, lambda p: fig.savefig(p, format="png"))
    finally:
        plt.close(fig)
    return path


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """report.json, report.md and report.png in ``out`` (each written atomically)."""
    return {
        "json": atomic_write_json(out / "report.json", report),
        "markdown": atomic_write_text(out / "report.md", markdown(report)),
        "chart": bar_chart(report, out / "report.png"),
    }


def _judge_records(out: Path, report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The latest judge record per sample id of this report's editor and judge (records.jsonl)."""
    from r3d.core.io import read_jsonl

    path = out / "records.jsonl"
    editor, judge = report["editor"]["fingerprint"], report["judge"]["fingerprint"]
    latest: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(path) if path.is_file() else []:
        if record.get("phase") == "judge" and record.get("editor") == editor and record.get("judge") == judge:
            latest[str(record.get("id"))] = record
    return latest


def _answers(record: dict[str, Any]) -> str:
    """The judge's raw answers and parsed scores of one record, as HTML."""
    from r3d.report.blocks import esc, fmt

    lines = []
    for q in record.get("questions") or []:
        raw = [t for t in q.get("raw") or [] if t]
        extra = ", ".join(
            f"{k} {fmt(v, 3)}" for k, v in q.items() if k not in ("name", "score", "raw", "error")
        )
        lines.append(
            f"<b>{esc(q.get('name', 'score'))}</b>: parsed {esc(fmt(q.get('score'), 3))}"
            + (f" ({esc(extra)})" if extra else "")
            + (f' <span class="fail">{esc(q["error"])}</span>' if q.get("error") else "")
            + (
                f"<pre>{esc(raw[-1])}</pre>"
                if raw
                else " — no text (score read from the digit probabilities)"
            )
        )
    return "<br>".join(lines) or "no answer recorded"


def html_report(report: dict[str, Any], samples: Sequence[Any], out: Path, per_category: int = 6) -> Path:
    """``out/report.html``: setup, per-category table, source/edited pairs (the first ``per_category``
    samples of each category, source images as thumbnails) with the judge's raw answers and parsed
    scores, and every sample without a score with its reason. Self-contained, written atomically."""
    from r3d.report.blocks import esc, fmt, image_cell, page, table, thumbnail

    editor, judge = report["editor"], report["judge"]
    setup = (
        f"<p>data <code>{esc(report['data']['path'])}</code> ({report['data']['selected']} samples) · editor "
        f"<code>{esc(editor['model'])}</code> ({esc(editor['num_inference_steps'])} steps, seed {esc(editor['seed'])}) "
        f"· judge <code>{esc(judge['model'])}</code> via {esc(judge['backend'])}, protocol {esc(judge['protocol'])}, "
        f"score {esc(judge['score_mode'])}</p><p><b>Headline (mean of category means, 0–10): "
        f"{esc(fmt(report['headline'], 3))}</b></p>"
    )
    header = ["category", "samples", "scored", "judge failures", "edit failures", "missing", "mean", "std"]
    header += ["median", "min", "max"]
    rows = [
        [name, s["samples"], s["count"], s["failures"], s["edit_failures"], s["missing"]]
        + [fmt(s[k], 3) for k in ("mean", "std", "median", "min", "max")]
        for name, s in [*report["categories"].items(), ("all", report["overall"])]
    ]
    judged = _judge_records(out, report)
    parts = [setup, "<h2>Per category</h2>", table(header, rows), "<h2>Source and edited images</h2>"]
    for category in report["categories"]:
        chosen = [s for s in samples if s.category == category][:per_category]
        parts.append(f"<h3>{esc(category)}</h3>")
        for s in chosen:
            record = judged.get(s.id)
            edited = out / record["image"] if record and record.get("image") else None
            cells = [image_cell(thumbnail(s.load_image()), "source", mime="image/jpeg")]
            if edited is not None and edited.is_file():
                from PIL import Image

                with Image.open(edited) as im:
                    cells.append(
                        image_cell(thumbnail(im), "edited", record.get("overall"), mime="image/jpeg")
                    )
            answer = _answers(record) if record else '<span class="fail">not judged</span>'
            parts.append(
                f'<div class="grid"><div class="pair">{"".join(cells)}</div><div style="max-width:560px">'
                f"<b>{esc(s.id)}</b>: {esc(s.instruction)}<br>{answer}</div></div>"
            )
    failed = report["failed_samples"]
    parts.append(f"<h2>Samples without a score ({len(failed)})</h2>")
    if failed:
        rows = [[f["id"], f["category"], f["status"], f["error"] or ""] for f in failed]
        parts.append(table(["sample", "category", "status", "reason"], rows))
    else:
        parts.append("<p>None: every selected sample was edited and scored.</p>")
    title = f"r3d bench-edit: {editor['model']} judged by {judge['model']}"
    return atomic_write_text(out / "report.html", page(title, "".join(parts)))
