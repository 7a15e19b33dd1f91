"""Voxel data for VQ-VAE training: a folder of ``r3d voxelize`` outputs (or TRELLIS voxel PLYs).

Every file is checked when the set is opened: a corrupt, empty or missing file (one that the folder's
``manifest.jsonl`` lists as voxelised but that is gone) is reported in :attr:`VoxelSet.problems` and
left out; it never stops a run. Samples are dense occupancy grids (1, R, R, R) float32, optionally
OR-pooled by ``downsample`` (64³ → 32³ for the tiny CPU recipes) and transformed by one of the grid's
exact symmetries (``zrot``: the 8 rotations/mirrors that keep Z up; ``cube``: all 48).

Batches are a pure function of (seed, step): each epoch is a seeded permutation and each sample's
symmetry is seeded by its position, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from r3d.core.errors import R3DError
from r3d.mesh.voxelize import load_voxels

Augment = Literal["none", "zrot", "cube"]


def symmetries(kind: Augment) -> list[tuple[tuple[int, int, int], tuple[bool, bool, bool]]]:
    """Axis permutations and flips of the grid: none → identity; zrot → 8 (Z fixed); cube → 48."""
    if kind == "none":
        return [((0, 1, 2), (False, False, False))]
    perms = [(0, 1, 2), (1, 0, 2)] if kind == "zrot" else list(itertools.permutations(range(3)))
    flips = [(fx, fy, False) for fx in (False, True) for fy in (False, True)]
    if kind == "cube":
        flips = [(fx, fy, fz) for fx in (False, True) for fy in (False, True) for fz in (False, True)]
    elif kind != "zrot":
        raise R3DError(f"augment must be none, zrot or cube, got {kind!r}")
    return [(p, f) for p in perms for f in flips]


def transform_indices(
    idx: np.ndarray, resolution: int, perm: Sequence[int], flips: Sequence[bool]
) -> np.ndarray:
    """Apply an axis permutation then flips (i → R−1−i) to grid indices (K, 3)."""
    out = idx[:, list(perm)].copy()
    for ax, f in enumerate(flips):
        if f:
            out[:, ax] = resolution - 1 - out[:, ax]
    return out


@dataclass
class VoxelSet:
    """The usable voxel files of a folder and the problems found while opening it."""

    files: list[Path]
    names: list[str]
    resolution: int
    problems: list[dict] = field(default_factory=list)


def scan_voxel_folder(root: str | os.PathLike, resolution: int = 64) -> VoxelSet:
    """List and validate ``root``'s ``*.npz`` (and ``*.ply`` with no ``.npz`` twin) voxel files."""
    root = Path(root)
    if not root.is_dir():
        raise R3DError(f"voxel folder not found: {root} (make one with `r3d voxelize MESHES --out {root}`)")
    npz = {p.stem: p for p in sorted(root.glob("*.npz"))}
    ply = {p.stem: p for p in sorted(root.glob("*.ply")) if p.stem not in npz}
    candidates = {**ply, **npz}
    problems: list[dict] = []
    manifest = root / "manifest.jsonl"
    if manifest.is_file():
        from r3d.core.io import read_jsonl

        listed = {r.get("name") for r in read_jsonl(manifest) if r.get("status") in ("ok", "skipped")}
        for name in sorted(n for n in listed if n and n not in candidates):
            problems.append(
                {"name": name, "file": str(root / f"{name}.npz"), "error": "listed in manifest, missing"}
            )
    files, names = [], []
    for name in sorted(candidates):
        path = candidates[name]
        try:
            idx, _ = load_voxels(path, resolution)
            if len(idx) == 0:
                raise R3DError(f"{path}: no occupied voxel")
        except R3DError as exc:
            problems.append({"name": name, "file": str(path), "error": str(exc)})
            continue
        files.append(path)
        names.append(name)
    return VoxelSet(files, names, resolution, problems)


class VoxelGrids(torch.utils.data.Dataset):
    """Samples addressed by (file index, symmetry index) → occupancy (1, R', R', R') float32."""

    def __init__(
        self, files: Sequence[Path], resolution: int, downsample: int = 1, augment: Augment = "none"
    ):
        if resolution % downsample:
            raise R3DError(f"resolution {resolution} is not divisible by downsample {downsample}")
        self.files, self.resolution, self.downsample = list(files), resolution, downsample
        self.syms = symmetries(augment)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    @property
    def out_resolution(self) -> int:
        return self.resolution // self.downsample

    def indices(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = load_voxels(self.files[i], self.resolution)[0]
        return self._cache[i]

    def __getitem__(self, item: tuple[int, int] | int) -> torch.Tensor:
        i, s = item if isinstance(item, tuple) else (item, 0)
        perm, flips = self.syms[s % len(self.syms)]
        idx = transform_indices(self.indices(i), self.resolution, perm, flips) // self.downsample
        r = self.out_resolution
        grid = torch.zeros(1, r, r, r)
        t = torch.from_numpy(idx)
        grid[0, t[:, 0], t[:, 1], t[:, 2]] = 1.0
        return grid


class StepBatches(torch.utils.data.Sampler):
    """Batches of (file, symmetry) pairs for steps ``start .. stop−1``, a pure function of the seed."""

    def __init__(self, n_files: int, n_syms: int, batch_size: int, seed: int, start: int, stop: int) -> None:
        self.n, self.n_syms, self.bs, self.seed = n_files, n_syms, batch_size, seed
        self.start, self.stop = start, stop

    def _perm(self, epoch: int) -> torch.Tensor:
        if getattr(self, "_epoch", None) != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.n, generator=g)
        return self._order

    def batch(self, step: int) -> list[tuple[int, int]]:
        out = []
        for k in range(step * self.bs, (step + 1) * self.bs):
            epoch, pos = divmod(k, self.n)
            perm = self._perm(epoch)
            sym = torch.Generator().manual_seed(self.seed * 7_919 + k)
            out.append((int(perm[pos]), int(torch.randint(self.n_syms, (1,), generator=sym))))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


def split_holdout(vs: VoxelSet, holdout: Sequence[str], holdout_every: int) -> tuple[list[int], list[int]]:
    """Indices of training and held-out files: named ones plus every ``holdout_every``-th (0 = none)."""
    unknown = [h for h in holdout if h not in vs.names]
    if unknown:
        raise R3DError(f"holdout names not in the voxel folder: {', '.join(unknown)}")
    held = {i for i, n in enumerate(vs.names) if n in set(holdout)}
    if holdout_every > 0:
        held |= set(range(holdout_every - 1, len(vs.names), holdout_every))
    train = [i for i in range(len(vs.names)) if i not in held]
    if not train:
        raise R3DError("every voxel file is held out; nothing is left to train on")
    return train, sorted(held)


def report_json(vs: VoxelSet) -> str:
    return json.dumps({"usable": len(vs.files), "problems": vs.problems}, indent=2)
