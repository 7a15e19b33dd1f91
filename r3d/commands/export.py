"""``r3d export``: a run's LoRA as a peft adapter folder and, with ``merge``, the backend's own weights.

The adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) is what
``peft.PeftModel.from_pretrained(policy.network, folder)`` loads. Merged weights are written by the
backend: its policy factory declares two hooks (:class:`r3d.core.policy.FactoryHooks`):

- ``save_merged(policy, folder, options, dtype) -> Path``: write ``policy.network`` (the
  adapter already merged into it) in the backend's native layout under ``folder``; ``options`` are
  the factory options the run used, ``dtype`` the storage dtype (None = the backend's default).
  It returns the path to give ``r3d sample --model-weights``.
- ``weights_option``: the factory option that takes that path (``weights``, ``model_dir``…).
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from r3d.core.checkpoint import ADAPTER_FILE, load_state
from r3d.core.config import GRPORecipe
from r3d.core.ema import copy_into, trainable
from r3d.core.errors import R3DError
from r3d.core.io import _UMASK
from r3d.core.policy import factory_hooks
from r3d.core.recipe import read_yaml, validate
from r3d.core.registry import POLICIES, check_options, resolve

CONFIG_FILE = "adapter_config.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def merged_writer(factory: Callable[..., Any], name: str) -> Callable[..., Path]:
    """The factory's ``save_merged`` hook, or a one-line R3DError when the backend has none."""
    writer = factory_hooks(factory).save_merged
    if writer is None:
        raise R3DError(
            f"model '{name}' has no merged-weights writer; export without --merge and load the "
            "adapter folder with peft"
        )
    return writer


def model_weights_options(name: str, path: Path) -> dict[str, Any]:
    """The factory options that load merged weights from ``path`` (``r3d sample --model-weights``)."""
    factory = resolve(name, POLICIES, "policy")
    option = factory_hooks(factory).weights_option
    if option is None:
        raise R3DError(f"model '{name}' cannot load merged weights (its loader names no weights option)")
    if not path.exists():
        raise R3DError(f"--model-weights {path}: no such file or folder")
    return {option: str(path)}


def _cpu_fp32_options(factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The run's factory options, on the CPU and in fp32 where the factory has those options: merging
    is exact there and needs no accelerator."""
    params = inspect.signature(factory).parameters
    out = dict(options)
    if "device" in params:
        out["device"] = "cpu"
    if "dtype" in params:
        out["dtype"] = "float32"
    return out


def _run_recipe(run_dir: Path) -> tuple[GRPORecipe, Path]:
    """The run's recipe and checkpoint folder; ``run_dir`` may also be a checkpoint folder inside a run
    (e.g. ``RUN/checkpoint_best_gold``, kept by the over-optimisation guard)."""
    if (run_dir / ADAPTER_FILE).is_file() and (run_dir.parent / "recipe.yaml").is_file():
        run_dir, ckpt = run_dir.parent, run_dir
    else:
        ckpt = run_dir / "checkpoint"
    if not (run_dir / "recipe.yaml").is_file():
        raise R3DError(f"{run_dir} is not a run folder (no recipe.yaml)")
    if not (ckpt / ADAPTER_FILE).is_file() or not (ckpt / CONFIG_FILE).is_file():
        raise R3DError(f"{run_dir} has no adapter checkpoint yet (checkpoint/{ADAPTER_FILE})")
    cfg = validate(read_yaml(run_dir / "recipe.yaml"), GRPORecipe, source=str(run_dir / "recipe.yaml"))
    return cfg, ckpt


def _usual_permissions(files: list[Path]) -> None:
    """Writers (safetensors, tempfile) may create 0600 files; give them the umask's permissions."""
    for f in files:
        if f.is_file():
            os.chmod(f, 0o666 & ~_UMASK)


def _publish(files: list[Path], out: Path) -> None:
    """Move ``files`` into ``out``, each replacing its namesake in one rename."""
    _usual_permissions(files)
    for f in files:
        os.replace(f, out / f.name)


def _replace_folder(tmp: Path, target: Path) -> None:
    """Swap ``tmp`` in as ``target``: the old folder stays until the new one is complete."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def export_run(
    run_dir: str | Path, out: str | Path, merge: bool = False, ema: bool = False, dtype: str = "auto"
) -> dict[str, Any]:
    """Write ``out/adapter_config.json`` + ``out/adapter_model.safetensors`` (the run's LoRA, or its EMA
    with ``ema``) and, with ``merge``, ``out/merged/`` in the backend's format (``dtype``: auto = the
    backend's default, else float32 | float16 | bfloat16). Returns the written paths and the model name."""
    from r3d.commands.runner import load_adapter

    run_dir, out = Path(run_dir), Path(out)
    if dtype != "auto" and dtype not in DTYPES:
        raise R3DError(f"--dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
    cfg, ckpt = _run_recipe(run_dir)
    name = cfg.model.name
    factory = resolve(name, POLICIES, "policy")
    writer = merged_writer(factory, name) if merge else None
    options = _cpu_fp32_options(factory, cfg.model.options)
    check_options(factory, options, f"policy '{name}'")
    policy = factory(**options)
    peft_model = load_adapter(policy, ckpt)
    if ema:
        state = load_state(ckpt)
        if "ema" not in state:
            raise R3DError(f"{run_dir} was trained without train.ema.enabled; export it without --ema")
        copy_into(trainable(peft_model), state["ema"]["weights"])
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"model": name, "adapter": str(out), "merged": None}
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=out))
    try:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        _publish([tmp / CONFIG_FILE, tmp / ADAPTER_FILE], out)
        if writer is not None:
            peft_model.merge_and_unload()  # policy.network now holds W + BA, plain modules
            path = writer(policy, tmp / "merged", options, DTYPES.get(dtype))
            result["merged"] = str(out / "merged" / path.relative_to(tmp / "merged"))
            _usual_permissions(list((tmp / "merged").rglob("*")))
            _replace_folder(tmp / "merged", out / "merged")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result
