"""Library side of ``r3d grpo --dry-run``: build everything (on the meta device when weights or the GPU
are missing), one rollout → reward → update pass, and a memory estimate."""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from r3d.commands.runner import (
    check_gold,
    check_prompts,
    gold_names,
    gold_options,
    policy_options,
    reward_mix,
    reward_options,
    trainer_class,
)
from r3d.core.config import GRPORecipe
from r3d.core.device import resolve_device
from r3d.core.errors import R3DError
from r3d.core.grpo import GRPOTrainer
from r3d.core.memory import (
    MemoryEstimate,
    ParamCount,
    SavedTensorMeter,
    adamw_state_bytes,
    count_parameters,
    find_modules,
    measure_batched,
    saved_peak,
    unit_peak,
)
from r3d.core.policy import CheckpointedNetwork, HasExampleCond, factory_hooks
from r3d.core.registry import GOLD, POLICIES, REWARDS, check_options, resolve
from r3d.core.rewards import RewardMix
from r3d.core.rollout import network_output


@dataclass
class DryRunReport:
    """What ``r3d grpo RECIPE --dry-run`` found: checks passed, problems (each makes the dry run
    fail), warnings, and the memory estimate."""

    recipe: str
    run_dir: str
    checks: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    memory: MemoryEstimate = field(default_factory=MemoryEstimate)

    def ok(self, item: str, detail: str) -> None:
        self.checks.append((item, detail))

    def problem(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "run_dir": self.run_dir,
            "ok": not self.problems,
            "checks": [{"item": i, "detail": d} for i, d in self.checks],
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "memory": self.memory.to_dict(),
        }


@dataclass
class _Built:
    obj: Any
    device: str  # where it runs (the recipe's device for a meta build)
    error: str | None = None
    meta: bool = False


MAX_ENCODED_PROMPTS = (
    256  # a dry run encodes this many distinct prompts (a large file's are validated, not all encoded)
)
_FETCH_HINT = re.compile(r"r3d fetch-weights ([A-Za-z0-9._-]+)")


def _dry_build(
    kind: str, name: str, options: dict[str, Any], table: dict[str, str], rep: DryRunReport
) -> _Built:
    """Build a policy / reward for real when its weights and device are there, else on the meta device.

    A factory may declare ``missing_weights`` (:class:`r3d.core.policy.FactoryHooks`): one message per
    missing weight set, naming the ``r3d fetch-weights`` command; without it a failed build tells.
    """
    factory = resolve(name, table, kind)
    check_options(factory, options, f"{kind} '{name}'")
    params = inspect.signature(factory).parameters
    default = params["device"].default if "device" in params else "cpu"
    device = str(resolve_device(options.get("device", default), require_available=False))
    label = f"{kind} {name}"
    errors: list[str] = []
    hook = factory_hooks(factory).missing_weights
    if hook is not None:
        errors += [f"{label}: {m}" for m in hook(**options)]
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        errors.append(f"{label}: runs on {device}, but this machine has no CUDA device")
    if not errors:
        try:
            obj = factory(**options)
            rep.ok(label, f"built on {device}" if find_modules(obj) else "built")
            return _Built(obj, device)
        except R3DError as exc:
            errors.append(f"{label}: {exc}")
    for message in errors:
        rep.problem(message)
    if "device" in params:
        try:
            obj = factory(**{**options, "device": "meta"})
        except R3DError as exc:
            rep.problem(f"{label}: {exc}")
            errors.append(str(exc))
        except Exception as exc:  # noqa: BLE001 — a meta build is best effort; the problem is reported above
            rep.ok(label, f"no meta-device build ({type(exc).__name__}); shapes and memory not checked")
        else:
            rep.ok(label, "built on the meta device: shapes and memory only, no weights loaded")
            return _Built(obj, device, "; ".join(errors), meta=True)
    return _Built(None, device, "; ".join(errors))


def _module_device(obj: Any, fallback: str) -> str:
    for _, module in find_modules(obj):
        for p in module.parameters():
            return fallback if p.is_meta else str(p.device)
    return fallback


def _download_estimate(est: MemoryEstimate, label: str, error: str | None, device: str) -> None:
    """A weights-missing component: its parameters ≈ the download size of the weights it names."""
    from r3d.core.weights import MANIFEST

    for fetch in dict.fromkeys(_FETCH_HINT.findall(error or "")):
        spec = MANIFEST.get(fetch)
        if spec is not None:
            note = f"≈ download size of {fetch}"
            est.notes.append(f"{label}: weights missing, size taken from the download size of {fetch}")
            est.add(label, "weights (estimate)", int(spec.approx_size_gb * 1e9), device, note)


def _prompt_batch(cfg: GRPORecipe, b: int) -> list[str]:
    return [cfg.prompts.train[i % len(cfg.prompts.train)] for i in range(b)]


def _cond_batch(policy: Any, cfg: GRPORecipe, b: int) -> Any:
    """Conditions of b training prompts, or the adapter's ``example_cond(b)`` when they cannot be read."""
    try:
        return policy.encode_prompts(_prompt_batch(cfg, b))
    except R3DError:
        if not isinstance(policy, HasExampleCond):
            raise
        return policy.example_cond(b)


def _first_trainable_step(cfg: GRPORecipe, candidates: torch.Tensor) -> int:
    lo = (cfg.sampler.sde_window.range or (0, 0))[0]
    later = candidates[candidates >= lo]
    return int(later[0] if later.numel() else candidates[0])


def _network_pass(trainer: GRPOTrainer, cfg: GRPORecipe, b: int, meta: bool) -> None:
    """One forward + backward of the policy network (guided velocity / prediction) at a training step."""
    policy, schedule = trainer.policy, trainer.schedule
    x = policy.initial_noise(b, torch.Generator().manual_seed(cfg.run.seed))
    x = x.to("meta") if meta else x
    cond = _cond_batch(policy, cfg, b)
    step = _first_trainable_step(cfg, torch.nonzero(schedule.moving()).flatten())
    network_output(policy, schedule, step, x, cond).float().sum().backward()


def _pipeline_pass(
    trainer: GRPOTrainer, cfg: GRPORecipe, b: int, exclude: list[Any], rep: DryRunReport | None
) -> int:
    """Rollout → decode → rewards → one update step of b samples through the trainer's own code;
    returns the peak saved-tensor bytes of the update (checks are recorded when ``rep`` is given)."""
    policy = trainer.policy
    prompts = _prompt_batch(cfg, b)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    n_steps = trainer.schedule.num_steps
    tic = time.perf_counter()
    roll = trainer.rollout(
        prompts, policy.initial_noise(b, gen), cfg.sampler.kernel, torch.ones(n_steps, dtype=torch.bool), gen
    )
    artifacts = policy.decode(roll.final, roll.cond)
    total, comps = trainer.rewards(artifacts, prompts)
    candidates = torch.nonzero(roll.has_density).flatten()
    if candidates.numel() == 0:
        raise R3DError(f"sampler.kernel {cfg.sampler.kernel} gives no step with a trainable density")
    meter = SavedTensorMeter(exclude)
    with meter:
        metrics = trainer.update(roll, torch.ones(b), [_first_trainable_step(cfg, candidates)])
    if rep is not None:
        bad = [k for k, v in comps.items() if v.shape != (b,) or not bool(torch.isfinite(v).all())]
        if total.shape != (b,) or bad:
            rep.problem(f"rewards: components {', '.join(bad) or 'total'} are not finite (B,) tensors")
        kinds = sorted({"empty" if a is None else type(a).__name__ for a in artifacts})
        shape = tuple(roll.latents.shape[2:])
        rep.ok(
            "rollout", f"{n_steps} steps ({cfg.sampler.kernel}), latents {shape} → decode: {', '.join(kinds)}"
        )
        rep.ok("rewards", ", ".join(f"{k} {float(v[0]):.4g}" for k, v in comps.items()) or "(none built)")
        got = sum(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in trainer.params)
        if got == 0:
            rep.problem("update: no LoRA parameter received a finite gradient")
        detail = f"LoRA gradients in {got}/{len(trainer.params)} tensors"
        dev = metrics.get("ratio_first_step_maxdev")
        if dev is not None:
            detail += f", first-step ratio max |r − 1| = {dev:.3g}"
            if dev > 0:
                rep.warnings.append(
                    f"the on-policy ratio deviates from 1 by {dev:.3g}: rollout and training differ "
                    "(bf16, a batch-size-dependent kernel or an eval-only branch)"
                )
        rep.ok("update", f"{detail} ({time.perf_counter() - tic:.1f} s for one sample)")
    return meter.peak


def _measure_activations(
    trainer: GRPOTrainer, cfg: GRPORecipe, meta: bool, device: str, exclude: list[Any], rep: DryRunReport
) -> None:
    """Activation rows: the trainer's own step where the pipeline can run, else the network's
    forward + backward; plus the recomputation of one block under gradient checkpointing."""
    est, bs = rep.memory, cfg.train.batch_size
    label = "meta" if meta else device
    policy = trainer.policy
    if not meta and _try(lambda: policy.encode_prompts(_prompt_batch(cfg, min(len(cfg.prompts.train), bs)))):
        first = [True]

        def pipeline(b: int) -> int:
            peak = _pipeline_pass(trainer, cfg, b, exclude, rep if first[0] else None)
            first[0] = False
            return peak

        act = measure_batched(pipeline, bs, label)
        est.notes.append(
            "activations: peak bytes autograd keeps during one update step (rollout → rewards → update "
            "through the trainer), saved-tensor accounting, no CUDA statistics"
        )
    else:
        act = measure_batched(
            lambda b: saved_peak(lambda: _network_pass(trainer, cfg, b, meta), exclude), bs, label
        )
        est.notes.append(
            "activations: peak bytes autograd keeps during one forward + backward of the policy network "
            "(CFG included; the kernel and the loss add a few latent-sized tensors), saved-tensor accounting"
            + ("; on the meta device attention is counted as a fused (flash) kernel" if meta else "")
        )
    est.add("activations", f"micro-batch {bs}", act.bytes, device, act.method)
    net = policy.network
    if isinstance(net, CheckpointedNetwork) and net.gradient_checkpointing:
        net.gradient_checkpointing = False
        try:
            units = list(net.checkpoint_units())
            rec = measure_batched(
                lambda b: unit_peak(lambda: _network_pass(trainer, cfg, b, meta), units, exclude), bs, label
            )
        finally:
            net.gradient_checkpointing = True
        est.add("activations", "checkpoint recompute", rec.bytes, device, rec.method)
        est.notes.append(
            f"checkpoint recompute: gradient checkpointing keeps only the inputs of the {len(units)} blocks; "
            "the backward pass recomputes one block at a time (the largest one's saved bytes are added)"
        )


def _try(fn: Callable[[], Any]) -> bool:
    try:
        fn()
    except R3DError:
        return False
    return True


def _dry_gold(cfg: GRPORecipe, rewards: RewardMix, rep: DryRunReport) -> None:
    """Build (or meta-build) each gold measure of ``eval.gold`` and check it is not a trained reward."""
    for name in gold_names(cfg):
        try:
            built = _dry_build("gold measure", name, gold_options(cfg, name), GOLD, rep)
        except R3DError as exc:
            rep.problem(f"gold measure {name}: {exc}")
            continue
        if built.obj is not None:
            try:
                check_gold(cfg, built.obj, rewards)
            except R3DError as exc:
                rep.problem(str(exc))


def dry_run(cfg: GRPORecipe, run_dir: Path, recipe: str = "") -> DryRunReport:
    """Validate a GRPO recipe without training (``r3d grpo RECIPE --dry-run``); writes nothing.

    1. Builds the policy, every reward and every gold measure (``eval.gold``) — for real when their weights and device are present,
       otherwise on the meta device (full-size shapes from the config, no weights) where the adapter
       supports it; a missing weight set is a problem that names the ``r3d fetch-weights`` command.
    2. Encodes the prompts, attaches LoRA and the optimizer exactly as training does.
    3. Real policy: a rollout → decode → rewards → update pass through the trainer's own code at
       micro-batches of 1 and 2 (checks artifacts, reward shapes, LoRA gradients and the on-policy
       ratio; measures the activations). Meta policy: one network forward + backward at
       ``train.batch_size``.
    4. The memory estimate (:mod:`r3d.core.memory`): parameters per module and dtype, LoRA,
       gradients, AdamW state, reward models, activations, rollout latents; totals per device against
       the memory available here.
    """
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    rep = DryRunReport(recipe, str(run_dir))
    est = rep.memory
    try:
        check_prompts(cfg)
    except R3DError as exc:
        rep.problem(f"prompts: {exc}")
    pol = _dry_build("policy", cfg.model.name, policy_options(cfg), POLICIES, rep)
    rewards = {
        n: _dry_build("reward", cfg.reward_type(n), reward_options(cfg, n), REWARDS, rep) for n in cfg.rewards
    }
    mix = reward_mix(cfg, {n: built.obj for n, built in rewards.items()})
    _dry_gold(cfg, mix, rep)
    policy, trainer = pol.obj, None
    if policy is not None:
        device = _module_device(policy, pol.device)
        distinct = list(dict.fromkeys(cfg.prompts.train + cfg.prompts.eval))
        try:
            policy.encode_prompts(distinct[:MAX_ENCODED_PROMPTS])
            more = len(distinct) - MAX_ENCODED_PROMPTS
            rest = f" (of {len(distinct)}; all were checked without encoding)" if more > 0 else ""
            rep.ok("prompts", f"{min(len(distinct), MAX_ENCODED_PROMPTS)} distinct prompts encoded{rest}")
        except R3DError as exc:
            rep.problem(f"prompts: {exc}")
        try:
            trainer = trainer_class(cfg)(cfg, policy, mix, run_dir, log=lambda _: None)
        except R3DError as exc:
            rep.problem(f"trainer: {exc}")
    else:
        device = pol.device
        _download_estimate(est, f"policy: {cfg.model.name}", pol.error, device)
    if trainer is not None:
        exclude = [m for b in [pol, *rewards.values()] if b.obj is not None for _, m in find_modules(b.obj)]
        try:
            _measure_activations(trainer, cfg, pol.meta, device, exclude, rep)
        except R3DError as exc:
            rep.problem(f"pipeline: {exc}")
        except torch.OutOfMemoryError:
            rep.problem(f"pipeline: out of memory on {device} at a micro-batch of 2 or less")
    activations = list(est.rows)
    est.rows.clear()
    seen: set[int] = set()
    if policy is not None:
        for path, module in find_modules(policy):
            note = type(module).__name__ + (" (meta device)" if pol.meta else "")
            est.add_params(
                f"policy: {path}", "frozen weights", count_parameters([module], False, seen), device, note
            )
    if trainer is not None:
        lora = ParamCount()
        for p in trainer.params:
            lora.add(p)
        t = cfg.train.lora
        est.add_params(
            "LoRA adapter", "trainable", lora, device, f"rank {t.rank}, {len(trainer.params)} tensors"
        )
        est.add("LoRA gradients", "gradients", lora.bytes, device, "one per trainable parameter")
        est.add("AdamW", "optimizer state", adamw_state_bytes(trainer.params), device, "exp_avg + exp_avg_sq")
    for name, b in rewards.items():
        if b.obj is None:
            _download_estimate(est, f"reward: {name}", b.error, b.device)
            continue
        where = _module_device(b.obj, b.device)
        for path, module in find_modules(b.obj):
            est.add_params(
                f"reward: {name}.{path}",
                "frozen weights",
                count_parameters([module], None, seen),
                where,
                type(module).__name__,
            )
    est.rows.extend(activations)
    if policy is not None:
        t = cfg.train
        x = policy.initial_noise(1, torch.Generator().manual_seed(0))
        n = t.prompts_per_iteration * t.group_size * (cfg.sampler.num_steps + 1) * x.numel()
        note = f"{t.prompts_per_iteration}×{t.group_size} samples × {cfg.sampler.num_steps + 1} points, fp32"
        est.add("rollout latents", "trajectories", n * 4, str(x.device), note)
    return rep
