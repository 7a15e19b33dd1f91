"""``remote`` reward: scores artifacts with a reward served over HTTP (``python -m r3d.rewards.server``
or any server that speaks the format below), so a slow or big reward model can live on another machine.

Wire format, JSON (UTF-8) over HTTP:

``POST url`` with ``{"prompts": [str, ...], "artifacts": [ARTIFACT or null, ...]}`` answers
``{"name": HEADLINE, "scores": {component: [float, ...]}}``, one float per artifact for every component,
the component ``HEADLINE`` being the reward's headline score. Errors: any non-200 status with
``{"error": "one line"}``. ``GET <server>/info`` answers ``{"name", "higher_is_better",
"value_range", "differentiable"}`` (asked only when the client is given no ``name``).

ARTIFACT, by the artifact's type (``null`` = an empty decode, scored the reward's minimum):

- trimesh mesh: ``{"type": "mesh", "format": "arrays", "vertices": ARRAY (V, 3), "faces": ARRAY (F, 3)}``
  (exact, the default) or ``{"type": "mesh", "format": "ply" | "glb", "data": base64 file}`` (binary
  PLY / GLB as trimesh writes them: float32 vertices);
- PIL image: ``{"type": "image", "format": "png", "data": base64 PNG}`` (mode kept: RGB, RGBA, L...);
- motion (``r3d.motion.artifacts.Motion``): ``{"type": "motion", "fps": int, "features": ARRAY (T, 263)}``;
- torch tensor / numpy array: ``{"type": "tensor" | "array", "array": ARRAY}``.

``ARRAY = {"dtype": numpy dtype string ("<f4", "<f8", "<i8"...), "shape": [...], "data": base64 of the
C-order little-endian bytes}``.

The server refuses (HTTP 400) an artifact that is not well formed: an array whose bytes do not match its
shape, mesh vertices not (V, 3), faces not integer (F, 3) indices in [0, V), an image over
:data:`MAX_IMAGE_PIXELS` pixels, a motion that is not (T, D) at a positive fps.

The client splits a batch into requests of ``batch_size`` artifacts, keeps at most ``concurrency`` in
flight, retries timeouts, connection errors, 408/429/5xx and malformed answers with exponential
backoff (honouring ``Retry-After``), and raises a one-line :class:`R3DError` when a request still fails;
any other 4xx fails at once. The bearer token never follows a redirect to another origin, and a POST
follows only a same-origin 307/308 (:mod:`r3d.core.http`).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from r3d.core.errors import R3DError
from r3d.core.http import http_attempt, with_retries

MESH_FORMATS = ("arrays", "ply", "glb")
#: Largest image (width × height) the server decodes; bigger ones are refused before decompression.
MAX_IMAGE_PIXELS = 1 << 26


class Decoded(bytearray):
    """The bytes of a base64 ``data`` string already decoded by the server's streaming reader."""


def _b64(data: Any) -> bytes | bytearray:
    """Bytes of a ``data`` field: base64 text (strict alphabet), or a :class:`Decoded` as is."""
    return data if isinstance(data, Decoded) else base64.b64decode(data, validate=True)


# ------------------------------------------------------------------------------------------ encoding


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """``ARRAY`` of the module docstring (little-endian, C order)."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind not in "biuf":
        raise R3DError(f"remote reward: cannot send an array of dtype {array.dtype}")
    array = array.astype(array.dtype.newbyteorder("<"), copy=False)
    data = base64.b64encode(array.tobytes()).decode("ascii")
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": data}


def decode_array(obj: Any) -> np.ndarray:
    """Inverse of :func:`encode_array`; malformed input → R3DError."""
    try:
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in "biuf":
            raise ValueError(f"dtype {dtype} is not numeric")
        shape = tuple(int(n) for n in obj["shape"])
        data = _b64(obj["data"])
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
        return array if isinstance(data, bytearray) else array.copy()  # writable either way
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise R3DError(f"bad array ({type(exc).__name__}: {exc})") from None


def encode_artifact(artifact: Any, mesh_format: str = "arrays") -> dict[str, Any] | None:
    """One artifact → its JSON object (see the module docstring); None stays None."""
    if artifact is None:
        return None
    kind = type(artifact).__module__.split(".")[0]
    if kind == "trimesh":
        if mesh_format == "arrays":
            vertices, faces = encode_array(artifact.vertices), encode_array(artifact.faces)
            return {"type": "mesh", "format": "arrays", "vertices": vertices, "faces": faces}
        data = artifact.export(file_type=mesh_format)
        return {"type": "mesh", "format": mesh_format, "data": base64.b64encode(data).decode("ascii")}
    if kind == "PIL":
        buf = io.BytesIO()
        artifact.save(buf, format="PNG")
        return {"type": "image", "format": "png", "data": base64.b64encode(buf.getvalue()).decode("ascii")}
    if isinstance(artifact, torch.Tensor):
        return {"type": "tensor", "array": encode_array(artifact.detach().cpu().numpy())}
    if isinstance(artifact, np.ndarray):
        return {"type": "array", "array": encode_array(artifact)}
    if hasattr(artifact, "features") and hasattr(artifact, "fps"):
        return {"type": "motion", "fps": int(artifact.fps), "features": encode_array(artifact.features)}
    raise R3DError(f"remote reward: cannot send a {type(artifact).__name__} artifact")


def check_mesh_arrays(vertices: np.ndarray, faces: np.ndarray) -> None:
    """Refuse (R3DError) vertices that are not (V, 3) numbers or faces that are not (F, 3) integer
    indices in [0, V): a face out of range would crash the reward, not describe a shape."""
    if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.dtype.kind not in "iuf":
        raise R3DError(f"bad mesh: vertices must be (V, 3) numbers, got {vertices.dtype} {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise R3DError(f"bad mesh: faces must be (F, 3) integers, got {faces.dtype} {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise R3DError(
            f"bad mesh: face indices span [{faces.min()}, {faces.max()}] but there are {len(vertices)} vertices"
        )


def decode_artifact(obj: Any) -> Any:
    """Inverse of :func:`encode_artifact` (server side); malformed input → R3DError."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise R3DError(f"an artifact must be an object or null, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "mesh":
        import trimesh

        fmt = obj.get("format")
        if fmt == "arrays":
            vertices, faces = decode_array(obj.get("vertices")), decode_array(obj.get("faces"))
            check_mesh_arrays(vertices, faces)
            return trimesh.Trimesh(vertices, faces, process=False)
        if fmt in ("ply", "glb"):
            try:
                data = io.BytesIO(_b64(obj["data"]))
                mesh = trimesh.load(data, file_type=fmt, process=False, force="mesh")
            except Exception as exc:  # trimesh raises anything on corrupt files
                raise R3DError(f"bad {fmt} mesh ({type(exc).__name__}: {exc})") from None
            check_mesh_arrays(np.asarray(mesh.vertices), np.asarray(mesh.faces))
            return mesh
        raise R3DError(f"unknown mesh format {fmt!r}; use one of {', '.join(MESH_FORMATS)}")
    if kind == "image":
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(_b64(obj["data"])))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:  # checked before the pixels are decompressed
                raise ValueError(f"{width}×{height} pixels exceed the limit of {MAX_IMAGE_PIXELS}")
            image.load()
        except Exception as exc:
            raise R3DError(f"bad image ({type(exc).__name__}: {exc})") from None
        return image
    if kind == "motion":
        from r3d.motion.artifacts import Motion

        features, fps = decode_array(obj.get("features")), obj.get("fps", 20)
        if features.ndim != 2 or not isinstance(fps, int) or isinstance(fps, bool) or fps <= 0:
            raise R3DError(
                f"bad motion: features must be (T, D) and fps a positive integer, got "
                f"shape {features.shape} and fps {fps!r}"
            )
        return Motion(features, fps=fps)
    if kind in ("tensor", "array"):
        array = decode_array(obj.get("array"))
        return torch.from_numpy(array) if kind == "tensor" else array
    raise R3DError(f"unknown artifact type {kind!r}; use mesh, image, motion, tensor or array")


# ---------------------------------------------------------------------------------------------- http


def _request(
    url: str, body: bytes | None, timeout_s: float, headers: dict[str, str]
) -> tuple[Any, str | None, bool, float | None]:
    """One HTTP attempt (POST with ``body``, else GET) → (json, error, retryable, retry_after_s)."""
    raw, error, retryable, wait = http_attempt(url, body, headers, timeout_s)
    if raw is None:
        return None, error, retryable, wait
    try:
        return json.loads(raw), None, False, None
    except ValueError as exc:
        return None, f"malformed response (not JSON: {str(exc)[:80]})", True, None


class RemoteReward:
    """Client of a reward served over HTTP (see the module docstring).

    Args:
        url: the scoring endpoint, e.g. ``http://host:8000/score``.
        name: the reward's name in logs; None asks the server (``GET /info``) for its name, direction
            and range.
        higher_is_better, value_range: metadata when ``name`` is given (defaults True, (0, 1)).
        mesh_format: ``arrays`` (exact), ``ply`` or ``glb``.
        batch_size: artifacts per request; concurrency: requests in flight at once.
        timeout_s, retries, backoff_s, max_backoff_s: per-request timeout; extra attempts after a
            retryable failure; first retry delay, doubled each attempt, capped.
        api_key_env: environment variable holding a bearer token (sent, never logged); None sends none.
    """

    differentiable = False

    def __init__(
        self,
        url: str,
        name: str | None = None,
        higher_is_better: bool | None = None,
        value_range: Sequence[float] | None = None,
        mesh_format: str = "arrays",
        batch_size: int = 16,
        concurrency: int = 4,
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        api_key_env: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise R3DError(f"remote reward: url must be http(s)://host[:port]/path, got {url!r}")
        if mesh_format not in MESH_FORMATS:
            raise R3DError(f"remote reward: mesh_format must be one of {', '.join(MESH_FORMATS)}")
        if batch_size < 1 or concurrency < 1 or retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise R3DError(
                "remote reward: batch_size and concurrency must be >= 1, retries >= 0, timeout_s > 0"
            )
        self.url, self.mesh_format = url, mesh_format
        self.batch_size, self.concurrency = int(batch_size), int(concurrency)
        self.timeout_s, self.retries = float(timeout_s), int(retries)
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self._headers = {"Content-Type": "application/json"}
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise R3DError(f"remote reward: environment variable {api_key_env} is not set")
            self._headers["Authorization"] = f"Bearer {key}"
        if name is None:
            info = self._call(urllib.parse.urljoin(url, "info"), None)
            try:
                name, higher_is_better = str(info["name"]), bool(info["higher_is_better"])
                value_range = info["value_range"]
            except (KeyError, TypeError) as exc:
                raise R3DError(f"remote reward: {url} /info lacks {exc}; give the name option") from None
        self.name = name
        self.higher_is_better = True if higher_is_better is None else bool(higher_is_better)
        low, high = value_range if value_range is not None else (0.0, 1.0)
        self.value_range = (float(low), float(high))

    def __repr__(self) -> str:
        return f"RemoteReward(name={self.name!r}, url={self.url!r})"

    def _call(self, url: str, payload: dict[str, Any] | None) -> Any:
        """POST ``payload`` (GET when None) with retries; the decoded JSON answer, or R3DError."""
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        answer, error, attempts = with_retries(
            lambda: _request(url, body, self.timeout_s, self._headers),
            self.retries,
            self.backoff_s,
            self.max_backoff_s,
            "remote reward request",
        )
        if error is not None:
            what = getattr(self, "name", None) or "remote"
            raise R3DError(f"reward '{what}' at {url}: {error} (after {attempts} request(s))")
        return answer

    def _score_batch(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, list[float]]:
        payload = {
            "prompts": list(prompts),
            "artifacts": [encode_artifact(a, self.mesh_format) for a in artifacts],
        }
        answer = self._call(self.url, payload)
        where = f"reward '{self.name}' at {self.url}"
        scores = answer.get("scores") if isinstance(answer, dict) else None
        headline = answer.get("name") if isinstance(answer, dict) else None
        if not isinstance(scores, dict) or headline not in scores:
            raise R3DError(f"{where}: the answer needs 'name' and 'scores' with that name")
        out = {}
        for key, values in scores.items():
            if not isinstance(values, list) or len(values) != len(artifacts):
                raise R3DError(f"{where}: component '{key}' must list {len(artifacts)} scores")
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                raise R3DError(f"{where}: component '{key}' holds a non-numeric or non-finite score")
            out[self.name if key == headline else str(key)] = values
        return out

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{name: (B,), component: (B,) ...}`` float32, in the order of ``artifacts``."""
        if len(artifacts) != len(prompts):
            raise R3DError(f"remote reward: {len(artifacts)} artifacts but {len(prompts)} prompts")
        if not artifacts:
            return {self.name: torch.zeros(0)}
        starts = range(0, len(artifacts), self.batch_size)
        jobs = [(artifacts[s : s + self.batch_size], prompts[s : s + self.batch_size]) for s in starts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
            parts = list(pool.map(lambda job: self._score_batch(*job), jobs))
        keys = list(parts[0])
        if any(list(p) != keys for p in parts):
            raise R3DError(f"reward '{self.name}' at {self.url}: requests answered different components")
        return {k: torch.tensor([v for p in parts for v in p[k]], dtype=torch.float32) for k in keys}
