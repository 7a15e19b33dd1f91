"""The manifest of known weights and their download over huggingface_hub.

Each entry names the exact files one backend needs (never a whole repo when a few files will do:
a ``subfolder/*`` pattern can double a download). Single-checkpoint backends list exact paths;
multi-shard diffusers / transformers repos list the patterns of the files they load. Downloads
resume where they stopped (a ``.part`` file continued with an HTTP Range request, also after the
process was killed) and are verified (size, and a content hash: a ``sha256`` pin of the manifest,
else the hub's ETag — sha256 of LFS files, git blob sha1 of regular ones) before an atomic rename.
Every file name (manifest or hub listing) must stay inside the download folder.
``HF_ENDPOINT`` (read at call time) points at a mirror or a local stand-in of the hub.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from r3d.core.errors import R3DError, did_you_mean


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable set of files. ``files`` are exact repo paths; ``patterns`` are globs."""

    name: str
    repo_id: str
    description: str
    licence: str
    approx_size_gb: float
    files: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    gated: bool = False
    used_by: str = ""
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())
    sha256: tuple[tuple[str, str], ...] = ()  # (repo path, hex digest) pins, checked over any ETag


_QWEN_VL_FILES = ("*.json", "*.safetensors", "*.txt", "*.jinja")

MANIFEST: dict[str, WeightSpec] = {
    s.name: s
    for s in [
        WeightSpec(
            "hunyuan3d-2.1",
            "tencent/Hunyuan3D-2.1",
            "Hunyuan3D-2.1 shape model (DiT + VAE + DINOv2 conditioner in one ckpt)",
            "Tencent Hunyuan 3D 2.1 Community (not EU/UK/KR)",
            7.4,
            files=("hunyuan3d-dit-v2-1/config.yaml", "hunyuan3d-dit-v2-1/model.fp16.ckpt"),
            used_by="model: hunyuan3d (recipes/mesh_uni3d.yaml)",
        ),
        WeightSpec(
            "hunyuan3d-2mini",
            "tencent/Hunyuan3D-2mini",
            "Hunyuan3D-2mini shape model (0.6B DiT), smaller for tests on one GPU",
            "Tencent Hunyuan Community",
            2.3,
            files=("hunyuan3d-dit-v2-mini/config.yaml", "hunyuan3d-dit-v2-mini/model.fp16.safetensors"),
            used_by="model: hunyuan3d",
        ),
        *[
            WeightSpec(
                f"uni3d-{size}",
                "BAAI/Uni3D",
                f"Uni3D-{size.upper()} point-cloud encoder (state dict under key 'module')",
                "MIT",
                gb,
                files=(f"modelzoo/uni3d-{size}/model.pt",),
                used_by="reward: uni3d",
                sha256=((f"modelzoo/uni3d-{size}/model.pt", digest),),
            )
            # sizes and LFS sha256 oids of the hub's files (checked against two independent records)
            for size, gb, digest in [
                ("ti", 0.013, "6ff7e821e6997cb814b529e6dc3b224ad8349500471c8517e491685a718688e0"),
                ("s", 0.046, "9a6342fda2245f00fa0200eb7fc667ee67fee9a953c82961e04d242130a3350f"),
                ("b", 0.18, "bb533f918957e939f0e500376bef5166437883443da10fd9adccde0d1b512fba"),
                ("l", 0.61, "540a3cafac52c251cbda1844d109bc598f142b4f5a2118db87cd722b01800c20"),
                ("g", 2.03, "aa1f163bb8c34d7eb4bbb7187e8aaf78879b29df02d08acfbeb0671e2a218c3f"),
            ]
        ],
        WeightSpec(
            "eva02-e-14-plus",
            "timm/eva02_enormous_patch14_plus_clip_224.laion2b_s9b_b144k",
            "EVA02-E-14-plus CLIP (open_clip), the text/image tower Uni3D is aligned with",
            "MIT",
            10.2,
            files=("open_clip_pytorch_model.bin", "open_clip_config.json"),
            used_by="reward: uni3d",
        ),
        WeightSpec(
            "trellis-ss",
            "microsoft/TRELLIS-image-large",
            "TRELLIS sparse-structure encoder and decoder (64³ occupancy VAE)",
            "MIT",
            0.3,
            files=(
                "ckpts/ss_enc_conv3d_16l8_fp16.json",
                "ckpts/ss_enc_conv3d_16l8_fp16.safetensors",
                "ckpts/ss_dec_conv3d_16l8_fp16.json",
                "ckpts/ss_dec_conv3d_16l8_fp16.safetensors",
            ),
            used_by="r3d train-vqvae --pretrained DIR/ckpts/ss_{enc,dec}_conv3d_16l8_fp16",
        ),
        WeightSpec(
            "qwen-image-edit",
            "Qwen/Qwen-Image-Edit",
            "Qwen-Image-Edit diffusers pipeline (20B MMDiT + Qwen2.5-VL-7B + VAE)",
            "Apache-2.0",
            57.7,
            patterns=("model_index.json", "*/*.json", "*/*.safetensors", "tokenizer/*", "processor/*"),
            used_by="r3d bench-edit --editor qwen-image-edit",
        ),
        *[
            WeightSpec(
                f"qwen3-vl-{tag.lower()}",
                f"Qwen/Qwen3-VL-{tag}-Instruct",
                f"Qwen3-VL-{tag}-Instruct judge (transformers)",
                "Apache-2.0",
                gb,
                patterns=_QWEN_VL_FILES,
                used_by="r3d bench-edit --judge",
            )
            for tag, gb in [("2B", 4.3), ("4B", 8.9), ("8B", 17.5), ("30B-A3B", 62.0)]
        ],
    ]
}


# Family names → the member a recipe uses by default (shown by ``r3d fetch-weights --list``).
ALIASES: dict[str, str] = {
    "hunyuan3d": "hunyuan3d-2.1",
    "uni3d": "uni3d-g",
    "trellis": "trellis-ss",
    "qwen3-vl": "qwen3-vl-30b-a3b",  # the judge of recipes/bench_edit_qwen.yaml
}


def get_spec(name: str) -> WeightSpec:
    """The manifest entry for ``name`` or a family alias (``hunyuan3d`` → ``hunyuan3d-2.1``)."""
    name = ALIASES.get(name.lower(), name)
    if name in MANIFEST:
        return MANIFEST[name]
    raise R3DError(
        f"unknown weights '{name}'{did_you_mean(name, [*MANIFEST, *ALIASES])} (r3d fetch-weights --list shows all)"
    )


def default_dir(name: str) -> Path:
    """Where ``fetch`` puts ``name`` without ``--local-dir``: ``$R3D_HOME/weights/NAME`` (~/.cache/r3d)."""
    home = Path(os.environ.get("R3D_HOME", Path.home() / ".cache" / "r3d"))
    return home / "weights" / name


def status(spec: WeightSpec, local_dir: str | Path | None = None) -> str:
    """ "present", "partial" or "missing" (pattern entries: present once a completed listing is there)."""
    folder = Path(local_dir) if local_dir is not None else default_dir(spec.name)
    if not spec.files:
        return "present" if (folder / _COMPLETE).is_file() else "missing"
    have = sum((folder / f).is_file() for f in spec.files)
    return "present" if have == len(spec.files) else "partial" if have else "missing"


_COMPLETE = ".r3d-complete"
_CHUNK = 1 << 20


def safe_relpath(name: str) -> str:
    """``name`` (a repo path from the manifest or the hub's listing) if it stays inside the download
    folder: relative, no ``..`` part, no backslash or NUL; otherwise an R3DError (a hostile listing
    must not write outside ``--local-dir``)."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or "\0" in name or ".." in parts or "" in parts:
        raise R3DError(f"refusing to download {name!r}: the path leaves the download folder")
    return name


def _hashes(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file in one pass: the hub's ETag of LFS / regular files."""
    import hashlib

    sha256, git = hashlib.sha256(), hashlib.sha1(usedforsecurity=False)
    git.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            sha256.update(block)
            git.update(block)
    return sha256.hexdigest(), git.hexdigest()


def _expected_hash(pinned: str | None, etag: str | None) -> tuple[int, str] | None:
    """(index into :func:`_hashes`, hex digest) to check: a manifest pin, else a sha256 ETag (LFS
    file), else a 40-hex ETag (git blob sha1 of a regular file); None when nothing is verifiable."""
    if pinned:
        return 0, pinned.lower()
    etag = (etag or "").strip('"').lower()
    if all(c in "0123456789abcdef" for c in etag) and len(etag) in (64, 40):
        return (0 if len(etag) == 64 else 1), etag
    return None


def _download_file(
    url: str, dest: Path, headers: dict[str, str], endpoint: str | None, pinned: str | None = None
) -> None:
    """Stream ``url`` into ``dest`` through ``dest.part``, continuing a previous ``.part`` with Range.

    The size and a content hash (``pinned`` sha256, else the hub's ETag: sha256 for LFS files, git
    blob sha1 for regular ones) are checked before the atomic rename, so ``dest`` is either absent or
    complete. A server that sends neither gets the size check only.
    """
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.utils import get_session, hf_raise_for_status

    meta = get_hf_file_metadata(url, headers=headers, endpoint=endpoint)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.is_file() else 0
    if meta.size is not None and start > meta.size:
        part.unlink()
        start = 0
    if meta.size is None or start < meta.size:
        request_headers = dict(headers)
        if start:
            request_headers["Range"] = f"bytes={start}-"
        with get_session().stream(
            "GET", meta.location, headers=request_headers, follow_redirects=True
        ) as response:
            hf_raise_for_status(response)
            mode = "ab" if start and response.status_code == 206 else "wb"
            with open(part, mode) as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
    size = part.stat().st_size
    if meta.size is not None and size != meta.size:
        raise OSError(
            f"incomplete download of {dest.name}: {size} of {meta.size} bytes (run again to resume)"
        )
    expected = _expected_hash(pinned, meta.etag)
    if expected is not None and _hashes(part)[expected[0]] != expected[1]:
        part.unlink()
        raise OSError(f"checksum mismatch for {dest.name}: the partial file was discarded, run again")
    os.replace(part, dest)


def fetch(
    name: str,
    local_dir: str | Path | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> Path:
    """Download the files of ``name`` into ``local_dir`` (default :func:`default_dir`); returns it.

    Files already complete are skipped; an interrupted file continues from its ``.part`` (HTTP
    Range). Pattern entries list the repo first and fetch the matching files. Errors become
    one-line ``R3DError`` messages.
    """
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    spec = get_spec(name)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    folder = Path(local_dir) if local_dir is not None else default_dir(spec.name)
    try:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            from huggingface_hub.errors import OfflineModeIsEnabled

            raise OfflineModeIsEnabled("offline")
        files = list(spec.files)
        if spec.patterns:
            listing = HfApi(endpoint=endpoint, token=token).model_info(spec.repo_id, revision=revision)
            names = [s.rfilename for s in listing.siblings or []]
            files += [
                n for n in names if any(fnmatch.fnmatch(n, p) for p in spec.patterns) and n not in files
            ]
        for filename in files:
            safe_relpath(filename)
        headers = build_hf_headers(token=token)
        headers["Accept-Encoding"] = "identity"
        pins = dict(spec.sha256)
        for filename in files:
            dest = folder / filename
            if dest.is_file():
                continue
            url = hf_hub_url(spec.repo_id, filename, revision=revision, endpoint=endpoint)
            _download_file(url, dest, headers, endpoint, pins.get(filename))
        if spec.patterns:
            (folder / _COMPLETE).write_text("\n".join(files) + "\n")
        return folder
    except R3DError:
        raise
    except Exception as exc:  # huggingface_hub / httpx raise many error types; map the common ones
        raise R3DError(explain_download_error(exc, spec)) from None


def explain_download_error(exc: Exception, spec: WeightSpec) -> str:
    from huggingface_hub import errors

    kind = type(exc).__name__
    if isinstance(exc, errors.GatedRepoError):
        return (
            f"{spec.repo_id} is gated: accept its licence on the hub page, then log in "
            "(`hf auth login`) or set HF_TOKEN"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{spec.repo_id} not found or private (check the name, or set HF_TOKEN for a private repo)"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{spec.repo_id}: revision not found"
    if isinstance(exc, errors.LocalEntryNotFoundError | errors.OfflineModeIsEnabled):
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            return f"cannot download {spec.name}: HF_HUB_OFFLINE=1 is set (unset it, or copy the files into --local-dir)"
        return (
            f"cannot reach the hub to download {spec.name}; you look offline — run again when online "
            "(downloads resume), or set HF_ENDPOINT to a mirror"
        )
    if isinstance(exc, errors.EntryNotFoundError):
        return f"{spec.repo_id}: a listed file is missing on the hub ({exc})".splitlines()[0]
    text = str(exc).splitlines()[0] if str(exc) else kind
    if (
        any(w in text.lower() for w in ("connect", "resolve", "timed out", "network", "unreachable"))
        or "Connect" in kind
    ):
        return (
            f"cannot reach the hub to download {spec.name} ({text}); you look offline — "
            "run again when online (downloads resume), or set HF_ENDPOINT to a mirror"
        )
    return f"download of {spec.name} failed: {kind}: {text}"
