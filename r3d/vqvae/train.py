"""Training loop of ``r3d train-vqvae`` (stages ``vae``, ``codebook``, ``joint``; see config.py).

Per step: a deterministic batch (data.StepBatches) → the stage's loss → AdamW step (gradient clipping,
warm-up + schedule) → EMA codebook update / dead-code restart inside the quantizer. Every ``eval_every``
steps (and at step 0 and at the end) the model is evaluated without augmentation on the training and
the held-out files: reconstruction IoU / F1 at logit > 0 (per shape, averaged), loss terms and codebook
health (usage, perplexity, codes used over the pass, dead codes). Metrics go to ``metrics.jsonl`` and
TensorBoard (``tb/``); checkpoints to ``checkpoints/step-N`` (atomic; ``--resume`` continues exactly);
Ctrl-C writes a checkpoint before stopping. At the end: ``final/``, ``export/`` (TRELLIS-format
encoder/decoder + codebook) and ``summary.json``.
"""

from __future__ import annotations

import hashlib
import math
import time
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


def train_vqvae(
    cfg: VQVAERecipe,
    run_dir: str | Path,
    *,
    resume: bool = False,
    dry_run: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or, with ``dry_run``, only set up and check) a VQ-VAE stage into ``run_dir``.

    Returns the summary dict (also ``run_dir/summary.json``); for a dry run: the parameter split,
    the data report and the shapes of one forward pass, and nothing is written.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    run_dir = Path(run_dir)
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(tc.seed)

    vs = scan_voxel_folder(cfg.data.root, cfg.data.resolution)
    if not vs.files:
        detail = "; ".join(f"{p['name']}: {p['error']}" for p in vs.problems[:3])
        raise R3DError(f"no usable voxel file in {cfg.data.root}" + (f" ({detail})" if detail else ""))
    train_idx, held_idx = split_holdout(vs, cfg.data.holdout, cfg.data.holdout_every)
    data = VoxelGrids(vs.files, cfg.data.resolution, cfg.data.downsample, cfg.data.augment)

    ckpt = latest_checkpoint(run_dir) if resume else None
    model, source = build_from_recipe(cfg)
    if ckpt is not None:
        _, state = load_state(ckpt)
        model.load_state_dict(state, strict=True)
        source = f"resumed {ckpt}"
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    split = configure_trainable(model, tc.stage)
    problems = check_split(split, tc.stage)
    if problems:
        raise R3DError("parameter split is wrong: " + "; ".join(problems))
    params = [p for p in model.parameters() if p.requires_grad]
    report = {
        "source": source,
        "device": str(device),
        "stage": tc.stage,
        "split": split,
        "data": {
            "usable": len(vs.files),
            "train": len(train_idx),
            "holdout": len(held_idx),
            "problems": vs.problems,
        },
        "train_files": [vs.names[i] for i in train_idx],
        "holdout_files": [vs.names[i] for i in held_idx],
    }
    if dry_run:
        x = torch.stack([data[(train_idx[0], 0)]]).to(device)
        with torch.no_grad():
            model.eval()
            out = model(x)
        report["shapes"] = {
            "input": list(x.shape),
            "latent": list(out.mean.shape),
            "tokens": list(out.indices.shape),
            "logits": list(out.logits.shape),
        }
        return report

    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, run_dir / "recipe.yaml")
    atomic_write_json(run_dir / "data_report.json", report["data"])
    console = Console(stderr=True)
    for p in vs.problems:
        console.print(f"[yellow]skipped voxel file[/] {p['file']}: {p['error']}", highlight=False)

    opt = (
        torch.optim.AdamW(params, lr=tc.lr, betas=tc.adam_betas, weight_decay=tc.weight_decay)
        if params
        else None
    )
    sched = (
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, tc.steps, tc.schedule)) if opt else None
    )
    use_amp = device.type == "cuda" and tc.amp != "none"
    amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and tc.amp == "fp16")
    step = 0
    if ckpt is not None:
        ts = load_trainer_state(ckpt)
        step = int(ts["step"])
        if opt is not None and ts.get("optimizer"):
            opt.load_state_dict(ts["optimizer"])
            sched.load_state_dict(ts["scheduler"])  # type: ignore[union-attr]
        if ts.get("scaler"):
            scaler.load_state_dict(ts["scaler"])
        torch.set_rng_state(ts["torch_rng"])

    vq = isinstance(model.quantizer, VectorQuantizer)
    if tc.stage != "vae" and vq and not bool(model.quantizer.initialized) and cfg.model.quantizer.kmeans_init:
        t0 = time.perf_counter()
        n_tok = kmeans_initialise(model, data, train_idx, cfg, device)
        secs = time.perf_counter() - t0
        console.print(
            f"k-means: {model.quantizer.codebook_size} codes on {n_tok} latent tokens in {secs:.1f} s"
        )
    frozen_digest = state_digest(model.encoder, model.decoder) if tc.stage == "codebook" else None

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"))
    metrics_path = run_dir / "metrics.jsonl"
    qcfg = cfg.model.quantizer.model_dump()
    weights = cfg.loss.model_dump()
    last_eval: dict[str, dict[str, float]] = {}

    def log(record: dict[str, Any]) -> None:
        append_jsonl(metrics_path, record)
        for k, v in record.items():
            if k not in ("step", "split") and isinstance(v, int | float):
                writer.add_scalar(f"{record['split']}/{k}", v, record["step"])

    def run_eval(at: int) -> None:
        for name, files in (("train", train_idx), ("eval", held_idx)):
            if files:
                m = evaluate(model, data, files, tc.stage, cfg, device)
                last_eval[name] = m
                log({"step": at, "split": name, **m})
                bar.console.print(_metric_line(at, name, m), highlight=False)

    def checkpoint(at: int, final: bool = False) -> Path:
        trainer_state = {
            "step": at,
            "optimizer": opt.state_dict() if opt else {},
            "scheduler": sched.state_dict() if sched else {},
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "torch_rng": torch.get_rng_state(),
        }
        info = {"step": at, "stage": tc.stage, "metrics": last_eval}
        folder = run_dir / "final" if final else run_dir / "checkpoints" / f"step-{at:07d}"
        save_checkpoint(folder, model, qcfg, trainer_state, info)
        if not final:
            record_latest(run_dir, folder, tc.keep_checkpoints)
        return folder

    loader = torch.utils.data.DataLoader(
        _Subset(data, train_idx),  # the sampler yields positions in the training list
        batch_sampler=StepBatches(len(train_idx), len(data.syms), tc.batch_size, tc.seed, step, tc.steps),
        num_workers=cfg.data.num_workers,
        collate_fn=torch.stack,
    )
    columns = (
        TextColumn(tc.stage),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    )
    t_start = time.perf_counter()
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("train", total=tc.steps, completed=step, info="")
        if step == 0:
            run_eval(0)
        model.train()
        try:
            t_log = time.perf_counter()
            for x in loader:
                x = x.to(device, non_blocking=True)
                if tc.channels_last:
                    x = x.to(memory_format=torch.channels_last_3d)
                with torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext():
                    loss, terms, stats = _loss(model, x, tc.stage, weights, vq)
                if opt is not None and loss.requires_grad:
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if tc.grad_clip:
                        scaler.unscale_(opt)
                        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip))
                    scaler.step(opt)
                    scaler.update()
                if sched is not None:
                    sched.step()
                step += 1
                shown = terms["codebook"] if tc.stage == "codebook" else loss
                bar.update(
                    task,
                    advance=1,
                    info=f"{'codebook' if tc.stage == 'codebook' else 'loss'} {float(shown.detach()):.4g}",
                )
                if step % tc.log_every == 0 or step == tc.steps:
                    dt = (time.perf_counter() - t_log) / tc.log_every
                    t_log = time.perf_counter()
                    lr = opt.param_groups[0]["lr"] if opt else 0.0
                    rec = {
                        "step": step,
                        "split": "step",
                        "loss": float(loss.detach()),
                        **{k: float(v.detach()) for k, v in terms.items()},
                    }
                    log({**rec, **stats, "lr": lr, "sec_per_step": dt})
                if step % tc.eval_every == 0 and step != tc.steps:
                    run_eval(step)
                if step % tc.ckpt_every == 0 and step != tc.steps:
                    checkpoint(step)
        except KeyboardInterrupt:
            saved = checkpoint(step)
            bar.console.print(
                f"[yellow]interrupted at step {step}; checkpoint {saved}; continue with --resume {run_dir}"
            )
            writer.close()
            raise
        run_eval(step)
    final = checkpoint(step, final=True)
    record_latest(run_dir, final, tc.keep_checkpoints)
    exported = export_trellis(model, run_dir / "export", cfg.model.encoder_file, cfg.model.decoder_file, qcfg)
    writer.close()
    summary: dict[str, Any] = {
        **report,
        "run_dir": str(run_dir),
        "steps": step,
        "seconds": round(time.perf_counter() - t_start, 2),
        "final": str(final),
        "export": [str(p) for p in exported],
        "metrics": last_eval,
    }
    if frozen_digest is not None:
        summary["frozen_unchanged"] = frozen_digest == state_digest(model.encoder, model.decoder)
        found = pretrained_prefixes(cfg)
        if found:
            summary["export_identical_to_pretrained"] = _same_tensors(found, run_dir / "export", cfg)
    atomic_write_json(run_dir / "summary.json", summary)
    atomic_write_text(run_dir / "DONE", f"{step}\n")
    return summary


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
