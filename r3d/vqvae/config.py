"""Recipe schema of ``r3d train-vqvae`` (YAML → these pydantic models; unknown keys are errors).

Three stages share one schema (``train.stage``):

- ``vae``: TRELLIS's own sparse-structure VAE objective (reconstruction — dice by default — plus
  ``loss.kl`` · KL, posterior sampling); used to pretrain the tiny CPU encoder/decoder that stand in for
  TRELLIS's released weights. Exports ``export/<encoder_file>`` / ``<decoder_file>`` in TRELLIS's format.
- ``codebook`` (stage 1): load the pretrained encoder/decoder, freeze them, k-means-initialise and train
  only the codebook (EMA or gradient) with dead-code restarts.
- ``joint`` (stage 2): start from a stage-1 run (``init_from``), unfreeze everything, reconstruction
  (L1 + L2 on occupancy by default) + codebook + β · commitment, AdamW with warm-up and a schedule.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from r3d.core.recipe import StrictModel


class ArchConfig(StrictModel):
    """Encoder widths (the decoder uses them reversed) when no pretrained files are given."""

    channels: list[int] = Field(
        default=[32, 128, 512], description="encoder stage widths; TRELLIS: 32,128,512"
    )
    latent_channels: int = Field(default=8, ge=1, description="latent channels per cell (TRELLIS: 8)")
    num_res_blocks: int = Field(default=2, ge=0, description="res blocks per stage (TRELLIS: 2)")
    num_res_blocks_middle: int = Field(default=2, ge=0, description="res blocks in the middle (TRELLIS: 2)")
    norm_type: Literal["layer", "group"] = "layer"
    use_fp16: bool = Field(default=True, description="written to the exported JSON (TRELLIS: true)")


class QuantizerConfig(StrictModel):
    kind: Literal["vq", "fsq"] = "vq"
    codebook_size: int = Field(default=8192, ge=2, description="codes (seed plan: 8192)")
    group: int = Field(
        default=1, ge=1, description="cells per token along z: 1 → 8-d codes, 4 → 32-d (ShapeLLM)"
    )
    ema_decay: float | None = Field(
        default=0.99, description="EMA codebook updates; null = gradient codebook"
    )
    dead_threshold: float = Field(default=0.01, ge=0, description="restart codes used < this × uniform rate")
    usage_decay: float = Field(default=0.99, gt=0, lt=1)
    kmeans_init: bool = Field(default=True, description="k-means the codebook on encoder latents first")
    kmeans_iters: int = Field(default=20, ge=1)
    kmeans_max_tokens: int = Field(default=262_144, ge=1, description="latent tokens gathered for k-means")
    fsq_levels: list[int] = Field(default=[8, 8, 8, 4, 4], description="FSQ levels (product = codebook size)")


class ModelConfig(StrictModel):
    pretrained: str | None = Field(
        default=None,
        description="folder with <encoder_file>/<decoder_file> .json+.safetensors (TRELLIS-image-large ckpts/ "
        "or an r3d export/); CLI --pretrained",
    )
    encoder_file: str = "ss_enc_conv3d_16l8_fp16"
    decoder_file: str = "ss_dec_conv3d_16l8_fp16"
    arch: ArchConfig = ArchConfig()
    quantizer: QuantizerConfig = QuantizerConfig()


class DataConfig(StrictModel):
    root: str = Field(description="folder of `r3d voxelize` outputs (*.npz) or TRELLIS voxels (*.ply)")
    resolution: int = Field(default=64, ge=2, description="grid of the voxel files")
    downsample: int = Field(default=1, ge=1, description="OR-pool factor (2: 64³ → 32³ for CPU)")
    holdout: list[str] = Field(default=[], description="file names (stems) held out for evaluation")
    holdout_every: int = Field(default=0, ge=0, description="also hold out every n-th file (0: none)")
    augment: Literal["none", "zrot", "cube"] = "zrot"
    num_workers: int = Field(default=0, ge=0)


class LossConfig(StrictModel):
    """Weights of the loss terms; reconstruction terms act on occupancy = sigmoid(logit)."""

    l1: float = Field(default=1.0, ge=0)
    l2: float = Field(default=1.0, ge=0)
    dice: float = Field(default=0.0, ge=0, description="TRELLIS's soft dice on sigmoid(logits)")
    bce: float = Field(default=0.0, ge=0)
    codebook: float = Field(default=1.0, ge=0, description="‖sg(z) − e‖² (gradient codebook only)")
    beta: float = Field(default=0.25, ge=0, description="commitment weight β")
    kl: float = Field(default=1e-3, ge=0, description="KL weight (stage vae; TRELLIS 1e-3)")


class ScheduleConfig(StrictModel):
    kind: Literal["constant", "cosine", "exponential", "step"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0, description="linear warm-up from 0")
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1, description="cosine floor, × lr")
    gamma: float = Field(
        default=0.5, gt=0, le=1, description="exponential: factor per step_size; step: per drop"
    )
    step_size: int = Field(default=1000, ge=1, description="steps per gamma decay / drop")


class TrainConfig(StrictModel):
    stage: Literal["vae", "codebook", "joint"]
    steps: int = Field(default=1000, ge=0)
    batch_size: int = Field(default=4, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(default=1.0, description="max global grad norm; null = off")
    schedule: ScheduleConfig = ScheduleConfig()
    amp: Literal["none", "bf16", "fp16"] = Field(default="none", description="autocast on CUDA")
    channels_last: bool = Field(default=True, description="channels_last_3d memory format (fast CPU conv3d)")
    log_every: int = Field(default=10, ge=1)
    eval_every: int = Field(default=100, ge=1)
    ckpt_every: int = Field(default=200, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    seed: int = 0
    threads: int | None = Field(default=None, description="torch CPU threads (null: torch default)")


class VQVAERecipe(StrictModel):
    name: str = "vqvae"
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    init_from: str | None = Field(
        default=None, description="run folder of the previous stage; CLI --init-from"
    )
    model: ModelConfig = ModelConfig()
    data: DataConfig
    loss: LossConfig = LossConfig()
    train: TrainConfig

    @model_validator(mode="after")
    def _check(self) -> VQVAERecipe:
        q = self.model.quantizer
        if q.kind == "fsq":
            import math

            if math.prod(q.fsq_levels) != q.codebook_size:
                raise ValueError(
                    f"fsq_levels multiply to {math.prod(q.fsq_levels)}, not codebook_size {q.codebook_size}"
                )
        return self
