"""The bench-edit data set: JSON / JSONL records validated up front, then selected.

A record is a mapping with

- ``id`` (str or int, unique), ``category`` (one of :data:`CATEGORIES`, case-insensitive),
  ``instruction`` (the edit to make, non-empty);
- ``image``: a file path (relative to the data file, inside its folder unless
  ``allow_outside_images``) when it ends in an image extension, otherwise
  base64 — a ``data:image/...;base64,`` URI or raw base64 text;
- optional ``description`` (what the original image shows; the judge reads it) and ``seed`` (int ≥ 0,
  overrides the editor's seed for this sample). Other fields are kept in ``meta`` and ignored.

A ``.json`` file holds a list of records (or ``{"samples": [...]}``); any other suffix is read as
JSON lines. Every record is checked (fields, category, base64, image readable, duplicate ids) before
any model loads, and all problems are reported together.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from PIL import Image

from r3d.core.errors import R3DError, did_you_mean
from r3d.core.io import read_text

CATEGORIES: tuple[str, ...] = ("physics", "environment", "social", "causal", "referential")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "assets" / "bench_edit"
SAMPLE_DATA = SAMPLE_DIR / "samples.jsonl"


@dataclass
class EditSample:
    """One benchmark item. ``image_path`` or ``image_bytes`` holds the original image."""

    id: str
    category: str
    instruction: str
    description: str = ""
    seed: int | None = None
    image_path: Path | None = None
    image_bytes: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        """The original image as RGB."""
        source = self.image_path if self.image_path is not None else io.BytesIO(self.image_bytes or b"")
        with Image.open(source) as img:
            return img.convert("RGB")

    def image_size(self) -> tuple[int, int]:
        """(width, height) without decoding the pixels."""
        source = self.image_path if self.image_path is not None else io.BytesIO(self.image_bytes or b"")
        with Image.open(source) as img:
            return img.size


@dataclass
class DatasetIssue:
    where: str
    message: str
    kind: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class LoadedDataset:
    samples: list[EditSample]
    issues: list[DatasetIssue]
    total: int
    path: Path

    def summary(self) -> str:
        """One line: how many records, how many valid, what went wrong."""
        text = f"{self.total} records in {self.path.name}: {len(self.samples)} valid"
        if self.issues:
            kinds = Counter(issue.kind for issue in self.issues)
            detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            text += f", {self.total - len(self.samples)} invalid ({detail})"
        return text


def safe_filename(sample_id: str, max_len: int = 80) -> str:
    """A file-name stem for ``sample_id`` made of ``[A-Za-z0-9._-]``; if anything had to change, a
    short hash of the original id is appended so distinct ids never collide."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id).lstrip(".")[:max_len]
    if stem == sample_id and stem:
        return stem
    digest = hashlib.sha1(sample_id.encode("utf-8")).hexdigest()[:8]
    return f"{stem or 'sample'}-{digest}"


def _decode_base64(text: str) -> bytes:
    payload = text
    if text.startswith("data:"):
        head, sep, payload = text.partition(",")
        if not sep or ";base64" not in head:
            raise ValueError("data URI is not base64-encoded")
    payload = re.sub(r"\s+", "", payload)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"bad base64 ({exc})") from None


def _check_image(source: Path | bytes) -> None:
    """Raise ValueError unless ``source`` opens as an image within PIL's pixel limit.

    A decompression bomb (more pixels than ``Image.MAX_IMAGE_PIXELS``) and any decoder error make
    the record invalid instead of aborting the run.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as img:
                img.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"image too large to decode safely ({str(exc).split(',')[0]})") from None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, struct.error, ...)
        raise ValueError(f"not a readable image ({exc.__class__.__name__})") from None


def _outside(image: str) -> bool:
    """True if a record's image path leaves the data file's folder (absolute, or with a ``..`` part)."""
    path = PurePosixPath(image.replace("\\", "/"))
    return path.is_absolute() or PureWindowsPath(image).is_absolute() or ".." in path.parts


def _parse_record(
    raw: Any, base_dir: Path, allow_outside: bool = False
) -> tuple[EditSample | None, str, str]:
    """(sample, "", "") or (None, message, kind); image paths must stay under ``base_dir`` unless
    ``allow_outside``."""
    if not isinstance(raw, dict):
        return None, f"expected a mapping, got {type(raw).__name__}", "not a mapping"
    missing = [k for k in ("id", "category", "instruction", "image") if raw.get(k) in (None, "")]
    if missing:
        return None, f"missing field(s): {', '.join(missing)}", "missing field"
    sample_id = raw["id"]
    if isinstance(sample_id, bool) or not isinstance(sample_id, (str, int)):
        return None, f"'id' must be a string or integer, got {type(sample_id).__name__}", "bad field"
    for key in ("category", "instruction", "image"):
        if not isinstance(raw[key], str):
            return None, f"'{key}' must be a string, got {type(raw[key]).__name__}", "bad field"
    description = raw.get("description", "")
    if not isinstance(description, str):
        return None, "'description' must be a string", "bad field"
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        return None, f"'seed' must be an integer >= 0, got {seed!r}", "bad field"
    category = raw["category"].strip().lower()
    if category not in CATEGORIES:
        more = did_you_mean(category, CATEGORIES, cutoff=0.5) or f"; known: {', '.join(CATEGORIES)}"
        return None, f"unknown category '{raw['category']}'{more}", "unknown category"
    image = raw["image"].strip()
    sample = EditSample(
        id=str(sample_id),
        category=category,
        instruction=raw["instruction"].strip(),
        description=description.strip(),
        seed=seed,
        meta={
            k: v
            for k, v in raw.items()
            if k not in {"id", "category", "instruction", "image", "description", "seed"}
        },
    )
    if not image.startswith("data:") and image.lower().endswith(IMAGE_SUFFIXES) and len(image) <= 4096:
        if _outside(image) and not allow_outside:
            return (
                None,
                f"image path {image} leaves the data file's folder (set allow_outside_images=true to allow it)",
                "image outside data folder",
            )
        path = Path(image)
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            return None, f"image file not found: {image}", "missing image"
        sample.image_path = path
    else:
        try:
            sample.image_bytes = _decode_base64(image)
        except ValueError as exc:
            return None, f"'image': {exc}", "bad base64"
    try:
        _check_image(sample.image_path or sample.image_bytes or b"")
    except ValueError as exc:
        return None, f"'image': {exc}", "unreadable image"
    return sample, "", ""


def _read_raw(path: Path) -> list[tuple[str, Any, str | None]]:
    """(where, record or None, JSON error) per record of a JSON or JSONL file."""
    text = read_text(path, "data file")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise R3DError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("samples"), list):
            data = data["samples"]
        if not isinstance(data, list):
            raise R3DError(f'{path}: expected a list of records or {{"samples": [...]}}')
        return [(f"record {i}", item, None) for i, item in enumerate(data)]
    rows: list[tuple[str, Any, str | None]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {number}", json.loads(line), None))
        except json.JSONDecodeError as exc:
            rows.append((f"line {number}", None, f"not valid JSON ({exc.msg})"))
    return rows


def load_dataset(path: str | Path | None = None, allow_outside_images: bool = False) -> LoadedDataset:
    """Read and validate every record of ``path`` (the shipped sample benchmark when None).

    Image paths that leave the data file's folder (absolute or ``..``) are invalid records unless
    ``allow_outside_images``: a data file from elsewhere must not make the judge read (and, with a
    remote judge, send out) arbitrary local files.
    """
    path = Path(path) if path is not None else SAMPLE_DATA
    if not path.is_file():
        raise R3DError(f"data file not found: {path}")
    samples: list[EditSample] = []
    issues: list[DatasetIssue] = []
    seen: dict[str, str] = {}
    rows = _read_raw(path)
    for where, raw, json_error in rows:
        if json_error is not None:
            issues.append(DatasetIssue(where, json_error, "bad JSON"))
            continue
        sample, message, kind = _parse_record(raw, path.parent, allow_outside_images)
        label = f"{where} (id {raw.get('id')!r})" if isinstance(raw, dict) and "id" in raw else where
        if sample is None:
            issues.append(DatasetIssue(label, message, kind))
        elif sample.id in seen:
            issues.append(DatasetIssue(label, f"duplicate id (first at {seen[sample.id]})", "duplicate id"))
        else:
            seen[sample.id] = where
            samples.append(sample)
    if not rows:
        raise R3DError(f"{path}: no records")
    return LoadedDataset(samples=samples, issues=issues, total=len(rows), path=path)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 ≤ i < n) → (i, n); None stays None."""
    if text is None or text == "":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or int(match.group(2)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise R3DError(f"--shard expects i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def select_samples(
    samples: list[EditSample],
    categories: list[str] | None = None,
    limit: int | None = None,
) -> list[EditSample]:
    """Keep ``categories`` (in data order), then the first ``limit``."""
    if categories:
        wanted = [c.strip().lower() for c in categories if c.strip()]
        unknown = [c for c in wanted if c not in CATEGORIES]
        if unknown:
            raise R3DError(
                f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; known: {', '.join(CATEGORIES)}"
            )
        samples = [s for s in samples if s.category in wanted]
    if limit is not None:
        if limit < 0:
            raise R3DError(f"--limit must be >= 0, got {limit}")
        samples = samples[:limit]
    return samples


def shard_samples(samples: list[EditSample], shard: tuple[int, int] | None) -> list[EditSample]:
    """Shard ``(i, n)`` keeps every n-th sample starting at i (round robin keeps categories balanced)."""
    if shard is None:
        return samples
    index, count = shard
    return samples[index::count]
