"""Library side of ``r3d grpo`` and ``r3d sample``: recipe → policy, rewards, trainer, outputs."""

from __future__ import annotations

import functools
import inspect
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from r3d.commands.outputs import preview, safe_name, save_artifact, save_samples
from r3d.core import distributed as dist
from r3d.core import lock
from r3d.core.checkpoint import load_adapter_weights, recover_checkpoint, resolve_checkpoint
from r3d.core.config import GRPORecipe
from r3d.core.errors import R3DError
from r3d.core.gold import GoldSet, OverOptimisationGuard, describe
from r3d.core.grpo import GRPOTrainer, attach_lora
from r3d.core.io import atomic_write_json, read_jsonl, read_text
from r3d.core.plots import reward_curves
from r3d.core.policy import factory_hooks
from r3d.core.recipe import apply_overrides, load_recipe, read_yaml, validate
from r3d.core.registry import (
    GOLD,
    GOLD_DEFAULTS,
    POLICIES,
    REWARDS,
    build_gold,
    build_policy,
    build_reward,
    resolve,
    with_run_device,
)
from r3d.core.rewards import RewardMix
from r3d.core.rollout import make_schedule, sample


def load_grpo(
    recipe: Path | None, resume: Path | None, overrides: list[str] | None, out: Path | None
) -> tuple[GRPORecipe, Path]:
    """The recipe and run folder of a new run (``recipe``) or of a run to continue (``resume``)."""
    if resume is not None:
        if not (resume / "recipe.yaml").is_file():
            raise R3DError(f"--resume {resume}: not a run folder (no recipe.yaml)")
        if not resolve_checkpoint(resume / "checkpoint").is_dir():
            raise R3DError(f"--resume {resume}: no checkpoint in this run yet")
        data = apply_overrides(read_yaml(resume / "recipe.yaml"), overrides)
        return validate(data, GRPORecipe, source=str(resume / "recipe.yaml")), resume
    if recipe is None:
        raise R3DError("give a RECIPE (e.g. recipes/tiny_mesh.yaml) or --resume RUN_DIR")
    cfg = load_recipe(recipe, GRPORecipe, overrides)
    run_dir = out if out is not None else Path(cfg.run.out_dir) / cfg.run.name
    return cfg, run_dir


def policy_options(cfg: GRPORecipe) -> dict[str, Any]:
    """The policy factory's options: ``model.options`` plus ``run.device`` where it applies, plus
    the motion lengths of the prompt files (``lengths``; ``model.options.lengths`` wins)."""
    options = with_run_device(cfg.model.name, POLICIES, "policy", cfg.model.options, cfg.run.device)
    lengths = cfg.prompts.lengths()
    if lengths:
        options = {**options, "lengths": {**lengths, **options.get("lengths", {})}}
    return options


def check_prompts(cfg: GRPORecipe) -> None:
    """Model-specific prompt checks before any model is loaded, each failure naming file and line.

    The policy factory may declare ``validate_prompt`` (:class:`r3d.core.policy.FactoryHooks`); prompt
    files giving motion lengths need a factory that takes ``lengths``.
    """
    factory = resolve(cfg.model.name, POLICIES, "policy")
    for key, found in cfg.prompts.files.items():
        if found.lengths and "lengths" not in inspect.signature(factory).parameters:
            first = next(i for i, p in enumerate(found.prompts) if p in found.lengths)
            raise R3DError(
                f"{found.where[first]}: model {cfg.model.name} takes no motion lengths (prompts.{key})"
            )
    validate_prompt = factory_hooks(factory).validate_prompt
    if validate_prompt is None:
        return
    for key in ("train", "eval"):
        seen: set[str] = set()
        for i, prompt in enumerate(getattr(cfg.prompts, key)):
            if prompt in seen:
                continue
            seen.add(prompt)
            try:
                validate_prompt(prompt)
            except R3DError as exc:
                raise R3DError(f"{cfg.prompts.where(key, i)}: {exc}") from None


def reward_options(cfg: GRPORecipe, name: str) -> dict[str, Any]:
    """Reward ``name``'s factory options: its recipe options plus ``run.device`` where it applies."""
    return with_run_device(
        cfg.reward_type(name), REWARDS, "reward", cfg.rewards[name].options, cfg.run.device
    )


def reward_mix(cfg: GRPORecipe, built: dict[str, Any]) -> RewardMix:
    """The recipe's weighted, labelled sum of the rewards ``built`` per label (labels whose reward
    is None, e.g. not buildable in a dry run, are left out)."""
    labels = [label for label in cfg.rewards if built.get(label) is not None]
    return RewardMix(
        [built[label] for label in labels], [cfg.rewards[label].weight for label in labels], labels=labels
    )


def build_rewards(cfg: GRPORecipe) -> RewardMix:
    """Every reward of the recipe, built, in its weighted sum."""
    return reward_mix(
        cfg,
        {label: build_reward(cfg.reward_type(label), **reward_options(cfg, label)) for label in cfg.rewards},
    )


def gold_names(cfg: GRPORecipe) -> list[str]:
    """The recipe's gold measures: ``eval.gold``, or the model's defaults when it is unset."""
    if cfg.eval.gold is not None:
        return list(cfg.eval.gold)
    return list(GOLD_DEFAULTS.get(cfg.model.name, []))


def gold_options(cfg: GRPORecipe, name: str) -> dict[str, Any]:
    """Gold measure ``name``'s factory options (``eval.gold_options``) plus ``run.device`` where it applies."""
    return with_run_device(name, GOLD, "gold measure", cfg.eval.gold_options.get(name, {}), cfg.run.device)


def guarded_gold(cfg: GRPORecipe) -> list[str]:
    """Headline names of the recipe's gold measures the guard watches (from their classes; nothing built)."""
    factories = [resolve(n, GOLD, "gold measure") for n in gold_names(cfg)]
    return [
        getattr(f, "name", n)
        for n, f in zip(gold_names(cfg), factories, strict=True)
        if getattr(f, "guarded", True)
    ]


def check_gold(cfg: GRPORecipe, measure: Any, rewards: RewardMix) -> None:
    """A gold measure must not be a reward the recipe trains on (R3DError otherwise)."""
    trained_rewards = [r for r, w in zip(rewards.rewards, rewards.weights, strict=True) if w != 0]
    trained = {r.name for r in trained_rewards}
    same = trained & set(getattr(measure, "conflicts_with", ()))
    if measure.name in trained or same:
        raise R3DError(
            f"gold measure {measure.name} is the reward {(same or {measure.name}).pop()} this recipe trains "
            "on; a gold measure must be independent of the rewards (see eval.gold)"
        )
    hook = getattr(measure, "conflicts", None)
    problem = hook(trained_rewards) if hook else None
    if problem:
        raise R3DError(f"gold measure {measure.name} is not independent of the rewards: {problem}")


def build_gold_set(cfg: GRPORecipe, rewards: RewardMix) -> GoldSet:
    """The recipe's gold measures, built and checked against its rewards."""
    measures = [build_gold(n, **gold_options(cfg, n)) for n in gold_names(cfg)]
    for m in measures:
        check_gold(cfg, m, rewards)
    return GoldSet(measures)


def make_trainer(
    cfg: GRPORecipe,
    run_dir: Path,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> GRPOTrainer:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    dist.check_joined()  # the caller joined the launcher's group before this build (init_from_env)
    check_device(cfg)
    fresh = not run_dir.exists()
    if dist.is_main():  # one writer per run folder; the kernel drops the lock when this process ends
        lock.hold(run_dir, "run folder")
        recover_checkpoint(run_dir / "checkpoint")  # a save killed between its renames
    try:
        check_prompts(cfg)
        policy = build_policy(cfg.model.name, **policy_options(cfg))
        # fail early on a bad prompt; prompt files were checked line by line, and encoding (and caching)
        # all of a large data set up front would cost the time and memory the rollouts spread out
        inline = [
            p for key in ("train", "eval") if key not in cfg.prompts.files for p in getattr(cfg.prompts, key)
        ]
        policy.encode_prompts(inline or cfg.prompts.train[:1])
        trainer_cls = trainer_class(cfg)
        draw = functools.partial(evaluation_preview, policy=policy, log=log)
        rewards = build_rewards(cfg)
        gold = build_gold_set(cfg, rewards)
        return trainer_cls(cfg, policy, rewards, run_dir, log=log, preview=draw, progress=progress, gold=gold)
    except BaseException:
        if fresh:  # leave no empty folder behind a run that never started
            lock.drop(run_dir)
        raise


def evaluation_preview(
    artifacts: list[Any], labels: list[str], path: Path, policy: Any, log: Callable[[str], None] = print
) -> Path | None:
    """The trainer's preview hook: the contact sheet ``path`` (meshes rendered on the CPU, anything
    else by the policy's own save_preview), the samples kept in ``path`` without suffix
    (``samples_<tag>/``), then ``report.html`` rewritten. A report that cannot be written is logged,
    not fatal: training goes on."""
    sheet = preview(artifacts, labels, path, policy)
    save_samples(artifacts, labels, path.with_suffix(""))
    from r3d.report import write_run_report

    try:
        write_run_report(path.parent, pending=True)
    except (R3DError, OSError, ValueError) as exc:
        log(f"report.html not updated: {exc}")
    return sheet


def check_device(cfg: GRPORecipe) -> None:
    """A CUDA run.device on a machine without CUDA is a one-line R3DError."""
    if cfg.run.device.startswith("cuda") and not torch.cuda.is_available():
        raise R3DError(
            f"run.device is {cfg.run.device}, but this machine has no CUDA device (use auto or cpu)"
        )


def trainer_class(cfg: GRPORecipe) -> type[GRPOTrainer]:
    """GRPOTrainer, or NablaTrainer for ``train.algorithm: nabla``."""
    if cfg.train.algorithm == "nabla":
        from r3d.core.nabla import NablaTrainer

        return NablaTrainer
    return GRPOTrainer


def finish_run(run_dir: Path) -> dict[str, Any]:
    """Reward-curve PNG and summary.json (held-out metrics at start and end) of a run."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    evals = [r for r in records if "eval/reward" in r]
    summary: dict[str, Any] = {"iterations": max((r["iteration"] for r in records), default=0)}
    if evals:
        first, last = evals[0], evals[-1]
        keys = [k for k in first if k.startswith("eval/")]
        summary["eval"] = {k.removeprefix("eval/"): {"start": first[k], "end": last.get(k)} for k in keys}
        summary["eval_iterations"] = [first["iteration"], last["iteration"]]
    guard = guard_summary(run_dir, records)
    if guard is not None:
        summary["guard"] = guard
    plot = reward_curves(run_dir)
    summary["plot"] = str(plot) if plot else None
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def guard_summary(run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The over-optimisation guard replayed over a run's evaluations (the ``guard`` entry of
    summary.json), or None when the run logged no gold measure."""
    golds = sorted({k.removeprefix("eval/gold/") for r in records for k in r if k.startswith("eval/gold/")})
    if not golds or not (run_dir / "recipe.yaml").is_file():
        return None
    cfg = validate(read_yaml(run_dir / "recipe.yaml"), GRPORecipe, source=str(run_dir / "recipe.yaml"))
    guarded = [g for g in guarded_gold(cfg) if g in golds]
    patience = cfg.train.stop_on_gold_drop or cfg.eval.gold_warn_after
    guard = OverOptimisationGuard(guarded, patience, cfg.eval.gold_noise_z).replay(records)
    out = guard.summary()
    best = run_dir / "checkpoint_best_gold"
    out["stop_on_gold_drop"] = cfg.train.stop_on_gold_drop
    out["stopped"] = bool(cfg.train.stop_on_gold_drop and guard.events)
    out["best_gold_checkpoint"] = str(best) if best.is_dir() else None
    if guard.events:
        out["warning"] = describe(guard.events[0])
    return out


def load_adapter(policy: Any, adapter: Path) -> Any:
    """Attach and load a trained LoRA adapter (a run folder or its ``checkpoint`` folder); returns the
    peft model wrapping ``policy.network``."""
    folder = resolve_checkpoint(adapter / "checkpoint")
    folder = folder if folder.is_dir() else resolve_checkpoint(adapter)
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise R3DError(
            f"--adapter {adapter}: no adapter_config.json (expected a run folder or its checkpoint/)"
        )
    rank, alpha, targets = _adapter_config(config_path)
    peft_model = attach_lora(policy, rank, alpha, targets)
    load_adapter_weights(peft_model, folder)
    return peft_model


def _adapter_config(path: Path) -> tuple[int, int | float, list[str] | str | None]:
    """(r, lora_alpha, target_modules) of a peft ``adapter_config.json``; anything malformed → R3DError."""
    try:
        conf = json.loads(read_text(path, "adapter config"))
    except json.JSONDecodeError as exc:
        raise R3DError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(conf, dict):
        raise R3DError(f"{path}: expected a JSON object, got {type(conf).__name__}")
    rank, alpha, targets = conf.get("r"), conf.get("lora_alpha"), conf.get("target_modules")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise R3DError(f"{path}: 'r' must be an integer >= 1, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
        raise R3DError(f"{path}: 'lora_alpha' must be a number, got {alpha!r}")
    if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        return rank, alpha, sorted(targets) or None
    if targets is None or (isinstance(targets, str) and targets):  # None: the policy's; str: a regex
        return rank, alpha, targets
    raise R3DError(f"{path}: 'target_modules' must be a list of module names, got {targets!r}")


def generate(
    model: str,
    prompts: list[str],
    n: int,
    seed: int,
    out: Path,
    fmt: str,
    steps: int,
    adapter: Path | None = None,
    options: dict[str, Any] | None = None,
    reward_names: list[str] | None = None,
) -> dict[str, Any]:
    """Sample ``n`` artifacts per prompt with the deterministic sampler; save them and a contact sheet.

    The same (prompt, seed) gives the same initial noise with or without an adapter, so two runs
    can be compared side by side.
    """
    policy = build_policy(model, **(options or {}))
    if adapter is not None:
        load_adapter(policy, adapter)
    all_prompts = [p for p in prompts for _ in range(n)]
    policy.encode_prompts(prompts)
    gen = torch.Generator().manual_seed(seed)
    noise = policy.initial_noise(len(all_prompts), gen)
    schedule = make_schedule(policy, steps)
    tic = time.perf_counter()
    with torch.no_grad():
        cond = policy.encode_prompts(all_prompts)
        traj = sample(
            policy, schedule, cond, noise, kernel="ode", noise_level=0.0, sde_steps=None, generator=None
        )
        artifacts = policy.decode(traj.latents[:, -1], cond)
    elapsed = time.perf_counter() - tic
    out.mkdir(parents=True, exist_ok=True)
    scores: dict[str, list[float]] = {}
    if reward_names:
        mix = RewardMix([build_reward(r) for r in reward_names], [1.0] * len(reward_names))
        _, comps = mix(artifacts, all_prompts)
        scores = {k: [float(x) for x in v] for k, v in comps.items() if k in reward_names}
    items = []
    for i, (prompt, artifact) in enumerate(zip(all_prompts, artifacts, strict=True)):
        path = save_artifact(artifact, out / f"{i:03d}_{safe_name(prompt)}", fmt)
        items.append(
            {"prompt": prompt, "path": str(path) if path else None, **{k: v[i] for k, v in scores.items()}}
        )
    labels = [
        " ".join([p] + [f"{k[:3]}={v[i]:.2f}" for k, v in scores.items()]) for i, p in enumerate(all_prompts)
    ]
    sheet = preview(artifacts, labels, out / "contact_sheet.png", policy)
    result = {
        "items": items,
        "sheet": str(sheet) if sheet else None,
        "seconds": elapsed,
        "empty": sum(a is None for a in artifacts),
    }
    atomic_write_json(out / "samples.json", result)
    return result
