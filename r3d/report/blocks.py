"""Building blocks of r3d's HTML pages: the page shell (CSS, inlined scripts), SVG line charts,
tables, and cells for a mesh (interactive 3D viewer), a motion (animated skeleton) or an image.

Pages are self-contained: three.js comes from ``r3d/assets/vendor/three`` as ``data:`` URLs in an
import map, data (GLB, joints, PNG) is inlined as base64 / JSON; nothing refers to a URL.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from r3d.core.errors import R3DError
from r3d.report.js import MOTION_JS, VIEWER_JS

VENDOR = Path(__file__).resolve().parent.parent / "assets" / "vendor" / "three"
THREE_VERSION = "0.181.0"
# import-map specifier → (vendored file, relative imports of that file rewritten to bare specifiers)
_MODULES = {
    "three/core": ("three.core.min.js", {}),
    "three": ("three.module.min.js", {'"./three.core.min.js"': '"three/core"'}),
    "three/addons/utils/BufferGeometryUtils.js": ("addons/utils/BufferGeometryUtils.js", {}),
    "three/addons/loaders/GLTFLoader.js": (
        "addons/loaders/GLTFLoader.js",
        {"'../utils/BufferGeometryUtils.js'": "'three/addons/utils/BufferGeometryUtils.js'"},
    ),
    "three/addons/controls/OrbitControls.js": ("addons/controls/OrbitControls.js", {}),
}
PALETTE = ("#3a6fb0", "#dd5a37", "#2a9d8f", "#d69e00", "#8e5ea2", "#6b7a8f", "#c44e52", "#55a868")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#fff}
main{max-width:1180px;margin:0 auto;padding:18px 22px 60px}
h1{font-size:22px;margin:6px 0 2px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e3e6ea;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}.sub{color:#5b6472;margin:0 0 10px}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e3e6ea;padding:4px 10px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f4f5f7;font-weight:600}.charts{display:flex;flex-wrap:wrap;gap:14px}
.chart{border:1px solid #e3e6ea;border-radius:6px;padding:4px}
.grid{display:flex;flex-wrap:wrap;gap:12px;margin:6px 0 14px}
.pair{display:flex;gap:4px;border:1px solid #e3e6ea;border-radius:6px;padding:4px;background:#fafbfc}
.cell{display:flex;flex-direction:column;align-items:center;font-size:12px}
.cell canvas,.cell img{width:200px;height:200px;border-radius:4px;background:#f4f5f7;object-fit:contain}
.cell canvas{cursor:grab;touch-action:none}.cap{color:#5b6472;max-width:200px;text-align:center}
.score{font-weight:600}.up{color:#1e7b34}.down{color:#b3261e}.note{color:#b3261e}
.warn{border:1px solid #e0b252;background:#fff8e6;border-radius:6px;padding:8px 12px;margin:10px 0}
.ok{border:1px solid #9fcfae;background:#f0faf3;border-radius:6px;padding:8px 12px;margin:10px 0}
pre{background:#f4f5f7;padding:8px;border-radius:4px;white-space:pre-wrap;word-break:break-word;font-size:12px;max-height:220px;overflow:auto}
.fail{color:#b3261e}code{background:#f4f5f7;padding:0 3px;border-radius:3px}
"""


def esc(value: Any) -> str:
    """HTML-escaped text of ``value``."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` decimals ("–" for None / NaN), anything else as text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@functools.lru_cache(maxsize=1)
def import_map() -> str:
    """The ``<script type="importmap">`` mapping three.js's specifiers to ``data:`` URLs of the
    vendored files (their relative imports rewritten to the bare specifiers of this map)."""
    imports = {}
    for name, (file, rewrites) in _MODULES.items():
        path = VENDOR / file
        if not path.is_file():
            raise R3DError(f"the vendored three.js is incomplete: {path} is missing (reinstall r3d)")
        text = path.read_text(encoding="utf-8")
        for old, new in rewrites.items():
            if old not in text:
                raise R3DError(f"{path}: expected import {old} not found (vendored three.js changed?)")
            text = text.replace(old, new)
        imports[name] = "data:text/javascript;base64," + b64(text.encode("utf-8"))
    return json.dumps({"imports": imports})


def page(title: str, body: str, subtitle: str = "") -> str:
    """A whole HTML document; the 3D viewer and the skeleton player are inlined only when ``body``
    holds a mesh or a motion cell."""
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style>",
    ]
    tail = []
    if 'class="cell mesh"' in body:
        head.append(f'<script type="importmap">{import_map()}</script>')
        tail.append(f'<script type="module">{VIEWER_JS}</script>')
    if 'class="cell motion"' in body:
        tail.append(f"<script>{MOTION_JS}</script>")
    sub = f'<p class="sub">{esc(subtitle)}</p>' if subtitle else ""
    return "\n".join(
        [
            *head,
            "</head><body><main>",
            f"<h1>{esc(title)}</h1>{sub}",
            body,
            "</main>",
            *tail,
            "</body></html>\n",
        ]
    )


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (cells already HTML)."""
    cell = (lambda c: str(c)) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ticks(lo: float, hi: float, n: int = 4, integer: bool = False) -> list[float]:
    """Round tick values in [lo, hi], at most about ``n + 1``; whole numbers only when ``integer``."""
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for mult in (1, 2, 2.5, 5, 10):
        if (hi - lo) / (step * mult) <= n:
            step *= mult
            break
    step = max(step, 1) if integer else step
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(
    title: str, series: dict[str, Sequence[tuple[float, float]]], width: int = 360, height: int = 210
) -> str:
    """An inline SVG chart of ``series`` (name → (x, y) points, x = iteration); series with at most
    40 points get markers. Non-finite points are dropped; an empty chart says so."""
    clean = {
        k: [(float(x), float(y)) for x, y in v if math.isfinite(float(y))] for k, v in series.items() if v
    }
    clean = {k: v for k, v in clean.items() if v}
    left, right, top, bottom = 52, 12, 24, 38 + 14 * ((len(clean) + 1) // 2)
    h = height + bottom - 38
    parts = [f'<svg class="chart" width="{width}" height="{h}" viewBox="0 0 {width} {h}" role="img">']
    parts.append(f'<text x="{left}" y="15" font-size="13" font-weight="600">{esc(title)}</text>')
    if not clean:
        parts.append(
            f'<text x="{left}" y="{top + 40}" font-size="12" fill="#5b6472">no data yet</text></svg>'
        )
        return "".join(parts)
    xs = [x for v in clean.values() for x, _ in v]
    ys = [y for v in clean.values() for _, y in v]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or max(abs(y0) * 0.05, 1e-3)
    y0, y1 = y0 - pad, y1 + pad
    x1 = x1 if x1 > x0 else x0 + 1
    pw, ph = width - left - right, height - top - 38

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    for t in _ticks(y0, y1):
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eceef1"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{py(t) + 4:.1f}" font-size="11" text-anchor="end" fill="#5b6472">{t:.4g}</text>'
        )
    for t in _ticks(x0, x1, integer=True):
        parts.append(
            f'<text x="{px(t):.1f}" y="{top + ph + 15}" font-size="11" text-anchor="middle" fill="#5b6472">{t:.4g}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{top + ph + 29}" font-size="11" text-anchor="middle" fill="#5b6472">iteration</text>'
    )
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#c9ced6"/>')
    for i, (name, pts) in enumerate(clean.items()):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        if len(pts) <= 40:
            parts += [
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.8" fill="{color}"><title>{esc(name)} @ {x:g}: {y:.4f}</title></circle>'
                for x, y in pts
            ]
        lx, ly = left + (i % 2) * (pw / 2), top + ph + 44 + 14 * (i // 2)
        parts.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{lx + 14}" y="{ly}" font-size="11">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cell(kind: str, inner: str, caption: str, score: float | None, attrs: str = "") -> str:
    score_html = f'<span class="score">{score:.3f}</span> ' if score is not None else ""
    return (
        f'<div class="cell {kind}"{attrs}>{inner}<div class="cap">{score_html}{esc(caption)}</div>'
        '<div class="note"></div></div>'
    )


def mesh_cell(glb: bytes, caption: str, score: float | None = None, group: str = "", name: str = "") -> str:
    """A 3D-viewer cell for one mesh (GLB bytes, inlined as base64); cells sharing ``group`` turn together."""
    attrs = f' data-glb="{b64(glb)}" data-group="{esc(group)}" data-name="{esc(name or caption)}"'
    return _cell("mesh", '<canvas width="400" height="400"></canvas>', caption, score, attrs)


def motion_cell(joints: np.ndarray, caption: str, score: float | None = None, fps: float = 20.0) -> str:
    """An animated skeleton cell: ``joints`` (T, 22, 3) in metres, y up, played at ``fps``."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (22, 3) or not len(joints):
        raise R3DError(f"a skeleton needs joints of shape (T, 22, 3), got {joints.shape}")
    flat = json.dumps([round(float(v), 3) for v in np.nan_to_num(joints).reshape(-1)], separators=(",", ":"))
    attrs = f' data-joints="{esc(flat)}" data-fps="{fps:g}"'
    return _cell("motion", '<canvas width="400" height="400"></canvas>', caption, score, attrs)


def image_cell(data: bytes, caption: str, score: float | None = None, mime: str = "image/png") -> str:
    """An image cell (PNG / JPEG bytes inlined)."""
    return _cell("image", f'<img alt="{esc(caption)}" src="data:{mime};base64,{b64(data)}">', caption, score)


def thumbnail(image: Any, size: int = 384) -> bytes:
    """JPEG bytes of a PIL image scaled to fit ``size`` × ``size`` px (pages stay small)."""
    import io

    im = image.convert("RGB")
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
