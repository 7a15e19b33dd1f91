"""The GRPO trainer (Flow-GRPO / DanceGRPO / DDPO-style), one obvious loop.

rollout (no grad) → decode → rewards → group advantages → K inner epochs of PPO-clip updates over
the same (sample batch, timestep) pairs → checkpoint. The same ``transition`` function samples and
re-evaluates log-probabilities with the same batch composition, so the ratio of the first inner
step is exactly 1 (logged as ``ratio_first_step_maxdev``, which must be 0).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from r3d.core import distributed as dist
from r3d.core.advantages import PerPromptStatTracker
from r3d.core.checkpoint import load_adapter_weights, load_state, save_checkpoint
from r3d.core.config import GRPORecipe
from r3d.core.ema import ParameterEMA, trainable
from r3d.core.errors import R3DError
from r3d.core.gold import EvalContext, GoldSet, OverOptimisationGuard, describe
from r3d.core.io import append_jsonl, atomic_write_text, read_jsonl
from r3d.core.kernels import StepOutput
from r3d.core.lora import adapter_disabled
from r3d.core.losses import flow_grpo_kl, gaussian_kl, grpo_policy_loss
from r3d.core.policy import Policy, SavesPreview
from r3d.core.recipe import save_resolved
from r3d.core.rewards import RewardMix
from r3d.core.rollout import (
    Rollout,
    Schedule,
    Trajectory,
    check_kernel,
    make_schedule,
    sample,
    transition,
)

Logger = Callable[[str], None]


@dataclass
class StepLoss:
    """The loss of one (chunk, step) pair of an update, from :meth:`GRPOTrainer.step_loss`.

    loss: scalar, the mean over the chunk's samples (backpropagated by the update loop);
    metrics: scalar tensors averaged into the iteration's metrics; out: the policy's replayed
    transition (its ``log_prob`` (B,) gives the on-policy ratio of the first update).
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    out: StepOutput


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # both: finish the iteration, save a checkpoint, stop


def attach_lora(policy: Any, rank: int, alpha: float, target_modules: list[str] | None = None) -> Any:
    """Wrap ``policy.network`` with a peft LoRA adapter in place (dropout 0); returns the PeftModel."""
    targets = target_modules or list(policy.lora_target_modules)
    lora = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets)
    return get_peft_model(policy.network, lora)


class GRPOTrainer:
    """Drives any ``FlowPolicy`` / ``DiffusionPolicy`` with any ``RewardMix``.

    ``preview(artifacts, labels, path)``: optional, draws evaluation samples (e.g. a contact sheet).
    ``gold``: optional gold measures computed at each evaluation (never trained on) and watched by the
    over-optimisation guard (:mod:`r3d.core.gold`).
    """

    def __init__(
        self,
        recipe: GRPORecipe,
        policy: Policy,
        rewards: RewardMix,
        run_dir: str | Path,
        log: Logger = print,
        preview: Callable[[list[Any], list[str], Path], Any] | None = None,
        progress: Callable[[int, int, dict[str, float]], None] | None = None,
        gold: GoldSet | None = None,
    ) -> None:
        self.cfg = recipe
        self.policy = policy
        self.rewards = rewards
        dist.check_joined()  # the entry point joined the launcher's group (init_from_env)
        self.world, self.rank = dist.world_size(), dist.rank()
        self.main = self.rank == 0
        self.run_dir = Path(run_dir)
        self.log = log if self.main else (lambda _: None)
        self.preview = preview or (policy.save_preview if isinstance(policy, SavesPreview) else None)
        self.progress = progress
        t = recipe.train
        if t.samples_per_update is not None and t.samples_per_update % self.world:
            raise R3DError(
                f"train.samples_per_update = {t.samples_per_update} must divide by the {self.world} processes"
            )
        # LoRA's random init (torch's default seed differs per process) from run.seed: a run is
        # reproducible, and every rank starts from rank 0's adapter, as DDP does.
        with torch.random.fork_rng():
            torch.manual_seed(recipe.run.seed)
            self.peft = attach_lora(policy, t.lora.rank, t.lora.alpha, t.lora.target_modules)
        self.params = [p for p in self.peft.parameters() if p.requires_grad]
        if not self.params:
            raise R3DError("LoRA found no trainable parameters; check train.lora.target_modules")
        dist.broadcast_from_main(self.params)
        n_samples = t.prompts_per_iteration * t.group_size
        if n_samples % self.world:
            raise R3DError(
                f"prompts_per_iteration × group_size = {n_samples} must divide by the {self.world} processes"
            )
        self.optimizer = torch.optim.AdamW(
            self.params, lr=t.lr, betas=t.adam_betas, weight_decay=t.weight_decay, foreach=True
        )  # foreach: one call over the adapter's tensors (the same floats as the per-tensor loop)
        self.tracker = PerPromptStatTracker(
            buffer_size=t.buffer_size,
            min_count=t.buffer_min_count,
            global_std=t.global_std,
            clip=t.adv_clip_max,
        )
        self.sample_gen = torch.Generator().manual_seed(recipe.run.seed)
        self.train_gen = torch.Generator().manual_seed(recipe.run.seed + 1_000_003)
        self.schedule = make_schedule(policy, recipe.sampler.num_steps)
        check_kernel(self.schedule, recipe.sampler.kernel, recipe.model.name)
        self.iteration = 0
        self._stop_requested = False
        self.ema = self._new_ema() if t.ema.enabled else None
        self.gold = gold if gold is not None and gold.measures else None
        self.guard = self._new_guard()
        self._reference: tuple[torch.Tensor, list[Any]] | None = None  # base samples at the eval noise

    def _new_guard(self) -> OverOptimisationGuard | None:
        """The over-optimisation guard over the guarded gold headlines (None without any)."""
        if self.gold is None or not self.gold.guarded:
            return None
        patience = self.cfg.train.stop_on_gold_drop or self.cfg.eval.gold_warn_after
        return OverOptimisationGuard(self.gold.guarded, patience, self.cfg.eval.gold_noise_z)

    def _new_ema(self) -> ParameterEMA:
        """An EMA of the adapter's trainable weights as they are now (``train.ema``)."""
        e = self.cfg.train.ema
        return ParameterEMA(trainable(self.peft), e.decay, e.update_interval, e.warmup)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "sample_gen": self.sample_gen.get_state(),
            "train_gen": self.train_gen.get_state(),
            "tracker": self.tracker.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def save(self) -> Path | None:
        if not self.main:
            return None
        path = save_checkpoint(self.run_dir / "checkpoint", self.peft, self.state_dict())
        self.log(f"checkpoint saved at iteration {self.iteration}: {path}")
        return path

    def resume(self) -> None:
        ckpt = self.run_dir / "checkpoint"
        state = load_state(ckpt)
        load_adapter_weights(self.peft, ckpt)
        self.optimizer.load_state_dict(state["optimizer"])
        self.sample_gen.set_state(state["sample_gen"])
        self.train_gen.set_state(state["train_gen"])
        self.tracker.load_state_dict(state["tracker"])
        self.iteration = int(state["iteration"])
        if self.ema is not None:
            if "ema" in state:
                self.ema.load_state_dict(state["ema"])
            else:
                self.ema = self._new_ema()
                self.log("the checkpoint has no EMA: the EMA starts from the resumed weights")
        # Metrics logged after the checkpoint belong to work that is redone now.
        if self.main:
            kept = [
                r
                for r in read_jsonl(self.run_dir / "metrics.jsonl")
                if r.get("iteration", 0) <= self.iteration
            ]
            atomic_write_text(self.run_dir / "metrics.jsonl", "".join(_json_line(r) for r in kept))
        if self.guard is not None:  # the guard's state is a function of the evaluations kept
            kept = [
                r
                for r in read_jsonl(self.run_dir / "metrics.jsonl")
                if r.get("iteration", 0) <= self.iteration
            ]
            self.guard = self._new_guard().replay(kept)
        self.log(f"resumed from {ckpt} at iteration {self.iteration}")

    # ----------------------------------------------------------------- rollout
    def _choose_prompts(self) -> list[str]:
        t, train = self.cfg.train, self.cfg.prompts.train
        idx = torch.randperm(len(train), generator=self.train_gen)
        idx = torch.cat([idx] * math.ceil(t.prompts_per_iteration / len(train)))[: t.prompts_per_iteration]
        return [train[int(i)] for i in idx]

    def _sde_steps(self) -> torch.Tensor:
        s = self.cfg.sampler
        n = self.schedule.num_steps
        mask = torch.zeros(n, dtype=torch.bool)
        lo, hi = s.sde_window.range or (0, n)
        size = s.sde_window.size
        if size is None:
            mask[lo:hi] = True
        else:
            start = lo + int(torch.randint(0, max(hi - lo - size, 0) + 1, (1,), generator=self.train_gen))
            mask[start : start + size] = True
        return mask

    def _noise(
        self, n_groups: int, group_size: int, generator: torch.Generator, shared: bool
    ) -> torch.Tensor:
        if shared:
            return self.policy.initial_noise(n_groups, generator).repeat_interleave(group_size, dim=0)
        return self.policy.initial_noise(n_groups * group_size, generator)

    def _chunks(self, n: int) -> list[torch.Tensor]:
        return list(torch.arange(n).split(self.cfg.train.batch_size))

    def rollout(
        self,
        prompts: list[str],
        noise: torch.Tensor,
        kernel: str,
        sde_steps: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        schedule: Schedule | None = None,
        on_chunk: Callable[[torch.Tensor, Any, Trajectory], None] | None = None,
    ) -> Rollout:
        """Sample ``prompts`` from ``noise`` chunk by chunk (``train.batch_size``); ``generator`` is
        one generator or one per sample. ``on_chunk(idx, cond, traj)`` is called after each chunk
        (idx: (n,) positions in ``prompts``; cond: the chunk's conditions)."""
        schedule = schedule or self.schedule
        cond = self.policy.encode_prompts(prompts)
        trajs = []
        for idx in self._chunks(len(prompts)):
            c = self.policy.select_cond(cond, idx)
            gen = [generator[int(i)] for i in idx] if isinstance(generator, list) else generator
            trajs.append(
                sample(
                    self.policy,
                    schedule,
                    c,
                    noise[idx],
                    kernel=kernel,
                    noise_level=self.cfg.sampler.noise_level,
                    sde_steps=sde_steps,
                    generator=gen,
                )
            )
            if on_chunk is not None:
                on_chunk(idx, c, trajs[-1])
        return Rollout(
            prompts=list(prompts),
            cond=cond,
            latents=_cat([t.latents for t in trajs]),
            log_probs=_cat([t.log_probs for t in trajs]),
            has_density=trajs[0].has_density,
        )

    # ----------------------------------------------------------------- training
    def _train_steps(self, has_density: torch.Tensor) -> list[int]:
        candidates = torch.nonzero(has_density).flatten()
        if candidates.numel() == 0:
            raise R3DError(
                "no trainable steps: the SDE window holds only steps with std 0 (widen sampler.sde_window)"
            )
        k = max(1, round(self.cfg.train.timestep_fraction * candidates.numel()))
        order = torch.randperm(candidates.numel(), generator=self.train_gen)[:k]
        return sorted(int(candidates[i]) for i in order)

    def replay(self, step: int, x: torch.Tensor, cond: Any, x_next: torch.Tensor) -> Any:
        """Re-evaluate the rollout transition x → x_next at ``step`` (same code path as sampling)."""
        s = self.cfg.sampler
        return transition(
            self.policy,
            self.schedule,
            step,
            x,
            cond,
            kernel=s.kernel,
            noise_level=s.noise_level,
            prev_sample=x_next,
        )

    def optimizer_step(self, sums: dict[str, float], weight: int) -> None:
        """Average gradients over ranks, clip them (logging the norm ``weight`` times), step."""
        dist.average_gradients(self.params)
        max_norm = self.cfg.train.max_grad_norm
        if max_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm, foreach=True)
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(norm) * weight
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()

    def _updates(self, n: int) -> list[list[torch.Tensor]]:
        """For each optimizer step, the chunks (index tensors of ≤ ``batch_size`` local samples) whose
        gradients it accumulates: one chunk per step unless ``train.samples_per_update`` is set."""
        per_update = self.cfg.train.samples_per_update
        if per_update is None:
            return [[idx] for idx in self._chunks(n)]
        local = per_update // self.world
        batch = self.cfg.train.batch_size
        return [list(torch.arange(s, min(s + local, n)).split(batch)) for s in range(0, n, local)]

    def _kl(self, step: int, out: Any, ref: Any) -> torch.Tensor:
        """KL to the reference transition at ``step`` → (B,), by ``train.kl_type``."""
        if self.cfg.train.kl_type == "exact":
            return gaussian_kl(out.mean, ref.mean, out.std)
        std_dev_t = out.std
        if self.cfg.sampler.kernel == "flow_sde":  # flow_grpo's σ_t: the std without its √(−dt)
            std_dev_t = out.std / torch.sqrt(self.schedule.points[step] - self.schedule.points[step + 1])
        return flow_grpo_kl(out.mean, ref.mean, std_dev_t)

    def step_loss(
        self, roll: Rollout, idx: torch.Tensor, cond: Any, step: int, advantages: torch.Tensor
    ) -> StepLoss:
        """GRPO's loss at ``step`` for the samples ``idx`` (cond: their conditions): PPO-clip on the
        ratio to the rollout's log-probabilities, plus ``kl_beta`` × KL to the reference (LoRA off).
        The per-step hook a trainer overrides to change the objective (see :class:`NablaTrainer`)."""
        t = self.cfg.train
        x, x_next = roll.latents[idx, step], roll.latents[idx, step + 1]
        out = self.replay(step, x, cond, x_next)
        old = roll.log_probs[idx, step]
        policy_loss, m = grpo_policy_loss(out.log_prob, old, advantages[idx], t.clip_range)
        loss = policy_loss
        if t.kl_beta > 0:
            with torch.no_grad(), adapter_disabled(self.peft):
                ref = self.replay(step, x, cond, x_next)
            kl = self._kl(step, out, ref).mean()
            loss = loss + t.kl_beta * kl
            m["kl"] = kl.detach()
        m["policy_loss"] = policy_loss.detach()
        return StepLoss(loss, m, out)

    def update_metrics(self) -> dict[str, float]:
        """Extra per-rank metrics of the update just done (averaged over ranks with the others)."""
        return {}

    def update(self, roll: Rollout, advantages: torch.Tensor, steps: list[int]) -> dict[str, float]:
        """``train.inner_epochs`` passes over the rollout's chunks at the chosen ``steps``: one optimizer
        step per update group (:meth:`_updates`), each (chunk, step) loss from :meth:`step_loss`."""
        t = self.cfg.train
        updates = self._updates(advantages.shape[0])
        sums: dict[str, float] = {}
        count = 0
        first_ratios: list[torch.Tensor] = []
        for epoch in range(t.inner_epochs):
            order = (
                range(len(updates))
                if epoch == 0
                else torch.randperm(len(updates), generator=self.train_gen).tolist()
            )
            for n_update, ui in enumerate(order):
                chunks = updates[ui]
                n_update_samples = sum(len(idx) for idx in chunks)
                self.optimizer.zero_grad(set_to_none=True)
                for idx in chunks:
                    cond = self.policy.select_cond(roll.cond, idx)
                    # each chunk's mean loss weighs len(idx) / n_update_samples of the update's mean
                    scale = len(steps) if len(chunks) == 1 else len(steps) * n_update_samples / len(idx)
                    for step in steps:
                        part = self.step_loss(roll, idx, cond, step, advantages)
                        (part.loss / scale).backward()
                        if epoch == 0 and n_update == 0:
                            first_ratios.append(
                                torch.exp(part.out.log_prob.detach() - roll.log_probs[idx, step])
                            )
                        for key, value in part.metrics.items():
                            sums[key] = sums.get(key, 0.0) + float(value)
                        count += 1
                self.optimizer_step(sums, len(steps) * len(chunks))
        metrics = {k: v / count for k, v in sums.items()}
        ratios = torch.cat(first_ratios)
        metrics["ratio_first_step_mean"] = float(ratios.mean())
        metrics["ratio_first_step_maxdev"] = float((ratios - 1).abs().max())
        metrics.update(self.update_metrics())
        return dist.average_scalars(metrics)

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, tag: str) -> dict[str, float]:
        """Fixed-noise evaluation on the held-out prompts (with the EMA weights when train.ema is on)."""
        if self.ema is None:
            return self._evaluate(tag)
        with self.ema.swapped_in():
            return self._evaluate(tag)

    @torch.no_grad()
    def _evaluate(self, tag: str) -> dict[str, float]:
        e, s = self.cfg.eval, self.cfg.sampler
        prompts = self.cfg.prompts.eval or self.cfg.prompts.train
        prompts = [p for p in prompts for _ in range(e.samples_per_prompt)]
        gen = torch.Generator().manual_seed(e.seed)
        noise = self.policy.initial_noise(len(prompts), gen)
        schedule = make_schedule(self.policy, e.num_steps) if e.num_steps else self.schedule
        kernel = "ode" if s.eval_kernel == "ode" else s.kernel
        sde = torch.ones(schedule.num_steps, dtype=torch.bool)
        roll = self.rollout(prompts, noise, kernel, sde, gen, schedule)
        artifacts = self.policy.decode(roll.final, roll.cond)
        total, comps = self.rewards(artifacts, prompts)
        metrics = {"eval/reward": float(total.mean())}
        metrics.update({f"eval/{k}": float(v.mean()) for k, v in comps.items()})
        if self.gold is not None:

            def reference() -> tuple[torch.Tensor, list[Any]]:
                return self._reference_samples(prompts, kernel, sde, schedule)

            context = EvalContext(roll.final, roll.cond, reference, self.policy)
            metrics.update(self.gold(artifacts, prompts, context))
        if self.preview is not None and self.main:
            labels = [f"{p} | {float(r):.2f}" for p, r in zip(prompts, total, strict=True)]
            self.preview(artifacts, labels, self.run_dir / f"samples_{tag}.png")
        return metrics

    @torch.no_grad()
    def _reference_samples(
        self, prompts: list[str], kernel: str, sde: torch.Tensor, schedule: Schedule
    ) -> tuple[torch.Tensor, list[Any]]:
        """Clean latents and artifacts of the base model (adapter disabled) from the evaluation's noise;
        computed once per trainer (the base does not change)."""
        if self._reference is None:
            gen = torch.Generator().manual_seed(self.cfg.eval.seed)
            noise = self.policy.initial_noise(len(prompts), gen)
            with self.peft.disable_adapter():
                roll = self.rollout(prompts, noise, kernel, sde, gen, schedule)
                self._reference = (roll.final, self.policy.decode(roll.final, roll.cond))
        return self._reference

    def _watch_gold(self, metrics: dict[str, float]) -> bool:
        """Feed an evaluation to the over-optimisation guard: keep the best-gold checkpoint, warn when
        it fires; True when ``train.stop_on_gold_drop`` asks to stop now."""
        if self.guard is None or "eval/reward" not in metrics:
            return False
        events = self.guard.update(metrics)
        stop_k = self.cfg.train.stop_on_gold_drop
        if stop_k is not None and self.guard.new_best and self.main:
            path = save_checkpoint(self.run_dir / "checkpoint_best_gold", self.peft, self.state_dict())
            self.log(f"best {self.guard.golds[0]} so far at iteration {self.iteration}: {path}")
        for event in events:
            self.log("warning: " + describe(event))
        if stop_k is None or not events:
            return False
        self.log(
            f"train.stop_on_gold_drop: {stop_k}: stopping at iteration {self.iteration}; the best-gold "
            f"adapter is in {self.run_dir / 'checkpoint_best_gold'}"
        )
        return True

    # ----------------------------------------------------------------- loop
    def run_iteration(self) -> dict[str, float]:
        """One GRPO iteration over the global batch; this rank samples and trains its slice."""
        t = self.cfg.train
        metrics: dict[str, float] = {"iteration": self.iteration + 1}
        prompts_once = self._choose_prompts()
        all_prompts = [p for p in prompts_once for _ in range(t.group_size)]
        sde_steps = self._sde_steps()
        noise = self._noise(len(prompts_once), t.group_size, self.sample_gen, self.cfg.sampler.shared_noise)
        # One noise stream per global sample: results do not depend on chunking or process count.
        base = int(torch.randint(0, 2**62, (1,), generator=self.sample_gen))
        n_local = len(all_prompts) // self.world
        mine = range(self.rank * n_local, (self.rank + 1) * n_local)
        prompts = [all_prompts[i] for i in mine]
        gens = [torch.Generator().manual_seed(base + i) for i in mine]
        rollout_and_score = self._overlapped if t.overlap_rewards else self._sequential
        local_noise = noise[mine.start : mine.stop]
        roll, total, comps = rollout_and_score(prompts, local_noise, sde_steps, gens, metrics)
        tic = time.perf_counter()
        total = dist.gather_cat(total)
        comps = {k: dist.gather_cat(comps[k]) for k in sorted(comps)}
        metrics["time/reward_s"] += time.perf_counter() - tic
        stats = self.tracker.update(all_prompts, total)
        metrics["reward"] = float(total.mean())
        metrics["reward_std"] = float(total.std(unbiased=False))
        metrics.update({f"reward/{k}": float(v.mean()) for k, v in comps.items()})
        metrics["zero_variance_groups"] = stats.zero_variance_fraction
        tic = time.perf_counter()
        advantages = stats.advantages[mine.start : mine.stop]
        metrics.update(self.update(roll, advantages, self._train_steps(roll.has_density)))
        metrics["time/train_s"] = time.perf_counter() - tic
        self.iteration += 1
        return metrics

    def _sequential(
        self, prompts: list[str], noise: torch.Tensor, sde_steps: torch.Tensor, gens: list, metrics: dict
    ) -> tuple[Rollout, torch.Tensor, dict[str, torch.Tensor]]:
        """Sample every chunk, then decode all, then score all; times go into ``metrics``."""
        tic = time.perf_counter()
        roll = self.rollout(prompts, noise, self.cfg.sampler.kernel, sde_steps, gens)
        metrics["time/sample_s"] = time.perf_counter() - tic
        tic = time.perf_counter()
        with torch.no_grad():
            artifacts = self.policy.decode(roll.final, roll.cond)
        metrics["time/decode_s"] = time.perf_counter() - tic
        tic = time.perf_counter()
        total, comps = self.rewards(artifacts, prompts)
        metrics["time/reward_s"] = time.perf_counter() - tic
        return roll, total, comps

    def _overlapped(
        self, prompts: list[str], noise: torch.Tensor, sde_steps: torch.Tensor, gens: list, metrics: dict
    ) -> tuple[Rollout, torch.Tensor, dict[str, torch.Tensor]]:
        """Like :meth:`_sequential`, but chunk k is decoded and scored in one worker thread while
        chunk k+1 is sampled; results are concatenated in chunk order. ``time/reward_s`` is the time
        the loop waited for rewards after sampling, ``time/reward_worker_s`` the worker's busy time."""

        def decode_and_score(x0: torch.Tensor, cond: Any, chunk_prompts: list[str]) -> tuple:
            tic = time.perf_counter()
            with torch.no_grad():
                artifacts = self.policy.decode(x0, cond)
            return *self.rewards(artifacts, chunk_prompts), time.perf_counter() - tic

        futures: list[Future] = []
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r3d-rewards")

        def submit(idx: torch.Tensor, cond: Any, traj: Trajectory) -> None:
            chunk_prompts = [prompts[int(i)] for i in idx]
            futures.append(pool.submit(decode_and_score, traj.latents[:, -1], cond, chunk_prompts))

        try:
            tic = time.perf_counter()
            roll = self.rollout(prompts, noise, self.cfg.sampler.kernel, sde_steps, gens, on_chunk=submit)
            metrics["time/sample_s"] = time.perf_counter() - tic
            tic = time.perf_counter()
            results = [f.result() for f in futures]
            metrics["time/reward_s"] = time.perf_counter() - tic
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        metrics["time/reward_worker_s"] = sum(r[2] for r in results)
        total = torch.cat([r[0] for r in results])
        comps = {k: torch.cat([r[1][k] for r in results]) for k in results[0][1]}
        return roll, total, comps

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        """SIGINT (Ctrl-C) or SIGTERM (schedulers: SLURM, Kubernetes): finish the iteration, save, stop;
        a second one aborts at once."""
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.log(f"{name}: finishing this iteration, then saving a checkpoint (send it again to abort now)")

    def train(self, resume: bool = False) -> list[dict[str, float]]:
        """Run until ``train.iterations``; returns the metrics records of this call."""
        if resume:
            self.resume()
        elif (self.run_dir / "checkpoint").exists():
            raise R3DError(
                f"{self.run_dir} already holds a run; use --resume {self.run_dir} or another --out"
            )
        writer = None
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            save_resolved(self.cfg, self.run_dir / "recipe.yaml")
            writer = _tensorboard(self.run_dir / "tb")
        records: list[dict[str, float]] = []
        previous = (
            {sig: signal.signal(sig, self._on_stop_signal) for sig in STOP_SIGNALS} if _main_thread() else {}
        )
        try:
            if self.iteration == 0:
                start = {"iteration": 0, **self.evaluate("start")}
                self._record(start, records, writer)
                self._watch_gold(start)
            total = self.cfg.train.iterations
            while self.iteration < total:
                tic = time.perf_counter()
                metrics = self.run_iteration()
                last = self.iteration == total
                every = self.cfg.eval.every
                if last or (every and self.iteration % every == 0):
                    metrics.update(self.evaluate("end" if last else f"{self.iteration:04d}"))
                metrics["time/iteration_s"] = time.perf_counter() - tic
                self._record(metrics, records, writer)
                gold_stop = dist.any_rank(self._watch_gold(metrics))
                if self.progress:
                    self.progress(self.iteration, total, metrics)
                self._stop_requested = dist.any_rank(self._stop_requested)
                if (
                    last
                    or self._stop_requested
                    or gold_stop
                    or self.iteration % self.cfg.checkpoint.every == 0
                ):
                    self.save()
                if gold_stop:
                    break
                if self._stop_requested:
                    self.log(f"stopped at iteration {self.iteration}; continue with --resume {self.run_dir}")
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if writer is not None:
                writer.close()
        return records

    def _record(self, metrics: dict[str, float], records: list, writer: Any) -> None:
        records.append(metrics)
        if not self.main:
            return
        append_jsonl(self.run_dir / "metrics.jsonl", metrics)
        if writer is not None:
            for key, value in metrics.items():
                if key != "iteration":
                    writer.add_scalar(key, value, int(metrics["iteration"]))
            writer.flush()


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat, without copying a single tensor (one chunk: ~0.2 ms for tiny-shapes' latents)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _json_line(record: dict) -> str:
    import json

    return json.dumps(record) + "\n"


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _tensorboard(path: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter  # tensorboard is a declared dependency

    return SummaryWriter(str(path))
