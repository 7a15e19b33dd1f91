"""Image editors: a diffusers image-editing pipeline called in batches with per-sample seeds.

Any pipeline whose ``__call__`` takes ``image`` and ``prompt`` works (QwenImageEdit, QwenImageEditPlus,
FluxKontext, InstructPix2Pix, ...). Keyword arguments are passed only when the pipeline accepts them;
``extra`` adds pipeline-specific ones. Each sample gets its own ``torch.Generator`` seeded with its
seed, so a sample's edit does not depend on which batch it ran in.
"""

from __future__ import annotations

import gc
import inspect
import math
from typing import Any

import torch
from PIL import Image

from r3d.core.device import resolve_device
from r3d.core.errors import R3DError
from r3d.edit.config import EditorConfig
from r3d.edit.tiny import TINY, tiny_editor
from r3d.edit.vl_inputs import QwenVLInputs

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def _torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or present but built for another torch
        return False
    return True


def _pipeline_class_name(model: str, revision: str | None) -> str:
    from diffusers import DiffusionPipeline

    try:
        config = DiffusionPipeline.load_config(model, revision=revision)
    except Exception as exc:
        raise R3DError(
            f"cannot read the editor pipeline {model!r}: {str(exc).splitlines()[0]} "
            f"(download it first, e.g. `hf download {model}`, or pass a local folder)"
        ) from None
    return str(config.get("_class_name", ""))


def load_pipeline(cfg: EditorConfig) -> tuple[Any, torch.device]:
    """The diffusers pipeline for ``cfg`` on its device (or with CPU offload)."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.model == TINY:
        pipe = tiny_editor() if device.type == "cpu" else tiny_editor().to(dtype=dtype)
    else:
        import diffusers

        class_name = cfg.pipeline or _pipeline_class_name(cfg.model, cfg.revision)
        cls = getattr(diffusers, class_name, None) if cfg.pipeline else diffusers.DiffusionPipeline
        if cls is None:
            raise R3DError(f"editor.pipeline: diffusers has no pipeline class {cfg.pipeline!r}")
        kwargs: dict[str, Any] = {"dtype": dtype}
        if cfg.revision:
            kwargs["revision"] = cfg.revision
        if class_name.startswith("QwenImageEdit") and not _torchvision_imports():
            # transformers' Qwen2VLProcessor needs torchvision; feed the pipeline r3d's equivalent.
            kwargs["processor"] = QwenVLInputs.from_pretrained(
                cfg.model, subfolder="processor", revision=cfg.revision
            )
        try:
            pipe = cls.from_pretrained(cfg.model, **kwargs)
        except (OSError, ValueError) as exc:
            raise R3DError(f"cannot load editor {cfg.model!r}: {str(exc).splitlines()[0]}") from None
    if cfg.cpu_offload and device.type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, device


class Editor:
    """Edits batches of same-size images: ``edit(images, instructions, seeds) -> images``."""

    def __init__(self, pipe: Any, cfg: EditorConfig, device: torch.device) -> None:
        self.pipe = pipe
        self.cfg = cfg
        self.device = device
        self.accepts = set(inspect.signature(pipe.__call__).parameters)
        unknown = sorted(set(cfg.extra) - self.accepts)
        if unknown:
            raise R3DError(f"editor.extra: {type(pipe).__name__} takes no argument(s) {', '.join(unknown)}")
        self.multiple = int(getattr(pipe, "vae_scale_factor", 8)) * 2

    @classmethod
    def load(cls, cfg: EditorConfig) -> Editor:
        pipe, device = load_pipeline(cfg)
        return cls(pipe, cfg, device)

    def output_dims(self, width: int, height: int) -> tuple[int, int] | None:
        """(width, height) with area ≈ output_size² and the input's aspect, multiples of the latent
        grid; None lets the pipeline choose."""
        if self.cfg.output_size is None:
            return None
        ratio = width / height
        target_w = math.sqrt(self.cfg.output_size**2 * ratio)
        target_h = target_w / ratio
        m = self.multiple
        return max(m, round(target_w / m) * m), max(m, round(target_h / m) * m)

    def call_kwargs(
        self, images: list[Image.Image], instructions: list[str], seeds: list[int]
    ) -> dict[str, Any]:
        cfg = self.cfg
        wanted: dict[str, Any] = {
            "image": images,
            "prompt": instructions,
            "num_inference_steps": cfg.num_inference_steps,
            "generator": [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds],
            "output_type": "pil",
        }
        if cfg.negative_prompt is not None:
            wanted["negative_prompt"] = [cfg.negative_prompt] * len(images)
        if cfg.true_cfg_scale is not None:
            wanted["true_cfg_scale"] = cfg.true_cfg_scale
        if cfg.guidance_scale is not None:
            wanted["guidance_scale"] = cfg.guidance_scale
        dims = self.output_dims(*images[0].size)
        if dims is not None:
            wanted["width"], wanted["height"] = dims
        wanted.update(cfg.extra)
        return {k: v for k, v in wanted.items() if k in self.accepts}

    @torch.no_grad()
    def edit(self, images: list[Image.Image], instructions: list[str], seeds: list[int]) -> list[Image.Image]:
        """Edit a batch; all ``images`` must share one size (the pipeline sizes the batch by the first)."""
        if len({im.size for im in images}) > 1:
            raise ValueError("a batch of edits must share one image size")
        output = self.pipe(**self.call_kwargs(images, instructions, seeds))
        result = output.images if hasattr(output, "images") else output[0]
        if len(result) != len(images):
            raise RuntimeError(f"pipeline returned {len(result)} images for {len(images)} inputs")
        return [im.convert("RGB") for im in result]

    def close(self) -> None:
        """Release the pipeline (and its GPU memory) before the judge loads."""
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
