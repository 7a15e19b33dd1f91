"""Stick-figure rendering of joint motions (22-joint HumanML3D skeleton) to GIF, MP4 or a PNG strip.

Drawn with matplotlib's Agg backend (no display needed): a 3D view from the front-left and above, the
five kinematic chains coloured, the ground plane as a grid, the root trajectory as a line on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from r3d.core.errors import R3DError
from r3d.core.io import atomic_write
from r3d.motion.representation import FPS, KINEMATIC_CHAIN

CHAIN_COLORS = ("#DD5A37", "#D69E00", "#B75A39", "#FF6D00", "#DDB50E")
GT_COLORS = ("#4D84AA", "#5B9965", "#61CEB9", "#34C1E2", "#80B79A")


def _figure_frames(
    joints: np.ndarray, title: str, frames: Sequence[int], size: int, colors: Sequence[str]
) -> list[np.ndarray]:
    """Draw the chosen frames of (T, 22, 3) ``joints``; returns RGB arrays (size, size, 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (22, 3):
        raise R3DError(f"expected joints shaped (T, 22, 3), got {joints.shape}")
    if not np.isfinite(joints).all():
        raise R3DError("the motion has non-finite joint positions; cannot render it")
    lo, hi = joints.min(axis=(0, 1)), joints.max(axis=(0, 1))
    centre = (lo + hi) / 2
    radius = max(float(np.max(hi - lo)) / 2, 1.0)
    dpi = 100
    fig = plt.figure(figsize=(size / dpi, size / dpi), dpi=dpi)
    ax = fig.add_subplot(111, projection="3d")
    out = []
    for f in frames:
        ax.cla()
        ax.set_xlim(centre[0] - radius, centre[0] + radius)
        ax.set_ylim(centre[2] - radius, centre[2] + radius)
        ax.set_zlim(0, 2 * radius)
        ax.view_init(elev=20, azim=-60)
        ax.set_axis_off()
        grid = np.linspace(-radius, radius, 5)
        for g in grid:
            ax.plot(
                [centre[0] + g] * 2, [centre[2] - radius, centre[2] + radius], [0, 0], color="#cccccc", lw=0.5
            )
            ax.plot(
                [centre[0] - radius, centre[0] + radius], [centre[2] + g] * 2, [0, 0], color="#cccccc", lw=0.5
            )
        ax.plot(joints[: f + 1, 0, 0], joints[: f + 1, 0, 2], np.zeros(f + 1), color="#555555", lw=1)
        for chain, color in zip(KINEMATIC_CHAIN, colors, strict=True):
            pts = joints[f, list(chain)]
            ax.plot(pts[:, 0], pts[:, 2], pts[:, 1], color=color, lw=2.5)
        if title:
            ax.set_title(title, fontsize=7, wrap=True)
        fig.canvas.draw()
        out.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return out


def render_motion(
    joints: np.ndarray,
    path: str | Path,
    title: str = "",
    fps: int = FPS,
    size: int = 320,
    stride: int = 1,
    ground_truth: bool = False,
) -> Path:
    """Write (T, 22, 3) joints as an animated ``.gif`` or ``.mp4`` (``.mp4`` needs ffmpeg) to ``path``."""
    path = Path(path)
    colors = GT_COLORS if ground_truth else CHAIN_COLORS
    frames = _figure_frames(joints, title, range(0, len(joints), stride), size, colors)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]

        def write(tmp: Path) -> None:
            images[0].save(
                tmp,
                format="GIF",
                save_all=True,
                append_images=images[1:],
                duration=int(1000 * stride / fps),
                loop=0,
            )

        return atomic_write(path, write)
    if suffix == ".mp4":
        import matplotlib.animation as animation

        if not animation.writers.is_available("ffmpeg"):
            raise R3DError("MP4 output needs ffmpeg on PATH; write a .gif instead")
        import subprocess

        def write_mp4(tmp: Path) -> None:
            h, w, _ = frames[0].shape
            cmd = [
                "ffmpeg",
                "-y",
                "-loglevel",
                "error",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-s",
                f"{w}x{h}",
                "-r",
                str(fps / stride),
                "-i",
                "-",
                "-pix_fmt",
                "yuv420p",
                "-f",
                "mp4",
                str(tmp),
            ]
            subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)

        return atomic_write(path, write_mp4)
    raise R3DError(f"unsupported animation format '{path.suffix}'; use .gif or .mp4")


def render_strip(
    motions: Sequence[np.ndarray],
    path: str | Path,
    titles: Sequence[str] | None = None,
    n_frames: int = 5,
    size: int = 160,
) -> Path:
    """A PNG contact sheet: one row per motion, ``n_frames`` evenly spaced frames per row."""
    from PIL import Image, ImageDraw

    rows = []
    titles = list(titles) if titles is not None else [""] * len(motions)
    for joints, title in zip(motions, titles, strict=True):
        idx = np.linspace(0, len(joints) - 1, n_frames).round().astype(int)
        frames = _figure_frames(joints, "", idx, size, CHAIN_COLORS)
        row = np.concatenate(frames, axis=1)
        label = Image.new("RGB", (row.shape[1], 14), "white")
        ImageDraw.Draw(label).text((3, 1), title[:120], fill="black")
        rows.append(np.concatenate([np.asarray(label), row], axis=0))
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    return atomic_write(Path(path), lambda tmp: sheet.save(tmp, format="PNG"))
