"""``fetch-weights`` against a hostile hub (a loopback server): path traversal in the listing, no or
misleading ETags, tampered bytes. Issue #19, item 1."""

from __future__ import annotations

import hashlib
import os

import pytest
from fake_hub import FakeHub
from huggingface_hub.utils.sha import git_hash

from r3d.cli.main import main
from r3d.core.errors import R3DError
from r3d.core.weights import MANIFEST, WeightSpec, fetch, safe_relpath

QWEN = MANIFEST["qwen-image-edit"]  # a pattern entry: its file names come from the hub's listing


def test_listing_entry_that_climbs_out_of_local_dir_is_refused_before_any_download(
    tmp_path, capsys, monkeypatch
):
    """A listing name ``../../escape/x.json`` matches ``*/*.json`` (fnmatch's ``*`` crosses ``/``); it is
    refused with one line, nothing is requested or written outside --local-dir (or inside it)."""
    evil = "../../escape/x.json"
    files = {"model_index.json": b"{}", "vae/config.json": b"{}", evil: b'{"pwned": true}'}
    local = tmp_path / "a" / "b" / "weights"
    with FakeHub({QWEN.repo_id: files}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        code = main(["fetch-weights", "qwen-image-edit", "--local-dir", str(local)])
        fetched = [p for (m, p, _) in hub.requests if "/resolve/" in p]
    err = capsys.readouterr().err
    assert code == 2 and "leaves the download folder" in err and "Traceback" not in err
    assert fetched == [], "no file may be downloaded from a listing that holds a hostile name"
    assert not (tmp_path / "a" / "escape").exists() and not any(tmp_path.rglob("x.json"))


@pytest.mark.parametrize(
    "name", ["../x", "a/../../x", "/etc/passwd", "a/b/../../../x", "a\\..\\x", "", "a//b", "x\0y"]
)
def test_unsafe_repo_paths_are_refused(name):
    """Every way out of the folder (``..`` parts, absolute, backslashes, empty parts, NUL) is an R3DError."""
    with pytest.raises(R3DError, match="leaves the download folder"):
        safe_relpath(name)


def test_safe_repo_paths_pass_unchanged():
    for name in ("model_index.json", "ckpts/ss_enc.safetensors", "a/b/c..d.json", ".gitattributes"):
        assert safe_relpath(name) == name


def _pinned_spec(monkeypatch, data: bytes) -> str:
    spec = WeightSpec(
        "pinned-test",
        "r3d/pinned-test",
        "a test entry with a sha256 pin",
        "MIT",
        0.0,
        files=("model.safetensors",),
        sha256=(("model.safetensors", hashlib.sha256(data).hexdigest()),),
    )
    monkeypatch.setitem(MANIFEST, spec.name, spec)
    return spec.name


def test_pinned_sha256_catches_a_tampered_file_from_a_server_without_etag(tmp_path, monkeypatch):
    """A server that sends no ETag (no hash to compare with) and other bytes of the right size: the
    manifest's sha256 pin refuses them, nothing lands in place; the genuine bytes then pass."""
    genuine = os.urandom(30_000)
    name = _pinned_spec(monkeypatch, genuine)
    repo = {"model.safetensors": genuine}
    tampered = {"model.safetensors": os.urandom(30_000)}
    with FakeHub({"r3d/pinned-test": repo}, etags="none", serve=tampered) as hub:
        with pytest.raises(R3DError, match="checksum mismatch"):
            fetch(name, local_dir=tmp_path, endpoint=hub.endpoint)
    assert not any(tmp_path.rglob("model.safetensors*"))
    with FakeHub({"r3d/pinned-test": repo}, etags="none") as hub:
        fetch(name, local_dir=tmp_path, endpoint=hub.endpoint)
    assert (tmp_path / "model.safetensors").read_bytes() == genuine


def test_regular_files_are_checked_against_the_hubs_git_sha1_etag(tmp_path):
    """Regular (non-LFS) files carry a git blob sha1 ETag: bytes that do not match it are refused
    (before: only 64-hex ETags were checked, so a tampered config.json went through)."""
    files = {f: os.urandom(2_000) for f in MANIFEST["trellis-ss"].files}
    config = "ckpts/ss_enc_conv3d_16l8_fp16.json"
    with FakeHub(
        {"microsoft/TRELLIS-image-large": files}, etags="git", serve={config: os.urandom(2_000)}
    ) as hub:
        with pytest.raises(R3DError, match="checksum mismatch"):
            fetch("trellis-ss", local_dir=tmp_path, endpoint=hub.endpoint)
    assert not (tmp_path / config).exists()
    with FakeHub({"microsoft/TRELLIS-image-large": files}, etags="git") as hub:
        fetch("trellis-ss", local_dir=tmp_path, endpoint=hub.endpoint)
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data
        assert git_hash(data) == hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
