"""``r3d fetch-weights`` against a loopback stand-in of the hub."""

import os

import pytest
from fake_hub import FakeHub

from r3d.cli.main import main
from r3d.core.errors import R3DError
from r3d.core.weights import MANIFEST, fetch, status

TRELLIS = MANIFEST["trellis-ss"]


def trellis_files(size=50_000):
    return {f: os.urandom(size) for f in TRELLIS.files} | {"ckpts/unrelated_big_file.safetensors": b"x" * 10}


def test_fetch_downloads_exactly_the_listed_files(tmp_path):
    """Only the manifest's files arrive, byte-identical, in the repo layout; status becomes present."""
    files = trellis_files()
    with FakeHub({TRELLIS.repo_id: files}) as hub:
        assert status(TRELLIS, tmp_path) == "missing"
        folder = fetch("trellis-ss", local_dir=tmp_path, endpoint=hub.endpoint)
    for name in TRELLIS.files:
        assert (folder / name).read_bytes() == files[name]
    assert not (tmp_path / "ckpts/unrelated_big_file.safetensors").exists()
    assert status(TRELLIS, tmp_path) == "present"


def test_dropped_connection_still_ends_with_an_intact_file(tmp_path):
    """A connection cut mid-file fails with a one-line error, leaves no corrupt file, and resumes."""
    files = trellis_files(size=200_000)
    big = "ckpts/ss_enc_conv3d_16l8_fp16.safetensors"
    with FakeHub({TRELLIS.repo_id: files}, cut_first={big: 120_000}) as hub:
        with pytest.raises(R3DError):
            fetch("trellis-ss", local_dir=tmp_path, endpoint=hub.endpoint)
        assert not (tmp_path / big).exists()
        fetch("trellis-ss", local_dir=tmp_path, endpoint=hub.endpoint)
        ranges = [r for (m, p, r) in hub.requests if m == "GET" and p.endswith(big)]
    assert (tmp_path / big).read_bytes() == files[big]
    assert ranges[-1] is not None and ranges[-1].startswith("bytes=")


def test_download_left_by_a_killed_process_resumes_with_a_range_request(tmp_path):
    """A partial ``.part`` file (what a killed download leaves) is continued, not restarted."""
    files = trellis_files(size=200_000)
    big = "ckpts/ss_enc_conv3d_16l8_fp16.safetensors"
    partial = tmp_path / (big + ".part")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(files[big][:120_000])
    with FakeHub({TRELLIS.repo_id: files}) as hub:
        fetch("trellis-ss", local_dir=tmp_path, endpoint=hub.endpoint)
        ranges = [r for (m, p, r) in hub.requests if m == "GET" and p.endswith(big)]
    assert ranges == ["bytes=120000-"]
    assert (tmp_path / big).read_bytes() == files[big]
    assert not partial.exists()


def test_corrupt_partial_file_is_detected_and_discarded(tmp_path):
    """A .part whose bytes do not match the hub's sha256 is never renamed into place."""
    files = trellis_files(size=50_000)
    big = "ckpts/ss_enc_conv3d_16l8_fp16.safetensors"
    partial = tmp_path / (big + ".part")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 20_000)
    with FakeHub({TRELLIS.repo_id: files}) as hub:
        with pytest.raises(R3DError, match="checksum mismatch"):
            fetch("trellis-ss", local_dir=tmp_path, endpoint=hub.endpoint)
        assert not (tmp_path / big).exists() and not partial.exists()
        fetch("trellis-ss", local_dir=tmp_path, endpoint=hub.endpoint)
    assert (tmp_path / big).read_bytes() == files[big]


def test_gated_repo_explains_how_to_get_access(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    with FakeHub({TRELLIS.repo_id: trellis_files()}, gated={TRELLIS.repo_id}) as hub:
        with pytest.raises(R3DError, match="gated.*HF_TOKEN"):
            fetch("trellis-ss", local_dir=tmp_path, endpoint=hub.endpoint)


def test_missing_file_and_unknown_name(tmp_path):
    files = trellis_files()
    del files[TRELLIS.files[1]]
    with FakeHub({TRELLIS.repo_id: files}) as hub:
        with pytest.raises(R3DError, match="missing on the hub"):
            fetch("trellis-ss", local_dir=tmp_path, endpoint=hub.endpoint)
    with pytest.raises(R3DError, match="did you mean 'trellis-ss'"):
        fetch("trelis-ss")


def test_pattern_entries_use_the_snapshot_api(tmp_path):
    """Multi-file repos (patterns) download the matching files only, via the repo listing."""
    spec = MANIFEST["qwen3-vl-2b"]
    files = {
        "config.json": b"{}",
        "model.safetensors": b"w" * 100,
        "README.md": b"readme",
        "merges.txt": b"m",
    }
    with FakeHub({spec.repo_id: files}) as hub:
        folder = fetch("qwen3-vl-2b", local_dir=tmp_path, endpoint=hub.endpoint)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    assert names == ["config.json", "merges.txt", "model.safetensors"]
    assert status(spec, folder) == "present"


def test_cli_offline_message_and_list(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["fetch-weights", "trellis-ss", "--local-dir", str(tmp_path)]) == 2
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err
    assert main(["fetch-weights", "--list", "--local-dir", str(tmp_path)]) == 0
    assert "trellis-ss" in capsys.readouterr().out
