"""``report.html`` of a ``r3d grpo`` run folder, rebuilt from ``metrics.jsonl``, ``summary.json`` (its
``guard`` entry, when there is one) and the evaluation samples kept in ``samples_<tag>/``.

The trainer's preview hook calls :func:`write_run_report` with ``pending=True`` during an evaluation,
before that evaluation's record reaches ``metrics.jsonl``: the held-out reward of the samples just
saved is then added to the curve from their scores. Every ``eval/*`` key is shown, generically;
``eval/gold/*`` keys (measures the policy is not trained on) get their own section.
"""

from __future__ import annotations

import json
import math
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from r3d.core.errors import R3DError
from r3d.core.io import atomic_write_text, read_jsonl
from r3d.report.blocks import esc, fmt, image_cell, line_chart, mesh_cell, motion_cell, page, table

REPORT = "report.html"
GOLD = "eval/gold/"


def _tag_order(folder: Path) -> tuple[int, str]:
    tag = folder.name.removeprefix("samples_")
    return (0 if tag == "start" else 2 if tag == "end" else 1, tag)


def sample_folders(run_dir: Path) -> list[Path]:
    """The run's kept evaluations (``samples_<tag>/index.json``), start first, end last."""
    found = [d for d in run_dir.glob("samples_*") if d.is_dir() and (d / "index.json").is_file()]
    return sorted(found, key=_tag_order)


def _read_index(folder: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((folder / "index.json").read_text(encoding="utf-8"))["samples"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise R3DError(f"{folder / 'index.json'}: unreadable sample index ({exc})") from None


def _sample_cell(folder: Path, entry: dict[str, Any], caption: str, group: str) -> str:
    """The cell of one kept sample, by file type; "" when it has no viewable file."""
    name, score = entry.get("file"), entry.get("score")
    if not name:
        return f'<div class="cell"><div class="cap fail">empty decode — {esc(caption)}</div></div>'
    path = folder / name
    if not path.is_file():
        return ""
    suffix = path.suffix.lower()
    if suffix == ".glb":
        return mesh_cell(path.read_bytes(), caption, score, group=group, name=f"{folder.name}/{name}")
    if suffix == ".npy":
        import numpy as np

        from r3d.motion.artifacts import Motion

        motion = Motion(np.load(path, allow_pickle=False))
        return motion_cell(motion.joints(), caption, score, fps=motion.fps)
    if suffix in (".png", ".jpg", ".jpeg"):
        mime = "image/png" if suffix == ".png" else "image/jpeg"
        return image_cell(path.read_bytes(), caption, score, mime)
    return ""


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if finite else None


def _samples_section(run_dir: Path, folders: list[Path], max_per_prompt: int) -> str:
    if not folders:
        return "<p>No evaluation has finished yet.</p>"
    start, now = folders[0], folders[-1]
    first, last = _read_index(start), _read_index(now)
    same = start == now
    label_now = now.name.removeprefix("samples_")
    intro = (
        f"Held-out prompts at the evaluation seed: <b>{esc(start.name.removeprefix('samples_'))}</b> "
        + ("" if same else f"(left) and <b>{esc(label_now)}</b> (right), same noise, ")
        + "each with its held-out reward."
    )
    parts = []
    prompts = list(dict.fromkeys(e["prompt"] for e in first))
    shown = 0
    for prompt in prompts:
        idx = [i for i, e in enumerate(first) if e["prompt"] == prompt]
        m0 = _mean([first[i].get("score") for i in idx])
        m1 = _mean([last[i].get("score") for i in idx if i < len(last)])
        change = "" if same or m0 is None or m1 is None else f" → {m1:.3f}"
        parts.append(f"<h3>{esc(prompt)} <span class='sub'>mean reward {fmt(m0, 3)}{change}</span></h3>")
        pairs = []
        for k, i in enumerate(idx[:max_per_prompt]):
            group = f"{prompt}#{k}"
            cells = [_sample_cell(start, first[i], f"{start.name.removeprefix('samples_')} #{k}", group)]
            if not same and i < len(last):
                cells.append(_sample_cell(now, last[i], f"{label_now} #{k}", group))
            if any(cells):
                pairs.append(f'<div class="pair">{"".join(cells)}</div>')
        shown += len(pairs)
        parts.append(f'<div class="grid">{"".join(pairs)}</div>')
    body = "".join(parts)
    if 'class="cell mesh"' in body:
        intro += " Drag a mesh to turn it (both of a pair turn together), scroll to zoom, right-drag to pan."
    if 'class="cell motion"' in body:
        intro += " Drag a skeleton sideways to turn it."
    parts.insert(0, f"<p>{intro}</p>")
    if not shown:  # samples of a type the page cannot show: the contact sheets, when there are some
        sheets = [run_dir / f"{f.name}.png" for f in (start, now)]
        cells = [image_cell(p.read_bytes(), p.name) for p in dict.fromkeys(sheets) if p.is_file()]
        parts.append(f'<div class="grid">{"".join(cells)}</div>')
    return "".join(parts)


def _guard_section(run_dir: Path) -> str:
    path = run_dir / "summary.json"
    if not path.is_file():
        return ""
    try:
        guard = json.loads(path.read_text(encoding="utf-8")).get("guard")
    except (OSError, ValueError, AttributeError):
        return ""
    if guard is None:
        return ""
    fired = isinstance(guard, dict) and any(
        bool(guard.get(k)) for k in ("fired", "triggered", "warning", "warnings", "stopped")
    )
    head = (
        "<b>Over-optimisation guard fired</b>: the training reward rose while a gold measure fell."
        if fired
        else "<b>Over-optimisation guard</b>: no warning."
    )
    body = json.dumps(guard, indent=1, default=str)
    return f'<div class="{"warn" if fired else "ok"}">{head}<pre>{esc(body)}</pre></div>'


def _metrics_section(records: list[dict[str, Any]], pending: tuple[int, float] | None) -> str:
    evals = [r for r in records if "eval/reward" in r]
    keys = list(dict.fromkeys(k for r in evals for k in r if k.startswith("eval/")))
    parts = []
    if evals:
        first, last = evals[0], evals[-1]
        rows = []
        for key in keys:
            a, b = first.get(key), last.get(key)
            delta = b - a if isinstance(a, int | float) and isinstance(b, int | float) else None
            arrow = "" if delta is None else ("up" if delta > 0 else "down" if delta < 0 else "")
            cell = f'<span class="{arrow}">{esc(fmt(delta))}</span>' if delta is not None else "–"
            rows.append([esc(key.removeprefix("eval/")), esc(fmt(a)), esc(fmt(b)), cell])
        parts.append(
            f"<p>Held-out measures at iteration {first['iteration']} and {last['iteration']} "
            "(gold measures are never trained on).</p>"
        )
        parts.append(table(["measure", "start", "now", "change"], rows, raw=True))
    train = [(r["iteration"], r["reward"]) for r in records if "reward" in r]
    held = [(r["iteration"], r["eval/reward"]) for r in evals]
    if pending is not None and all(x != pending[0] for x, _ in held):
        held.append(pending)
    charts = [line_chart("reward", {"training batch": train, "held-out": held})]
    charts += [
        line_chart(k.removeprefix("eval/"), {"held-out": [(r["iteration"], r[k]) for r in evals if k in r]})
        for k in keys
        if k != "eval/reward" and not k.startswith(GOLD)
    ]
    parts.append(f'<h2>Curves</h2><div class="charts">{"".join(charts)}</div>')
    gold = [k for k in keys if k.startswith(GOLD)]
    if gold:
        gold_charts = [
            line_chart(k.removeprefix(GOLD), {"gold": [(r["iteration"], r[k]) for r in evals if k in r]})
            for k in gold
        ]
        parts.append(
            "<h2>Gold measures</h2><p>Measures the policy is never trained on: when the reward rises "
            "while these fall, the policy is exploiting the reward.</p>"
            f'<div class="charts">{"".join(gold_charts)}</div>'
        )
    return "".join(parts)


def write_run_report(run_dir: Path, pending: bool = False, max_per_prompt: int = 4) -> Path:
    """Rewrite ``run_dir/report.html`` atomically; ``pending``: an evaluation is in progress and its
    samples are the newest ``samples_<tag>/`` (its reward is plotted from their scores). At most
    ``max_per_prompt`` samples per held-out prompt are shown (all are kept on disk)."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    records = read_jsonl(metrics) if metrics.is_file() else []
    folders = sample_folders(run_dir)
    point = None
    if pending and folders:
        mean = _mean([e.get("score") for e in _read_index(folders[-1])])
        at = max((int(r.get("iteration", 0)) + 1 for r in records), default=0)
        point = None if mean is None else (at, mean)
    done = max((int(r.get("iteration", 0)) for r in records), default=0)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(
        [
            _guard_section(run_dir),
            _metrics_section(records, point),
            "<h2>Samples: start and now</h2>",
            _samples_section(run_dir, folders, max_per_prompt),
        ]
    )
    subtitle = f"{run_dir.resolve()} — {done} iteration(s) logged — written {stamp}"
    return atomic_write_text(run_dir / REPORT, page(f"r3d grpo report: {run_dir.name}", body, subtitle))
