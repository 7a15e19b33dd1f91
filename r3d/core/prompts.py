"""Prompt datasets: ``prompts.train`` / ``prompts.eval`` given as a path instead of an inline list.

Accepted paths (relative to the working directory, like every path in a recipe):

- ``*.txt``: one prompt a line; blank lines and lines starting with ``#`` are skipped.
- ``*.jsonl``: one JSON object a line with exactly one of ``prompt`` (text), ``image`` (a condition
  image, relative to the file's folder) or ``caption`` (motion; optional ``length`` in frames).
- a folder of images, or a glob (``data/cond/*.png``): one condition image per file, sorted.
- a HumanML3D split file (``HumanML3D/train.txt`` beside a ``texts/`` folder): the ids it lists,
  each read from ``texts/<id>.txt`` (``caption#tokens#from#to`` lines); lengths in frames come from
  ``new_joint_vecs/<id>.npy`` when it is there (clips outside 40–199 frames skipped, as MDM's loader
  does, and cropped to 196).

Every problem is one :class:`R3DError` line naming the file and the line. Reading is done when the
recipe is validated, so before any model is loaded; the file's sha256 is kept so that a run resumed
on a changed file can be refused.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from r3d.core.errors import R3DError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
HUMANML3D_FPS = 20
HUMANML3D_MIN_FRAMES, HUMANML3D_MAX_FRAMES, HUMANML3D_CROP = 40, 200, 196


@dataclass
class PromptSet:
    """Prompts read from ``path``; ``where[i]`` is ``"FILE line N"`` of ``prompts[i]``.

    ``lengths`` maps a motion caption to its length in frames (jsonl ``length``, HumanML3D clips).
    ``sha256`` covers the file's bytes (for a folder or glob: the names and bytes of every image).
    """

    path: str
    prompts: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    lengths: dict[str, int] = field(default_factory=dict)
    sha256: str = ""

    def add(self, prompt: str, where: str, length: int | None = None) -> None:
        self.prompts.append(prompt)
        self.where.append(where)
        if length is not None:
            self.lengths.setdefault(prompt, length)


def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def read_prompts(spec: str, key: str = "prompts.train") -> PromptSet:
    """Read the prompt file, image folder/glob or HumanML3D split ``spec`` (see the module doc)."""
    path = Path(spec)
    if _is_glob(spec) and not path.exists():
        return _read_images(spec, sorted(glob.glob(spec)))
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return _read_images(spec, files)
    if not path.is_file():
        raise R3DError(
            f"{key}: {spec!r} is not a file, folder or glob (inline prompts are a YAML list: {json.dumps([spec])})"
        )
    suffix = path.suffix.lower()
    if suffix == ".txt" and (path.parent / "texts").is_dir():
        return _read_humanml3d(path)
    if suffix == ".txt":
        return _read_txt(path)
    if suffix == ".jsonl":
        return _read_jsonl(path)
    raise R3DError(
        f"{key}: {spec}: unknown prompt file type {suffix or '(none)'!r}; use .txt, .jsonl, "
        "an image folder, a glob or a HumanML3D split file"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lines(path: Path) -> list[str]:
    """The file's lines, decoded as UTF-8 one by one (an undecodable line names its number)."""
    out = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise R3DError(f"{path} line {number}: not valid UTF-8 text") from None
    return out


def _read_txt(path: Path) -> PromptSet:
    out = PromptSet(str(path), sha256=_sha256(path))
    for number, line in enumerate(_lines(path), start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            out.add(text, f"{path} line {number}")
    return _non_empty(out)


def _read_jsonl(path: Path) -> PromptSet:
    out = PromptSet(str(path), sha256=_sha256(path))
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise R3DError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise R3DError(f"{where}: expected a JSON object, got {type(record).__name__}")
        fields = [k for k in ("prompt", "image", "caption") if k in record]
        if len(fields) != 1:
            raise R3DError(
                f"{where}: needs exactly one of 'prompt', 'image', 'caption' (got {fields or 'none'})"
            )
        value = record[fields[0]]
        if not isinstance(value, str) or not value.strip():
            raise R3DError(f"{where}: '{fields[0]}' must be a non-empty string")
        length = record.get("length")
        if length is not None and (fields[0] != "caption" or not _positive_int(length)):
            raise R3DError(f"{where}: 'length' must be a positive integer number of frames, with 'caption'")
        if fields[0] == "image":
            image = path.parent / value
            if not image.is_file():
                raise R3DError(f"{where}: image {image} not found")
            value = str(image)
        out.add(value.strip(), where, length)
    return _non_empty(out)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _read_images(spec: str, files: list[str]) -> PromptSet:
    files = [f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES and Path(f).is_file()]
    if not files:
        raise R3DError(f"{spec}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    digest = hashlib.sha256()
    out = PromptSet(spec)
    for f in files:
        digest.update(Path(f).name.encode() + b"\0" + bytes.fromhex(_sha256(Path(f))))
        out.add(f, f)
    out.sha256 = digest.hexdigest()
    return out


def _read_humanml3d(split: Path) -> PromptSet:
    """HumanML3D's split file of ids + ``texts/<id>.txt`` (``caption#tokens#from#to``)."""
    import numpy as np

    root = split.parent
    digest = hashlib.sha256(split.read_bytes())
    out = PromptSet(str(split))
    for number, line in enumerate(_lines(split), start=1):
        name = line.strip()
        if not name:
            continue
        text_file = root / "texts" / f"{name}.txt"
        if not text_file.is_file():
            raise R3DError(f"{split} line {number}: {text_file} not found")
        digest.update(text_file.read_bytes())
        vec = root / "new_joint_vecs" / f"{name}.npy"
        frames = int(np.load(vec, mmap_mode="r").shape[0]) if vec.is_file() else None
        for n, caption_line in enumerate(_lines(text_file), start=1):
            if not caption_line.strip():
                continue
            where = f"{text_file} line {n}"
            parts = caption_line.strip().split("#")
            if len(parts) < 4 or not parts[0].strip():
                raise R3DError(f"{where}: expected caption#tokens#from#to")
            length = None if frames is None else _clip_frames(frames, parts[2], parts[3], where)
            if length is None and frames is not None:
                continue
            out.add(parts[0].strip(), where, length)
    out.sha256 = digest.hexdigest()
    return _non_empty(out)


def _clip_frames(frames: int, start: str, end: str, where: str) -> int | None:
    """Frames of the caption's clip (whole motion when from = to = 0), cropped; None when skipped."""
    try:
        f_tag, t_tag = (float(v) if v not in ("", "nan") else 0.0 for v in (start, end))
    except ValueError:
        raise R3DError(f"{where}: from/to must be seconds, got {start!r}, {end!r}") from None
    if f_tag or t_tag:
        n = min(frames, int(t_tag * HUMANML3D_FPS)) - int(f_tag * HUMANML3D_FPS)
    else:
        n = frames
    if not HUMANML3D_MIN_FRAMES <= n < HUMANML3D_MAX_FRAMES:
        return None
    return min(n, HUMANML3D_CROP)


def _non_empty(out: PromptSet) -> PromptSet:
    if not out.prompts:
        raise R3DError(f"{out.path}: no prompts in this file")
    return out
