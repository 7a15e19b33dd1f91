"""Training of ``r3d train-vqvae``: :class:`VQVAETrainer` (stages ``vae``, ``codebook``, ``joint``; see
config.py) and :func:`train_vqvae`, which builds, resumes and runs one.

Per step: a deterministic batch (data.StepBatches) → the stage's loss → AdamW step (gradient clipping,
warm-up + schedule) → EMA codebook update / dead-code restart inside the quantizer. Every ``eval_every``
steps (and at step 0 and at the end) the model is evaluated without augmentation on the training and
the held-out files: reconstruction IoU / F1 at logit > 0 (per shape, averaged), loss terms and codebook
health (usage, perplexity, codes used over the pass, dead codes). Metrics go to ``metrics.jsonl`` and
TensorBoard (``tb/``); checkpoints to ``checkpoints/step-N`` (atomic; ``--resume`` continues exactly);
Ctrl-C writes a checkpoint before stopping. At the end: ``final/``, ``export/`` (TRELLIS-format
encoder/decoder + codebook) and ``summary.json``. Library code: nothing is printed; lines go to a
``log`` callback and per-step progress to a ``progress`` callback (the CLI draws them).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from r3d.core.device import resolve_device
from r3d.core.errors import R3DError
from r3d.core.io import append_jsonl, atomic_write_json, atomic_write_text
from r3d.core.recipe import save_resolved
from r3d.vqvae.checkpoint import (
    build_model,
    build_quantizer,
    export_trellis,
    latest_checkpoint,
    load_state,
    load_trainer_state,
    record_latest,
    save_checkpoint,
)
from r3d.vqvae.config import VQVAERecipe
from r3d.vqvae.data import StepBatches, VoxelGrids, scan_voxel_folder, split_holdout
from r3d.vqvae.model import SSVQVAE, group_tokens
from r3d.vqvae.quantizers import VectorQuantizer, stats_from_counts
from r3d.vqvae.ss_vae import SparseStructureDecoder, SparseStructureEncoder, load_trellis_ss

# ----------------------------------------------------------------------------- losses and metrics


def recon_terms(
    logits: torch.Tensor, target: torch.Tensor, weights: dict[str, float]
) -> dict[str, torch.Tensor]:
    """Reconstruction terms with non-zero weight: l1 / l2 on sigmoid(logits), TRELLIS's dice, BCE."""
    logits = logits.float()
    p = torch.sigmoid(logits)
    out: dict[str, torch.Tensor] = {}
    if weights.get("l1", 0) > 0:
        out["l1"] = (p - target).abs().mean()
    if weights.get("l2", 0) > 0:
        out["l2"] = ((p - target) ** 2).mean()
    if weights.get("dice", 0) > 0:
        out["dice"] = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    if weights.get("bce", 0) > 0:
        out["bce"] = F.binary_cross_entropy_with_logits(logits, target)
    return out


def iou_f1(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample IoU and F1 of ``logits > 0`` against a binary target; both (B,) (1 when both empty)."""
    pred = (logits > 0).flatten(1)
    gt = target.flatten(1) > 0.5
    tp = (pred & gt).sum(1).double()
    fp = (pred & ~gt).sum(1).double()
    fn = (~pred & gt).sum(1).double()
    denom = tp + fp + fn
    iou = torch.where(denom > 0, tp / denom.clamp_min(1), torch.ones_like(tp))
    f1 = torch.where(denom > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.ones_like(tp))
    return iou, f1


def lr_factor(step: int, total: int, s: Any) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then constant / cosine / exponential / step."""
    if s.warmup_steps and step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    t = step - s.warmup_steps
    if s.kind == "cosine":
        progress = min(t / max(total - s.warmup_steps, 1), 1.0)
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if s.kind == "exponential":
        return s.gamma ** (t / s.step_size)
    if s.kind == "step":
        return s.gamma ** (t // s.step_size)
    return 1.0


def state_digest(*modules: torch.nn.Module) -> str:
    """sha256 over the exact bytes of the modules' state dicts (bit-identity check)."""
    h = hashlib.sha256()
    for m in modules:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- setup


def pretrained_prefixes(cfg: VQVAERecipe) -> tuple[Path, Path] | None:
    """Locate ``<encoder_file>`` / ``<decoder_file>`` under ``model.pretrained`` (or its ckpts/)."""
    if not cfg.model.pretrained:
        return None
    root = Path(cfg.model.pretrained).expanduser()
    if not root.exists() and "/" not in cfg.model.pretrained:  # a fetch-weights name such as trellis-ss
        try:
            from r3d.core.weights import default_dir

            root = default_dir(cfg.model.pretrained)
        except (ImportError, KeyError, R3DError):
            pass
    for base in (root, root / "ckpts", root / "export"):
        enc, dec = base / cfg.model.encoder_file, base / cfg.model.decoder_file
        if all(Path(str(p) + ext).is_file() for p in (enc, dec) for ext in (".json", ".safetensors")):
            return enc, dec
    raise R3DError(
        f"--pretrained {root}: need {cfg.model.encoder_file}.json/.safetensors and "
        f"{cfg.model.decoder_file}.json/.safetensors there or in its ckpts/ (TRELLIS-image-large) or export/ "
        "(an r3d train-vqvae run)"
    )


def build_from_recipe(cfg: VQVAERecipe) -> tuple[SSVQVAE, str]:
    """Model per recipe: ``init_from`` run > pretrained TRELLIS files > random ``arch``. Returns (model, source)."""
    qcfg = cfg.model.quantizer.model_dump()
    if cfg.init_from:
        ckpt = latest_checkpoint(cfg.init_from)
        if ckpt is None:
            raise R3DError(f"--init-from {cfg.init_from}: no checkpoint (final/ or checkpoints/) found there")
        config, state = load_state(ckpt)
        config = {**config, "quantizer": qcfg, "group": cfg.model.quantizer.group}
        model = build_model(config)
        for part in ("encoder", "decoder"):
            sub = {k[len(part) + 1 :]: v for k, v in state.items() if k.startswith(part + ".")}
            getattr(model, part).load_state_dict(sub, strict=True)
        qstate = {k[len("quantizer.") :]: v for k, v in state.items() if k.startswith("quantizer.")}
        _load_quantizer(model.quantizer, qstate, ckpt)
        return model, f"init_from {ckpt}"
    found = pretrained_prefixes(cfg)
    if cfg.train.stage == "codebook" and not found:
        raise R3DError(
            "stage codebook trains only the codebook of a pretrained encoder/decoder: pass --pretrained DIR "
            "(TRELLIS-image-large ckpts/ or a stage-vae run's export/) or --init-from RUN"
        )
    if found:
        enc = load_trellis_ss(found[0], use_fp16=False).train()
        dec = load_trellis_ss(found[1], use_fp16=False).train()
        source = f"pretrained {found[0].parent}"
    else:
        a = cfg.model.arch
        common = dict(
            latent_channels=a.latent_channels,
            num_res_blocks=a.num_res_blocks,
            num_res_blocks_middle=a.num_res_blocks_middle,
            norm_type=a.norm_type,
        )
        enc = SparseStructureEncoder(in_channels=1, channels=list(a.channels), **common)
        dec = SparseStructureDecoder(out_channels=1, channels=list(a.channels)[::-1], **common)
        enc.export_fp16 = dec.export_fp16 = a.use_fp16  # trains in fp32, exports as the config says
        source = "random init"
    if not isinstance(enc, SparseStructureEncoder) or not isinstance(dec, SparseStructureDecoder):
        raise R3DError("pretrained encoder/decoder files hold the wrong model types (swapped names?)")
    quant = build_quantizer(qcfg, cfg.model.quantizer.group * enc.latent_channels)
    return SSVQVAE(enc, dec, quant, cfg.model.quantizer.group), source


def _load_quantizer(quant: torch.nn.Module, qstate: dict[str, torch.Tensor], ckpt: Path) -> None:
    """Load a previous stage's codebook into a possibly differently configured quantizer."""
    if isinstance(quant, VectorQuantizer):
        emb = qstate.get("embedding")
        if emb is None or tuple(emb.shape) != tuple(quant.embedding.shape):
            got = None if emb is None else tuple(emb.shape)
            raise R3DError(f"{ckpt}: codebook {got} does not fit the recipe's {tuple(quant.embedding.shape)}")
        missing = quant.load_state_dict(qstate, strict=False).missing_keys
        if "ema_count" in missing:  # gradient codebook → EMA: start the averages from the usage
            quant.ema_count.copy_(quant.usage.clamp_min(quant.eps))
            quant.ema_sum.copy_(quant.embedding * quant.ema_count[:, None])
        quant.initialized.fill_(True)
    else:
        quant.load_state_dict(qstate, strict=False)


def configure_trainable(model: SSVQVAE, stage: str) -> dict[str, dict[str, Any]]:
    """Freeze / unfreeze per stage; returns {part: {params, trainable, note}} for the split report."""
    frozen_parts = {"vae": ("quantizer",), "codebook": ("encoder", "decoder"), "joint": ()}[stage]
    split = {}
    for part in ("encoder", "decoder", "quantizer"):
        module = getattr(model, part)
        for p in module.parameters():
            p.requires_grad_(part not in frozen_parts)
        n = sum(p.numel() for p in module.parameters())
        n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
        note = ""
        if part == "quantizer" and isinstance(module, VectorQuantizer) and module.ema_decay is not None:
            note = "EMA codebook (updated without gradients)" if stage != "vae" else "unused in stage vae"
        split[part] = {"params": n, "trainable": n_train, "frozen": part in frozen_parts, "note": note}
    return split


def check_split(split: dict[str, dict[str, Any]], stage: str) -> list[str]:
    """Problems with the frozen/trainable split for ``stage`` (empty list = as required)."""
    problems = []
    for part in ("encoder", "decoder"):
        want_frozen = stage == "codebook"
        s = split[part]
        if want_frozen and s["trainable"]:
            problems.append(f"{part} has {s['trainable']} trainable parameters in stage codebook")
        if not want_frozen and s["trainable"] != s["params"]:
            problems.append(f"{part} is not fully trainable in stage {stage}")
    return problems


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: SSVQVAE, data: VoxelGrids, files: list[int], stage: str, cfg: VQVAERecipe, device: torch.device
) -> dict[str, float]:
    """IoU / F1 / loss terms / codebook statistics over ``files`` (no augmentation, eval mode)."""
    was_training = model.training
    model.eval()
    bs = cfg.train.batch_size
    sums: dict[str, float] = {}
    ious, f1s = [], []
    counts = None
    weights = cfg.loss.model_dump()
    for s in range(0, len(files), bs):
        x = torch.stack([data[(i, 0)] for i in files[s : s + bs]]).to(device)
        if cfg.train.channels_last:
            x = x.to(memory_format=torch.channels_last_3d)
        n = x.shape[0]
        if stage == "vae":
            logits = model.decoder(model.encoder(x))
            terms: dict[str, torch.Tensor] = {}
        else:
            out = model(x)
            logits, terms = out.logits, dict(out.losses)
            k = model.quantizer.codebook_size
            c = torch.bincount(out.indices.reshape(-1).cpu(), minlength=k).double()
            counts = c if counts is None else counts + c
        terms.update(recon_terms(logits, x, weights))
        for name, v in terms.items():
            sums[name] = sums.get(name, 0.0) + float(v) * n
        iou, f1 = iou_f1(logits.float(), x)
        ious.append(iou.cpu())
        f1s.append(f1.cpu())
    model.train(was_training)
    total = len(files)
    metrics = {name: v / total for name, v in sums.items()}
    metrics["iou"] = float(torch.cat(ious).mean())
    metrics["f1"] = float(torch.cat(f1s).mean())
    if counts is not None:
        metrics.update(stats_from_counts(counts))
        metrics["dead_codes"] = float(model.quantizer.dead_codes())
    return metrics


@torch.no_grad()
def kmeans_initialise(
    model: SSVQVAE, data: VoxelGrids, files: list[int], cfg: VQVAERecipe, device: torch.device
) -> int:
    """Gather encoder-mean tokens (every training file × every symmetry, up to the budget) and k-means."""
    q = cfg.model.quantizer
    tokens, n = [], 0
    pairs = [(i, s) for s in range(len(data.syms)) for i in files]
    model.eval()
    for start in range(0, len(pairs), cfg.train.batch_size):
        x = torch.stack([data[p] for p in pairs[start : start + cfg.train.batch_size]]).to(device)
        if cfg.train.channels_last:
            x = x.to(memory_format=torch.channels_last_3d)
        t = group_tokens(model.encoder(x).float(), model.group).reshape(-1, model.quantizer.dim)
        tokens.append(t.cpu())
        n += t.shape[0]
        if n >= q.kmeans_max_tokens:
            break
    model.train()
    latents = torch.cat(tokens)[: q.kmeans_max_tokens]
    g = torch.Generator().manual_seed(cfg.train.seed)
    model.quantizer.init_from(latents.to(device), iters=q.kmeans_iters, generator=g)
    return int(latents.shape[0])


# ----------------------------------------------------------------------------- the run


def _metric_line(step: int, split: str, m: dict[str, float]) -> str:
    keys = [
        k
        for k in ("iou", "f1", "l1", "l2", "dice", "codebook", "usage", "perplexity", "dead_codes")
        if k in m
    ]
    return f"step {step} {split}: " + "  ".join(f"{k} {m[k]:.4g}" for k in keys)


Logger = Callable[[str], None]
ProgressFn = Callable[[int, int, dict[str, float]], None]  # (step, total steps, {shown name: value})


def _quiet(_: str) -> None:
    pass


class VQVAETrainer:
    """One VQ-VAE stage (``vae``, ``codebook``, ``joint``) in the GRPO trainer's style.

    Construction builds everything (data scan, model per recipe, frozen/trainable split, optimizer,
    schedule); :meth:`resume` loads the run's newest checkpoint; :meth:`train` runs to
    ``train.steps``; :meth:`state_dict` / :meth:`load_state_dict` hold the trainer state of a
    checkpoint (step, optimizer, scheduler, grad scaler, torch RNG). Prints nothing: messages go to
    ``log(line)``, per-step progress to ``progress(step, total, {"loss" or "codebook": value})``.
    """

    def __init__(
        self,
        cfg: VQVAERecipe,
        run_dir: str | Path,
        *,
        log: Logger = _quiet,
        progress: ProgressFn | None = None,
    ) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.log, self.progress = log, progress
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.device = resolve_device(cfg.device)
        torch.manual_seed(tc.seed)
        self.voxels = vs = scan_voxel_folder(cfg.data.root, cfg.data.resolution)
        if not vs.files:
            detail = "; ".join(f"{p['name']}: {p['error']}" for p in vs.problems[:3])
            raise R3DError(f"no usable voxel file in {cfg.data.root}" + (f" ({detail})" if detail else ""))
        self.train_idx, self.held_idx = split_holdout(vs, cfg.data.holdout, cfg.data.holdout_every)
        self.data = VoxelGrids(vs.files, cfg.data.resolution, cfg.data.downsample, cfg.data.augment)
        self.model, self.source = build_from_recipe(cfg)
        self.model.to(self.device)
        if tc.channels_last:
            self.model.to(memory_format=torch.channels_last_3d)
        self.split = configure_trainable(self.model, tc.stage)
        problems = check_split(self.split, tc.stage)
        if problems:
            raise R3DError("parameter split is wrong: " + "; ".join(problems))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = (
            torch.optim.AdamW(self.params, lr=tc.lr, betas=tc.adam_betas, weight_decay=tc.weight_decay)
            if self.params
            else None
        )
        self.scheduler = (
            torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, tc.steps, tc.schedule))
            if self.optimizer
            else None
        )
        self.use_amp = self.device.type == "cuda" and tc.amp != "none"
        self.amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and tc.amp == "fp16")
        self.quantizer_cfg = cfg.model.quantizer.model_dump()
        self.loss_weights = cfg.loss.model_dump()
        self.vq = isinstance(self.model.quantizer, VectorQuantizer)
        self.step = 0
        self.last_eval: dict[str, dict[str, float]] = {}
        self._writer: Any = None

    # ----------------------------------------------------------------- state
    def report(self) -> dict[str, Any]:
        """Source, device, stage, parameter split and data report (the head of the summary)."""
        vs = self.voxels
        return {
            "source": self.source,
            "device": str(self.device),
            "stage": self.cfg.train.stage,
            "split": self.split,
            "data": {
                "usable": len(vs.files),
                "train": len(self.train_idx),
                "holdout": len(self.held_idx),
                "problems": vs.problems,
            },
            "train_files": [vs.names[i] for i in self.train_idx],
            "holdout_files": [vs.names[i] for i in self.held_idx],
        }

    def state_dict(self) -> dict[str, Any]:
        """The trainer state of a checkpoint (``trainer.pt``); the model is saved beside it."""
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        if self.optimizer is not None and state.get("optimizer"):
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])  # type: ignore[union-attr]
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])

    def resume(self) -> Path:
        """Load model and trainer state from the run's newest checkpoint; returns that checkpoint."""
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            raise R3DError(f"--resume {self.run_dir}: no checkpoint (final/ or checkpoints/) found there")
        _, state = load_state(ckpt)
        self.model.load_state_dict(state, strict=True)
        self.load_state_dict(load_trainer_state(ckpt))
        self.source = f"resumed {ckpt}"
        return ckpt

    def save(self, final: bool = False) -> Path:
        """Checkpoint ``checkpoints/step-N`` (and point ``latest`` at it) or, with ``final``, ``final/``."""
        at = self.step
        info = {"step": at, "stage": self.cfg.train.stage, "metrics": self.last_eval}
        folder = self.run_dir / "final" if final else self.run_dir / "checkpoints" / f"step-{at:07d}"
        save_checkpoint(folder, self.model, self.quantizer_cfg, self.state_dict(), info)
        if not final:
            record_latest(self.run_dir, folder, self.cfg.train.keep_checkpoints)
        return folder

    # ----------------------------------------------------------------- the run
    def dry_run(self) -> dict[str, Any]:
        """The report plus the shapes of one forward pass (eval mode); writes nothing."""
        x = torch.stack([self.data[(self.train_idx[0], 0)]]).to(self.device)
        with torch.no_grad():
            self.model.eval()
            out = self.model(x)
        shapes = {"input": x.shape, "latent": out.mean.shape, "tokens": out.indices.shape}
        shapes["logits"] = out.logits.shape
        return {**self.report(), "shapes": {k: list(v) for k, v in shapes.items()}}

    def evaluate(self) -> None:
        """Metrics of the training and held-out files at the current step → metrics.jsonl, tb, log."""
        for name, files in (("train", self.train_idx), ("eval", self.held_idx)):
            if files:
                m = evaluate(self.model, self.data, files, self.cfg.train.stage, self.cfg, self.device)
                self.last_eval[name] = m
                self._record({"step": self.step, "split": name, **m})
                self.log(_metric_line(self.step, name, m))

    def _record(self, record: dict[str, Any]) -> None:
        append_jsonl(self.run_dir / "metrics.jsonl", record)
        for k, v in record.items():
            if k not in ("step", "split") and isinstance(v, int | float):
                self._writer.add_scalar(f"{record['split']}/{k}", v, record["step"])

    def _start(self) -> None:
        """Write the run's recipe and data report, report skipped files, k-means the codebook if new."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, self.run_dir / "recipe.yaml")
        atomic_write_json(self.run_dir / "data_report.json", self.report()["data"])
        for p in self.voxels.problems:
            self.log(f"skipped voxel file {p['file']}: {p['error']}")
        q = self.model.quantizer
        if (
            cfg.train.stage != "vae"
            and self.vq
            and not bool(q.initialized)
            and cfg.model.quantizer.kmeans_init
        ):
            t0 = time.perf_counter()
            n_tok = kmeans_initialise(self.model, self.data, self.train_idx, cfg, self.device)
            secs = time.perf_counter() - t0
            self.log(f"k-means: {q.codebook_size} codes on {n_tok} latent tokens in {secs:.1f} s")

    def _train_step(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
        """One optimizer step on batch ``x``; returns the stage's loss, its terms and batch statistics."""
        tc = self.cfg.train
        with torch.autocast(self.device.type, dtype=self.amp_dtype) if self.use_amp else nullcontext():
            loss, terms, stats = _loss(self.model, x, tc.stage, self.loss_weights, self.vq)
        opt = self.optimizer
        if opt is not None and loss.requires_grad:
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if tc.grad_clip:
                self.scaler.unscale_(opt)
                stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip))
            self.scaler.step(opt)
            self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return loss, terms, stats

    def train(self) -> dict[str, Any]:
        """Run to ``train.steps`` (checkpoints, evaluations, final/, export/, summary.json, DONE).

        Ctrl-C saves a checkpoint, logs how to continue and re-raises KeyboardInterrupt.
        """
        from torch.utils.tensorboard import SummaryWriter

        cfg, tc = self.cfg, self.cfg.train
        self._start()
        frozen_digest = (
            state_digest(self.model.encoder, self.model.decoder) if tc.stage == "codebook" else None
        )
        self._writer = SummaryWriter(str(self.run_dir / "tb"))
        loader = torch.utils.data.DataLoader(
            _Subset(self.data, self.train_idx),  # the sampler yields positions in the training list
            batch_sampler=StepBatches(
                len(self.train_idx), len(self.data.syms), tc.batch_size, tc.seed, self.step, tc.steps
            ),
            num_workers=cfg.data.num_workers,
            collate_fn=torch.stack,
        )
        shown_name = "codebook" if tc.stage == "codebook" else "loss"
        t_start = time.perf_counter()
        if self.progress:
            self.progress(self.step, tc.steps, {})
        if self.step == 0:
            self.evaluate()
        self.model.train()
        try:
            t_log = time.perf_counter()
            for x in loader:
                x = x.to(self.device, non_blocking=True)
                if tc.channels_last:
                    x = x.to(memory_format=torch.channels_last_3d)
                loss, terms, stats = self._train_step(x)
                step = self.step
                shown = terms["codebook"] if tc.stage == "codebook" else loss
                if self.progress:
                    self.progress(step, tc.steps, {shown_name: float(shown.detach())})
                if step % tc.log_every == 0 or step == tc.steps:
                    dt = (time.perf_counter() - t_log) / tc.log_every
                    t_log = time.perf_counter()
                    lr = self.optimizer.param_groups[0]["lr"] if self.optimizer else 0.0
                    rec = {
                        "step": step,
                        "split": "step",
                        "loss": float(loss.detach()),
                        **{k: float(v.detach()) for k, v in terms.items()},
                    }
                    self._record({**rec, **stats, "lr": lr, "sec_per_step": dt})
                if step % tc.eval_every == 0 and step != tc.steps:
                    self.evaluate()
                if step % tc.ckpt_every == 0 and step != tc.steps:
                    self.save()
        except KeyboardInterrupt:
            saved = self.save()
            self.log(
                f"interrupted at step {self.step}; checkpoint {saved}; continue with --resume {self.run_dir}"
            )
            self._writer.close()
            raise
        self.evaluate()
        final = self.save(final=True)
        record_latest(self.run_dir, final, tc.keep_checkpoints)
        exported = export_trellis(
            self.model,
            self.run_dir / "export",
            cfg.model.encoder_file,
            cfg.model.decoder_file,
            self.quantizer_cfg,
        )
        self._writer.close()
        summary: dict[str, Any] = {
            **self.report(),
            "run_dir": str(self.run_dir),
            "steps": self.step,
            "seconds": round(time.perf_counter() - t_start, 2),
            "final": str(final),
            "export": [str(p) for p in exported],
            "metrics": self.last_eval,
        }
        if frozen_digest is not None:
            summary["frozen_unchanged"] = frozen_digest == state_digest(
                self.model.encoder, self.model.decoder
            )
            found = pretrained_prefixes(cfg)
            if found:
                summary["export_identical_to_pretrained"] = _same_tensors(found, self.run_dir / "export", cfg)
        atomic_write_json(self.run_dir / "summary.json", summary)
        atomic_write_text(self.run_dir / "DONE", f"{self.step}\n")
        return summary


def train_vqvae(
    cfg: VQVAERecipe,
    run_dir: str | Path,
    *,
    resume: bool = False,
    dry_run: bool = False,
    log: Logger = _quiet,
    progress: ProgressFn | bool | None = None,
) -> dict[str, Any]:
    """Train (or, with ``dry_run``, only set up and check) a VQ-VAE stage into ``run_dir``.

    Returns the summary dict (also ``run_dir/summary.json``); for a dry run: the parameter split,
    the data report and the shapes of one forward pass, and nothing is written. ``log`` / ``progress``:
    see :class:`VQVAETrainer` (a bool ``progress``, the former flag, means no callback).
    """
    callback = progress if callable(progress) else None
    trainer = VQVAETrainer(cfg, run_dir, log=log, progress=callback)
    if resume and latest_checkpoint(run_dir) is not None:
        trainer.resume()
    return trainer.dry_run() if dry_run else trainer.train()


class _Subset(torch.utils.data.Dataset):
    """(position in the training list, symmetry) → sample of the underlying VoxelGrids."""

    def __init__(self, data: VoxelGrids, files: list[int]) -> None:
        self.data, self.files = data, files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        return self.data[(self.files[item[0]], item[1])]


def _loss(
    model: SSVQVAE, x: torch.Tensor, stage: str, w: dict[str, float], vq: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
    """The stage's training loss, its logged terms and batch codebook statistics."""
    stats: dict[str, float] = {}
    if stage == "vae":
        z, mean, logvar = model.encoder(x, sample_posterior=True, return_raw=True)
        terms = recon_terms(model.decoder(z), x, w)
        terms["kl"] = 0.5 * torch.mean(mean.float() ** 2 + logvar.float().exp() - logvar.float() - 1)
        loss = sum(w[k] * v for k, v in terms.items())
        return loss, terms, stats  # type: ignore[return-value]
    if stage == "codebook":
        with torch.no_grad():
            mean = model.encoder(x)
        _, indices, terms = model.quantize(mean)
    else:
        out = model(x)
        indices, terms = out.indices, dict(out.losses)
        terms.update(recon_terms(out.logits, x, w))
    loss = torch.zeros((), device=x.device)
    for k, v in terms.items():
        if k == "commitment":
            loss = loss + w["beta"] * v if stage == "joint" else loss
        elif k == "codebook":
            loss = loss + w["codebook"] * v if vq and model.quantizer.ema_decay is None else loss
        else:
            loss = loss + w[k] * v
    k = model.quantizer.codebook_size
    stats.update(
        {
            f"batch_{n}": v
            for n, v in stats_from_counts(
                torch.bincount(indices.reshape(-1).cpu(), minlength=k).double()
            ).items()
        }
    )
    if vq:
        stats["dead_codes"] = float(model.quantizer.dead_codes())
        stats["restarts"] = float(model.quantizer.restarts)
    return loss, terms, stats


def _same_tensors(found: tuple[Path, Path], export_dir: Path, cfg: VQVAERecipe) -> bool:
    """Exported encoder/decoder safetensors hold exactly the pretrained tensors (values and dtypes)."""
    from safetensors.torch import load_file

    for src, name in zip(found, (cfg.model.encoder_file, cfg.model.decoder_file), strict=True):
        a = load_file(str(src) + ".safetensors")
        b = load_file(str(export_dir / name) + ".safetensors")
        if a.keys() != b.keys():
            return False
        for k in a:
            if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k]):
                return False
    return True


def prepare_run(
    recipe: str | Path | None,
    *,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    pretrained: str | None = None,
    init_from: str | None = None,
    resume: str | Path | None = None,
    device: str | None = None,
) -> tuple[VQVAERecipe, Path, bool]:
    """Resolve the CLI inputs into (recipe, run folder, resuming?).

    ``resume`` reads the run's saved ``recipe.yaml`` (``--set`` may still change it, e.g. more steps);
    otherwise ``recipe`` is loaded and the run folder is ``out`` or ``runs/<recipe>-<time>``.
    """
    from r3d.core.recipe import load_recipe

    sets = list(overrides or [])
    if pretrained:
        sets.append(f"model.pretrained={pretrained}")
    if init_from:
        sets.append(f"init_from={init_from}")
    if device:
        sets.append(f"device={device}")
    if resume is not None:
        if recipe is not None:
            raise R3DError("give either RECIPE or --resume RUN_DIR, not both")
        run_dir = Path(resume)
        if not (run_dir / "recipe.yaml").is_file():
            raise R3DError(f"--resume {run_dir}: no recipe.yaml there (not a train-vqvae run)")
        return load_recipe(run_dir / "recipe.yaml", VQVAERecipe, sets), run_dir, True
    if recipe is None:
        raise R3DError(
            "missing RECIPE (a YAML file such as recipes/vqvae_tiny_stage1.yaml) or --resume RUN_DIR"
        )
    cfg = load_recipe(recipe, VQVAERecipe, sets)
    if out is None:
        out = Path("runs") / f"{Path(recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(out)
    if (run_dir / "recipe.yaml").is_file():
        raise R3DError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --out"
        )
    return cfg, run_dir, False
