"""The GRPO recipe schema (``r3d grpo RECIPE``). Every default is documented here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_serializer, model_validator

from r3d.core.errors import R3DError
from r3d.core.prompts import PromptSet, read_prompts
from r3d.core.recipe import StrictModel


class RunConfig(StrictModel):
    name: str = Field("run", description="Run name; the run folder is out_dir/name unless --out is given.")
    out_dir: str = Field("runs", description="Parent folder of run folders.")
    seed: int = Field(
        0, description="Seeds sampling noise, prompt order and timestep subsets (separate generators)."
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    threads: int | None = Field(None, description="torch.set_num_threads; None keeps torch's default.")


class ModelConfig(StrictModel):
    name: str = Field("tiny_shapes", description="Policy adapter name (see r3d.core.registry.POLICIES).")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword options of the adapter's loader."
    )


class SdeWindow(StrictModel):
    size: int | None = Field(
        None, description="Steps per iteration that use the SDE (and are trained); None = all."
    )
    range: tuple[int, int] | None = Field(
        None, description="[first, last) step indices the window may cover."
    )


class SamplerConfig(StrictModel):
    num_steps: int = Field(10, ge=1, description="Sampling steps from σ=1 to σ=0 (or DDIM steps).")
    kernel: Literal["flow_sde", "flow_cps", "dance_sde", "ddim"] = Field(
        "flow_sde", description="Stochastic transition used for rollouts (ddim for DDPM-family models)."
    )
    noise_level: float = Field(0.7, ge=0, description="a of flow_sde / flow_cps, η of dance_sde and ddim.")
    sde_window: SdeWindow = Field(default_factory=SdeWindow)
    shared_noise: bool = Field(True, description="All samples of a prompt group start from the same noise.")
    eval_kernel: Literal["ode", "same"] = Field(
        "ode", description="Evaluation sampling: deterministic ODE/DDIM or the rollout kernel."
    )


class RewardConfig(StrictModel):
    type: str | None = Field(
        None,
        description="Registered reward or module:factory; default: the entry's key. With it the key is "
        "just a label, so one recipe can hold two rewards of one type (e.g. two remote judges).",
    )
    weight: float = Field(1.0, description="Weight in the total reward (0 = logged only).")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword options of the reward adapter."
    )


class LoraConfig(StrictModel):
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, le=0, description="Must be 0: dropout would break ratio = 1.")
    target_modules: list[str] | None = Field(None, description="None = the adapter's lora_target_modules.")


class NablaConfig(StrictModel):
    """Reward-gradient alignment (Nabla-R2D3) knobs, used when ``train.algorithm: nabla``."""

    reward_scale: float = Field(
        1.0, ge=0, description="β: strength of ∇log R in the target transition score."
    )
    unet_reg_scale: float = Field(
        0.0,
        ge=0,
        description="Weight of the per-step KL to the rollout (previous-iterate) policy: the proximal term.",
    )
    reward_norm_clip: bool = Field(True, description="Clip the per-sample reward-gradient norm.")
    reward_norm_value: float = Field(1.0, gt=0, description="Norm threshold of reward_norm_clip.")
    alpha_adaptive: bool = Field(
        False,
        description="Scale the reward gradient by the signal level: (1 − σ)² for flows, ᾱ for DDPM models.",
    )
    random_view: float = Field(
        20.0, ge=0, description="Camera jitter in degrees for rendered rewards (0 = off)."
    )
    memo_efficient_mode: bool = Field(
        False, description="Evaluate the differentiable reward two samples at a time."
    )
    reward_context: bool = Field(
        True,
        description="False stops the gradient through reward targets built from the renders (e.g. depth normals).",
    )
    apply_reward_threshold: bool = Field(
        False, description="Drop samples whose reward is below reward_threshold."
    )
    reward_threshold: float = Field(0.0, description="Threshold of apply_reward_threshold.")


class EmaConfig(StrictModel):
    """EMA of the trainable (LoRA) weights (flow_grpo / Flow-Factory); evaluation uses it when enabled."""

    enabled: bool = Field(False, description="Keep the EMA, evaluate with it, save it in the checkpoint.")
    decay: float = Field(0.9, gt=0, lt=1, description="EMA decay d: ema ← ema + (1 − d)(θ − ema).")
    update_interval: int = Field(
        8, ge=1, description="Update the EMA every N optimizer steps (flow_grpo: 8)."
    )
    warmup: bool = Field(
        True, description="Ramp the decay as min((1 + n)/(10 + n), decay) over optimizer steps n."
    )


class TrainConfig(StrictModel):
    algorithm: Literal["grpo", "nabla"] = Field("grpo", description="grpo (PPO-clip on log-ratios) or nabla.")
    iterations: int = Field(20, ge=1)
    prompts_per_iteration: int = Field(4, ge=1, description="Distinct prompts per iteration (groups).")
    group_size: int = Field(8, ge=2, description="Samples per prompt (the GRPO group).")
    batch_size: int = Field(
        16, ge=1, description="Samples per forward pass, identical in rollout and training."
    )
    samples_per_update: int | None = Field(
        None,
        ge=1,
        description="Samples per optimizer step, all processes together: gradients of batch_size "
        "chunks are accumulated until it is reached, so a many-GPU effective batch is reproduced on "
        "one device. None = one step per batch_size chunk of each process (batch_size × processes), "
        "as before. Must divide prompts_per_iteration × group_size and be a multiple of the processes.",
    )
    inner_epochs: int = Field(1, ge=1, description="Passes over the rollouts per iteration.")
    timestep_fraction: float = Field(
        1.0, gt=0, le=1, description="Fraction of trainable steps used per iteration."
    )
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = Field(1.0, description="Gradient clipping; None disables it.")
    clip_range: float = Field(0.2, gt=0, description="PPO clip ε on the per-step ratio.")
    adv_clip_max: float = Field(5.0, gt=0, description="Advantages are clamped to ±adv_clip_max.")
    kl_beta: float = Field(
        0.0, ge=0, description="Weight of the closed-form KL to the adapter-disabled reference."
    )
    kl_type: Literal["exact", "flow_grpo"] = Field(
        "exact",
        description="exact (default): the KL between the two transition Gaussians, mean over dims of "
        "(μ − μ_ref)² / (2·std²), std the transition std (for flow_sde std² = σ_t²·(−dt)). "
        "flow_grpo: flow_grpo's train_sd3.py term, mean over dims of (μ − μ_ref)² / (2·σ_t²): for "
        "flow_sde it is exact × (−dt) (so a flow_grpo kl_beta is up to ~100× stronger under exact); "
        "for flow_cps the two agree. Only for kernels flow_sde and flow_cps.",
    )
    global_std: bool = Field(False, description="Normalise advantages by the std of the whole batch.")
    buffer_size: int = Field(0, ge=0, description="Per-prompt cross-iteration reward buffer (DDPO); 0 = off.")
    buffer_min_count: int = Field(16, ge=1)
    overlap_rewards: bool = Field(
        False,
        description="Decode and score each rollout chunk (batch_size samples) in a worker thread while "
        "the next chunk is sampled. Rewards then see one chunk per call: bit-identical results for "
        "rewards computed per sample, results equal to float rounding for batched torch rewards "
        "(vectorised kernels round a sample differently in batches of other sizes), and other results "
        "for batch-dependent ones (in-batch R-precision distractors).",
    )
    stop_on_gold_drop: int | None = Field(
        None,
        ge=1,
        description="Stop after K consecutive evaluations with a gold drop while the reward rose (the "
        "over-optimisation guard) and keep the best-gold adapter in checkpoint_best_gold/; None = warn only.",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    ema: EmaConfig = Field(
        default_factory=EmaConfig, description="EMA of the LoRA weights (off by default); r3d export --ema."
    )

    @model_validator(mode="after")
    def _check_overlap(self) -> TrainConfig:
        if self.overlap_rewards and self.algorithm == "nabla":
            raise ValueError("train.overlap_rewards applies to algorithm grpo, not nabla")
        if self.samples_per_update is not None:
            if self.algorithm == "nabla":
                raise ValueError("train.samples_per_update applies to algorithm grpo, not nabla")
            n = self.prompts_per_iteration * self.group_size
            if n % self.samples_per_update:
                raise ValueError(
                    f"train.samples_per_update = {self.samples_per_update} must divide "
                    f"prompts_per_iteration × group_size = {n}"
                )
        return self


EVAL_FROM_TRAIN_MAX = 256  # without prompts.eval, evaluation uses a train prompt file up to this size


class PromptsConfig(StrictModel):
    """Prompts: inline lists, or paths read (and checked) when the recipe is loaded (r3d.core.prompts).

    A path is kept as the path in the run's ``recipe.yaml`` (with its sha256), never copied.
    """

    train: list[str] = Field(
        ...,
        min_length=1,
        description="Training prompts, drawn without replacement each iteration: an inline list or a "
        "path (.txt, .jsonl, image folder or glob, HumanML3D split file).",
    )
    eval: list[str] = Field(
        default_factory=list,
        description="Held-out prompts for fixed-noise evaluation: an inline list or a path like train. "
        "Empty = the train prompts (required when train is a file of more than 256 prompts).",
    )
    sha256: dict[Literal["train", "eval"], str] = Field(
        default_factory=dict,
        description="sha256 of the prompt files, recorded when a run starts; a resumed run (or any "
        "recipe giving it) refuses a file whose sha256 differs.",
    )
    _files: dict[str, PromptSet] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _read_files(cls, data: Any, handler: Any) -> PromptsConfig:
        if not isinstance(data, dict) or not any(isinstance(data.get(k), str) for k in ("train", "eval")):
            return handler(data)
        data, files = dict(data), {}
        pinned = data.get("sha256") or {}
        for key in ("train", "eval"):
            if isinstance(data.get(key), str):
                files[key] = found = read_prompts(data[key], f"prompts.{key}")
                if pinned.get(key) not in (None, found.sha256):
                    raise R3DError(
                        f"prompts.{key}: {found.path} changed since the run started (sha256 "
                        f"{found.sha256[:12]}…, recorded {str(pinned[key])[:12]}…); restore it or start a new run"
                    )
                data[key] = found.prompts
        train = files.get("train")
        if train is not None and not data.get("eval") and len(train.prompts) > EVAL_FROM_TRAIN_MAX:
            raise R3DError(
                f"prompts.eval: {train.path} holds {len(train.prompts)} prompts; evaluation would sample "
                f"all of them, so give held-out prompts (a list or a file of ≤ {EVAL_FROM_TRAIN_MAX})"
            )
        data["sha256"] = {k: f.sha256 for k, f in files.items()}
        model = handler(data)
        model._files = files
        return model

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        files = self.files
        for key, found in files.items():
            out[key] = found.path
        out["sha256"] = {k: v for k, v in out["sha256"].items() if k in files or k not in self._files}
        return out

    @property
    def files(self) -> dict[str, PromptSet]:
        """``{"train"|"eval": PromptSet}`` of the prompts read from paths (locations, lengths, sha256);
        a list assigned later in place of a file's prompts drops its entry."""
        return {k: f for k, f in self._files.items() if getattr(self, k) == f.prompts}

    def where(self, key: str, index: int) -> str:
        """Where prompt ``index`` of ``key`` came from: ``FILE line N`` or ``prompts.KEY[i]``."""
        found = self.files.get(key)
        return found.where[index] if found is not None else f"prompts.{key}[{index}]"

    def lengths(self) -> dict[str, int]:
        """Motion lengths in frames given by the prompt files (caption → frames); eval's win."""
        files = self.files
        return {p: n for key in ("train", "eval") if key in files for p, n in files[key].lengths.items()}


class EvalConfig(StrictModel):
    every: int = Field(
        5, ge=0, description="Evaluate every N iterations (and at start and end); 0 = only start/end."
    )
    samples_per_prompt: int = Field(4, ge=1)
    seed: int = Field(12345, description="Fixed noise seed of the evaluation.")
    num_steps: int | None = Field(None, description="Evaluation sampling steps; None = sampler.num_steps.")
    gold: list[str] | None = Field(
        None,
        description="Gold measures computed at each evaluation and never trained on (names of "
        "r3d.core.registry.GOLD or module:factory paths), logged as eval/gold/<name>; None = the "
        "model's defaults (GOLD_DEFAULTS), [] = none.",
    )
    gold_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Gold measure name → keyword options of its factory."
    )
    gold_warn_after: int = Field(
        2,
        ge=1,
        description="The over-optimisation guard warns after this many consecutive evaluations with a "
        "guarded gold below its best beyond the noise while the held-out reward rose "
        "(train.stop_on_gold_drop, when set, is used instead).",
    )
    gold_noise_z: float = Field(
        2.0, gt=0, description="A gold drop counts when it exceeds z·√(se² + se_best²) (standard errors)."
    )

    @model_validator(mode="after")
    def _check_gold(self) -> EvalConfig:
        if self.gold is not None and len(set(self.gold)) != len(self.gold):
            raise ValueError("eval.gold lists a measure twice")
        extra = sorted(set(self.gold_options) - set(self.gold or []))
        if self.gold is not None and extra:
            raise ValueError(f"eval.gold_options names {extra}, which eval.gold does not list")
        return self


class CheckpointConfig(StrictModel):
    every: int = Field(
        5, ge=1, description="Write a checkpoint every N iterations (and at the end / on Ctrl-C)."
    )


class GRPORecipe(StrictModel):
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    prompts: PromptsConfig
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    rewards: dict[str, RewardConfig] = Field(
        ...,
        min_length=1,
        description="Reward label → type (default: the label), weight and options; components are "
        "logged under the label.",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    nabla: NablaConfig = Field(default_factory=NablaConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    def reward_type(self, label: str) -> str:
        """The registry name (or module:factory) of the reward entry ``label``."""
        return self.rewards[label].type or label

    @model_validator(mode="after")
    def _check(self) -> GRPORecipe:
        w = self.sampler.sde_window
        if w.size is not None and not 1 <= w.size <= self.sampler.num_steps:
            raise ValueError(f"sampler.sde_window.size must be in [1, num_steps={self.sampler.num_steps}]")
        if w.range is not None and not (0 <= w.range[0] < w.range[1] <= self.sampler.num_steps):
            raise ValueError("sampler.sde_window.range must satisfy 0 <= first < last <= num_steps")
        if self.train.kl_type == "flow_grpo" and self.sampler.kernel not in ("flow_sde", "flow_cps"):
            raise ValueError(
                f"train.kl_type flow_grpo applies to kernels flow_sde and flow_cps, not {self.sampler.kernel}"
            )
        if all(r.weight == 0 for r in self.rewards.values()):
            raise ValueError("at least one reward needs a non-zero weight")
        return self
