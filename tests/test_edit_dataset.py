"""bench-edit data: up-front validation with per-record errors, selection, sharding, safe names."""

import base64
import io
import json

import pytest
from PIL import Image

from r3d.core.errors import R3DError
from r3d.edit.dataset import (
    CATEGORIES,
    load_dataset,
    parse_shard,
    safe_filename,
    select_samples,
    shard_samples,
)


def _png_b64(colour="red"):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_shipped_sample_is_valid_and_covers_every_category():
    """The quickstart benchmark loads cleanly, mixes path and base64 images, and has all five categories."""
    data = load_dataset()
    assert not data.issues and len(data.samples) == 10
    assert sorted({s.category for s in data.samples}) == sorted(CATEGORIES)
    assert any(s.image_bytes for s in data.samples) and any(s.image_path for s in data.samples)
    assert all(s.load_image().size == (256, 256) for s in data.samples)


def test_every_bad_record_is_reported_with_its_reason(tmp_path):
    """Bad base64, missing fields, unknown categories, bad JSON, missing files and duplicate ids are all
    caught before anything runs, each with its line, and the good records survive."""
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    good = {
        "id": "a",
        "category": "Physics",
        "instruction": "drop it",
        "image": "ok.png",
        "description": "a box",
    }
    rows = [
        good,
        {
            "id": "b",
            "category": "social",
            "instruction": "x",
            "image": "data:image/png;base64,@@not-base64@@",
        },
        {"id": "c", "category": "causal", "image": _png_b64()},
        {"id": "d", "category": "phsyics", "instruction": "x", "image": _png_b64()},
        "{not json",
        {"id": "e", "category": "social", "instruction": "x", "image": "missing.png"},
        {**good, "category": "referential"},
        {
            "id": "f",
            "category": "social",
            "instruction": "x",
            "image": base64.b64encode(b"hello world!").decode(),
        },
        {"id": 7, "category": "environment", "instruction": "x", "image": _png_b64("blue"), "seed": 3},
    ]
    data = load_dataset(_write_jsonl(tmp_path / "d.jsonl", rows))
    assert [s.id for s in data.samples] == ["a", "7"]
    assert data.samples[0].category == "physics" and data.samples[1].seed == 3
    kinds = {str(issue).split(":")[0]: issue.kind for issue in data.issues}
    assert kinds == {
        "line 2 (id 'b')": "bad base64",
        "line 3 (id 'c')": "missing field",
        "line 4 (id 'd')": "unknown category",
        "line 5": "bad JSON",
        "line 6 (id 'e')": "missing image",
        "line 7 (id 'a')": "duplicate id",
        "line 8 (id 'f')": "unreadable image",
    }
    assert "did you mean 'physics'" in next(str(i) for i in data.issues if i.kind == "unknown category")
    assert data.summary().startswith("9 records in d.jsonl: 2 valid, 7 invalid (1 bad JSON, 1 bad base64")


def test_json_list_and_samples_wrapper(tmp_path):
    """A .json file may hold a list or {"samples": [...]}; both read the same records."""
    rec = {"id": "x", "category": "causal", "instruction": "melt it", "image": _png_b64()}
    (tmp_path / "a.json").write_text(json.dumps([rec]))
    (tmp_path / "b.json").write_text(json.dumps({"samples": [rec]}))
    assert (
        load_dataset(tmp_path / "a.json").samples[0].id
        == load_dataset(tmp_path / "b.json").samples[0].id
        == "x"
    )
    (tmp_path / "c.json").write_text("{oops")
    with pytest.raises(R3DError, match="not valid JSON"):
        load_dataset(tmp_path / "c.json")
    with pytest.raises(R3DError, match="not found"):
        load_dataset(tmp_path / "nope.jsonl")


def test_selection_limit_and_shards_partition_the_data():
    """Categories filter in data order, limit takes the first N, and shards i/n partition the selection."""
    samples = load_dataset().samples
    physics = select_samples(samples, ["physics", " causal "])
    assert [s.category for s in physics] == ["physics", "causal", "physics", "causal"]
    assert len(select_samples(samples, None, 3)) == 3
    shards = [shard_samples(samples, parse_shard(f"{i}/3")) for i in range(3)]
    assert sorted(s.id for part in shards for s in part) == sorted(s.id for s in samples)
    assert not set(s.id for s in shards[0]) & set(s.id for s in shards[1])
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(R3DError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(R3DError, match="unknown category"):
        select_samples(samples, ["chemistry"])


def test_safe_filenames_are_clean_and_collision_free():
    """Ids become [A-Za-z0-9._-] names; ids that needed changes get a hash so they never collide."""
    assert safe_filename("physics-ball_1.v2") == "physics-ball_1.v2"
    a, b = safe_filename("../etc/passwd"), safe_filename("..:etc:passwd")
    assert "/" not in a and not a.startswith(".") and a != b
    assert safe_filename("über cup") != safe_filename("_ber cup")
    assert len(safe_filename("x" * 500)) <= 89
