"""Model inputs for Qwen-VL models built from an image processor and a tokenizer — no torchvision.

transformers' Qwen-VL *processors* construct a video processor that needs torchvision, which does not
import beside r3d's CPU torch. :class:`QwenVLInputs` does the processor's job for images only:
it runs the (PIL-backend) image processor, repeats each ``<|image_pad|>`` placeholder once per merged
vision token (``grid_t·grid_h·grid_w / merge_size²``), tokenizes with padding and returns
``input_ids``, ``attention_mask``, ``pixel_values``, ``image_grid_thw`` and ``mm_token_type_ids``
(1 on image tokens, 0 elsewhere — Qwen3-VL needs it for its multimodal RoPE). It is callable like
the processor the diffusers Qwen-Image-Edit pipeline expects, so it can stand in for it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature, ProcessorMixin

IMAGE_TOKEN = "<|image_pad|>"
VISION_SPECIAL_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def vision_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the vision special tokens the tokenizer knows (a text-only decode must never emit them)."""
    vocab = tokenizer.get_vocab()
    return [vocab[t] for t in VISION_SPECIAL_TOKENS if t in vocab]


class QwenVLInputs(ProcessorMixin):
    """Image processor + tokenizer → Qwen-VL model inputs (a torchvision-free processor).

    A ``ProcessorMixin`` so that diffusers accepts it wherever a pipeline expects a transformers
    processor; it has no video processor.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        image_token: str = IMAGE_TOKEN,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_processor, tokenizer, **kwargs)
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.merge_size = int(getattr(image_processor, "merge_size", 2))

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, subfolder: str | None = None, **kwargs: Any
    ) -> QwenVLInputs:
        """Load the tokenizer and the PIL-backend image processor saved in ``path[/subfolder]``."""
        from transformers import AutoImageProcessor, AutoTokenizer

        extra = {"subfolder": subfolder} if subfolder else {}
        tokenizer = AutoTokenizer.from_pretrained(str(path), **extra, **kwargs)
        image_processor = AutoImageProcessor.from_pretrained(str(path), backend="pil", **extra, **kwargs)
        return cls(image_processor, tokenizer)

    def save_pretrained(self, path: str | os.PathLike, **_: Any) -> None:
        """Tokenizer files and ``preprocessor_config.json`` side by side, as in the hub's Qwen folders."""
        Path(path).mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path))
        self.image_processor.save_pretrained(str(path))

    def expand_placeholders(self, texts: Sequence[str], image_grid_thw: torch.Tensor) -> list[str]:
        """Repeat each image placeholder by its number of merged vision tokens (images in text order)."""
        counts = (image_grid_thw.prod(dim=-1) // (self.merge_size**2)).tolist()
        if sum(t.count(self.image_token) for t in texts) != len(counts):
            raise ValueError(
                f"{len(counts)} images for {sum(t.count(self.image_token) for t in texts)} placeholders"
            )
        marker = "\x00"
        out, index = [], 0
        for text in texts:
            parts = text.split(self.image_token)
            pieces = [parts[0]]
            for part in parts[1:]:
                pieces.append(marker * int(counts[index]) + part)
                index += 1
            out.append("".join(pieces).replace(marker, self.image_token))
        return out

    def __call__(
        self,
        text: str | Sequence[str],
        images: Image.Image | Sequence[Image.Image] | None = None,
        padding: bool | str = True,
        return_tensors: str = "pt",
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        """Batch of ``text`` (each with one ``<|image_pad|>`` per image it shows, images in order).

        Returns tensors: input_ids / attention_mask / mm_token_type_ids (B, L), pixel_values
        (Σ patches, C·T·P·P), image_grid_thw (n_images, 3). Padding side is the tokenizer's.
        """
        texts = [text] if isinstance(text, str) else list(text)
        data: dict[str, Any] = {}
        if images is not None:
            image_list = [images] if isinstance(images, Image.Image) else list(images)
            vision = self.image_processor(images=image_list, return_tensors="pt")
            data["pixel_values"] = vision["pixel_values"]
            data["image_grid_thw"] = vision["image_grid_thw"]
            texts = self.expand_placeholders(texts, vision["image_grid_thw"])
        encoded = self.tokenizer(texts, padding=padding, return_tensors=return_tensors)
        data["input_ids"] = encoded["input_ids"]
        data["attention_mask"] = encoded["attention_mask"]
        data["mm_token_type_ids"] = (encoded["input_ids"] == self.image_token_id).to(torch.int32)
        return BatchFeature(data=data)
