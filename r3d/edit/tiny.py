"""Tiny, randomly initialised editor and judge built from configs in code (no hub files, CPU, seconds).

They exercise exactly the code paths of the real models — the diffusers ``QwenImageEditPipeline``
(Qwen2.5-VL text encoder, QwenImage MMDiT, QwenImage causal-conv VAE, flow-match Euler scheduler)
and a transformers Qwen3-VL judge loaded through ``AutoModelForImageTextToText`` — at a few hundred
thousand parameters. Their outputs are noise: they test the machinery (batching, seeds, parsing,
resume, reports), not image quality. Weights come from a fixed seed, so every process builds the same
models. The tokenizer is byte-level BPE without merges (256 byte symbols + Qwen's special tokens).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from r3d.edit.vl_inputs import QwenVLInputs

TINY = "tiny"
_SPECIAL = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_EDITOR_SEED = 1234
_JUDGE_SEED = 4321


def tiny_tokenizer() -> Any:
    """A Qwen2 byte-level tokenizer: ids 0-255 are the byte symbols, then ``<|endoftext|>`` and the
    chat / vision special tokens."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {symbol: i for i, symbol in enumerate(sorted(set(bytes_to_unicode().values())))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": list(_SPECIAL)})
    return tokenizer


def _ids(tokenizer: Any) -> dict[str, int]:
    return {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }


def tiny_editor() -> Any:
    """A ``QwenImageEditPipeline`` with random tiny components (fp32, CPU).

    VAE: 4 downsampling stages without residual blocks (16×: like the real 8× VAE it keeps every
    packed latent grid even; the pipeline always encodes the input at ≈1024² pixels, so the encoder
    must be cheap at full resolution), 4 latent channels, width 4; MMDiT: 2 blocks, 2 heads of 16; Qwen2.5-VL text encoder:
    2 layers of width 32 with a 1-block vision tower; scheduler: Qwen-Image's flow-match settings.
    """
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_EDITOR_SEED)
        text_config = dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
            bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        )  # fmt: skip
        vision_config = dict(
            depth=1, hidden_size=32, intermediate_size=32, num_heads=2, out_hidden_size=32, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[0], window_size=112,
        )  # fmt: skip
        config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **_ids(tokenizer))
        text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
        vae = AutoencoderKLQwenImage(
            base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1, 1], num_res_blocks=0,
            temperal_downsample=[False, True, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
        )  # fmt: skip
        transformer = QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
        )  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0,
        shift_terminal=0.02, time_shift_type="exponential", use_dynamic_shifting=True,
    )  # fmt: skip
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    pipe = QwenImageEditPipeline(
        scheduler=scheduler,
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=QwenVLInputs(image_processor, tokenizer),
        transformer=transformer.eval(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_judge() -> tuple[Any, Any, Any]:
    """(model, tokenizer, image_processor): a random Qwen3-VL (2 text layers of width 32, 2 vision
    blocks, patch 16, merge 2) that ``AutoModelForImageTextToText`` builds; images at ≤ 64² pixels."""
    from transformers import AutoModelForImageTextToText, Qwen3VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = "left"
    ids = _ids(tokenizer)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text_config = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [4, 2, 2], "mrope_interleaved": True},
        eos_token_id=im_end, pad_token_id=pad,
    )  # fmt: skip
    vision_config = dict(
        depth=2, hidden_size=32, intermediate_size=32, num_heads=2, out_hidden_size=32, patch_size=16,
        spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16, deepstack_visual_indexes=[1],
    )  # fmt: skip
    config = Qwen3VLConfig(text_config=text_config, vision_config=vision_config, **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_JUDGE_SEED)
        model = AutoModelForImageTextToText.from_config(config).eval()
    model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = pad
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=32 * 32,
        max_pixels=64 * 64,
        patch_size=16,
        merge_size=2,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    return model, tokenizer, image_processor


def save_tiny_judge(path: str | os.PathLike) -> Path:
    """Write the tiny judge as a regular transformers folder (config, safetensors, tokenizer, image
    processor) so the local-judge loading path can be exercised offline."""
    path = Path(path)
    model, tokenizer, image_processor = tiny_judge()
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    image_processor.save_pretrained(str(path))
    return path


def save_tiny_editor(path: str | os.PathLike) -> Path:
    """Write the tiny editor as a diffusers pipeline folder laid out like ``Qwen/Qwen-Image-Edit``
    (``model_index.json``, one subfolder per component, tokenizer and image processor in
    ``processor/``) so the hub-folder loading path can be exercised offline."""
    import json

    import diffusers

    path = Path(path)
    pipe = tiny_editor()
    for name in ("transformer", "vae", "text_encoder", "scheduler", "tokenizer"):
        getattr(pipe, name).save_pretrained(str(path / name))
    pipe.processor.save_pretrained(path / "processor")
    index = {
        "_class_name": "QwenImageEditPipeline",
        "_diffusers_version": diffusers.__version__,
        "processor": ["transformers", "Qwen2VLProcessor"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", type(pipe.text_encoder).__name__],
        "tokenizer": ["transformers", type(pipe.tokenizer).__name__],
        "transformer": ["diffusers", type(pipe.transformer).__name__],
        "vae": ["diffusers", type(pipe.vae).__name__],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return path
