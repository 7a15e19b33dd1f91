"""The ``bench-edit`` recipe schema. Defaults are the seed plan with the real models.

Seed plan: ``Qwen/Qwen-Image-Edit`` (diffusers ``QwenImageEditPipeline``, bf16 on GPU, 50 steps,
true_cfg_scale 4.0, negative prompt " " — CFG runs only with a negative prompt and a scale > 1 —
seed 0) edits every image; ``Qwen/Qwen3-VL-30B-A3B-Instruct`` judges each edit 0–10 with its
category's prompt. ``model: tiny`` selects r3d's offline tiny editor / judge (see ``r3d.edit.tiny``);
the packaged recipe ``r3d/assets/bench_edit/tiny.yaml`` uses both and is the CLI's default.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, model_validator

from r3d.chat.client import OpenAIEndpoint
from r3d.core.recipe import StrictModel


def fingerprint(data: dict[str, Any]) -> str:
    """Short stable hash of a JSON-able mapping (sorted keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:12]


class EditorConfig(StrictModel):
    """Image editor: any diffusers image-editing pipeline (hub id or local folder) or ``tiny``."""

    model: str = Field("Qwen/Qwen-Image-Edit", description="hub id, local pipeline folder, or 'tiny'")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    pipeline: str | None = Field(None, description="diffusers pipeline class; None = from model_index.json")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto = bfloat16 on CUDA, float32 on CPU"
    )
    device: str = Field("auto", description="auto = cuda if available, else cpu")
    cpu_offload: bool = Field(False, description="diffusers model CPU offload (GPUs with too little memory)")
    num_inference_steps: int = Field(50, ge=1)
    true_cfg_scale: float | None = Field(
        4.0, description="Qwen-Image CFG scale (used if the pipeline takes it)"
    )
    guidance_scale: float | None = Field(None, description="guidance_scale for pipelines that take one")
    negative_prompt: str | None = Field(" ", description="' ' enables Qwen-Image CFG; None disables it")
    seed: int = Field(0, ge=0, description="per-sample generator seed (a record's own 'seed' wins)")
    batch_size: int = Field(1, ge=1, description="images per pipeline call (same-size images only)")
    output_size: int | None = Field(
        None,
        ge=16,
        description="side of a square with the output's pixel area (aspect follows the input); None = pipeline default",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for the pipeline call"
    )

    def fingerprint(self) -> str:
        """Hash of everything that changes the edited pixels (not batch size, device or offload)."""
        return fingerprint(self.model_dump(exclude={"seed", "batch_size", "device", "cpu_offload"}))


class JudgeConfig(StrictModel):
    """Vision-language judge: a local transformers model or an OpenAI-compatible endpoint."""

    backend: Literal["local", "openai"] = "local"
    model: str = Field(
        "Qwen/Qwen3-VL-30B-A3B-Instruct",
        description="hub id / local folder / 'tiny' (local); served name (openai)",
    )
    revision: str | None = None
    protocol: Literal["single", "viescore"] = Field(
        "single", description="single 0-10 score or VIEScore SC/PQ"
    )
    score_mode: Literal["generate", "expected"] = Field(
        "generate",
        description="parse generated text, or expected score from digit-token probabilities (local)",
    )
    compare_original: bool = Field(False, description="single protocol: show the original image too")
    strict_retry: bool = Field(
        True, description="re-ask once with a stricter prompt when an answer has no score"
    )
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(4, ge=1, description="samples per judge batch (local: left-padded)")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device: str = Field("auto", description="auto = all visible GPUs (device_map auto), else cpu")
    api: OpenAIEndpoint = Field(default_factory=OpenAIEndpoint)

    @model_validator(mode="after")
    def _expected_needs_local(self) -> JudgeConfig:
        if self.score_mode == "expected" and self.backend != "local":
            raise ValueError(
                "score_mode 'expected' reads digit-token probabilities and needs backend 'local'"
            )
        return self

    def fingerprint(self, prompt_version: str) -> str:
        """Hash of everything that changes a verdict (not batch size, device or endpoint address)."""
        data = self.model_dump(exclude={"batch_size", "device", "api"})
        return fingerprint({**data, "prompts": prompt_version})


class BenchEditConfig(StrictModel):
    """A bench-edit run: data selection, editor and judge."""

    data: str | None = Field(
        None, description="JSON/JSONL benchmark file; None = the shipped sample benchmark"
    )
    categories: list[str] | None = Field(None, description="keep only these categories")
    limit: int | None = Field(None, ge=0, description="keep the first N samples (after the category filter)")
    shard: str | None = Field(None, description="i/n: this process does every n-th sample from i")
    skip_invalid: bool = Field(False, description="drop invalid records instead of stopping")
    allow_outside_images: bool = Field(
        False, description="accept image paths outside the data file's folder (absolute or ../)"
    )
    editor: EditorConfig = Field(default_factory=EditorConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
