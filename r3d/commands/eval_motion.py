"""Generation and the MDM evaluation protocol (``r3d eval-motion``).

Protocol (MDM's ``eval_humanml.py``), per replication: draw ``num_samples`` (caption, length) pairs
from the reference set, generate one motion per pair at that length, embed texts and motions with
the evaluator (in input order), then R-precision top-1/2/3 and matching score within batches of 32,
FID against the embeddings of the whole reference set, diversity over 300 random pairs; optionally
multimodality: ``mm_prompts`` captions × ``mm_repeats`` generations, 10 pairs per caption. The
reference set's own R-precision / matching / diversity are reported as "ground truth". Replications
are summarised as mean ± 1.96·std/√n. With a cosine evaluator (TMR) embeddings are L2-normalised
first, so Euclidean ranking equals cosine ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from r3d.core.errors import R3DError
from r3d.motion import metrics as M
from r3d.motion.artifacts import Motion, batch_motions
from r3d.report.motion import SampleRow

GenerateFn = Callable[[list[str], list[int], int], list[Motion]]


# ----------------------------------------------------------------------------- generation
def generate(
    policy: Any,
    prompts: Sequence[str],
    n: int = 1,
    seed: int = 0,
    steps: int = 20,
    lengths: Sequence[int] | None = None,
    batch_size: int = 32,
    eta: float = 0.0,
    progress: Progress | None = None,
) -> list[Motion]:
    """``n`` motions per prompt (prompt-major order) with DDIM (η = ``eta``; 0 = deterministic).

    ``lengths`` (one per prompt) overrides the policy's length for each prompt. The initial noise of
    sample i is drawn in order from one generator seeded with ``seed``, so a fixed seed gives the
    same noise with or without a trained adapter.
    """
    from r3d.core.rollout import make_schedule, sample

    expanded = [p for p in prompts for _ in range(n)]
    lens = None if lengths is None else [int(x) for x in lengths for _ in range(n)]
    if lengths is not None and len(lengths) != len(prompts):
        raise R3DError(f"got {len(lengths)} lengths for {len(prompts)} prompts")
    gen = torch.Generator().manual_seed(seed)
    noise = policy.initial_noise(len(expanded), gen)
    cond = policy.encode_prompts(expanded, lens) if lens is not None else policy.encode_prompts(expanded)
    schedule = make_schedule(policy, steps)
    kernel = "ode" if eta == 0 else "ddim"
    sde = torch.full((schedule.num_steps,), eta > 0, dtype=torch.bool)
    out: list[Motion] = []
    task = progress.add_task("generate", total=len(expanded)) if progress is not None else None
    for idx in torch.arange(len(expanded)).split(batch_size):
        c = policy.select_cond(cond, idx)
        traj = sample(
            policy, schedule, c, noise[idx], kernel=kernel, noise_level=eta, sde_steps=sde, generator=gen
        )
        out.extend(policy.decode(traj.latents[:, -1], c))
        if task is not None:
            progress.advance(task, len(idx))
    return out


# ----------------------------------------------------------------------------- reference sets
@dataclass
class ReferenceSet:
    """Reference (ground-truth) motions with captions; ``captions[i]`` may be a str or HumanML3D tokens."""

    motions: list[Motion]
    captions: list[Any]
    texts: list[str] = field(default_factory=list)  # plain captions for generation

    def __post_init__(self) -> None:
        if not self.texts:
            self.texts = [
                c if isinstance(c, str) else " ".join(t.split("/")[0] for t in c) for c in self.captions
            ]

    def __len__(self) -> int:
        return len(self.motions)


def synthetic_reference(n: int = 640, seed: int = 1, cache_dir: str | Path | None = None) -> ReferenceSet:
    """r3d's held-out synthetic motions (data seed 1; the models are trained on seed 0), cached."""
    from r3d.motion.synthetic import default_cache_dir, load_or_build

    ds = load_or_build(n, seed, cache_dir or default_cache_dir())
    motions = [Motion(f[:length]) for f, length in zip(ds.features, ds.lengths, strict=True)]
    return ReferenceSet(motions, list(ds.captions))


def humanml3d_reference(
    root: str | Path, split: str = "test", min_len: int = 40, max_len: int = 196
) -> ReferenceSet:
    """HumanML3D's ``new_joint_vecs/ID.npy`` + ``texts/ID.txt`` (``caption#word/POS ...#from#to``) for the
    ids in ``SPLIT.txt``; a caption with a time span uses that sub-clip; lengths 40–196 frames kept,
    rounded down to a multiple of 4 (the reference's "single" choice)."""
    root = Path(root)
    split_file = root / f"{split}.txt"
    if not split_file.is_file():
        raise R3DError(f"{split_file} not found (expected a HumanML3D folder)")
    motions, captions = [], []
    for name in split_file.read_text().split():
        vec, txt = root / "new_joint_vecs" / f"{name}.npy", root / "texts" / f"{name}.txt"
        if not vec.is_file() or not txt.is_file():
            continue
        data = np.load(vec, allow_pickle=False)
        for line in txt.read_text(encoding="utf-8").splitlines():
            parts = line.strip().split("#")
            if len(parts) < 4:
                continue
            f_tag = float(parts[2]) if parts[2] not in ("", "nan") else 0.0
            t_tag = float(parts[3]) if parts[3] not in ("", "nan") else 0.0
            clip = data if f_tag == 0.0 and t_tag == 0.0 else data[int(f_tag * 20) : int(t_tag * 20)]
            if not min_len <= len(clip) < 200:
                continue
            clip = clip[: min(max_len, len(clip)) // 4 * 4]
            motions.append(Motion(clip))
            captions.append(parts[1].split(" "))
    if not motions:
        raise R3DError(f"no usable motions in {root} ({split} split)")
    return ReferenceSet(motions, captions)


# ----------------------------------------------------------------------------- embedding
@torch.no_grad()
def embed(evaluator: Any, captions: Sequence[Any] | None, motions: Sequence[Motion], batch_size: int = 64):
    """(text_emb or None, motion_emb), float64, input order; L2-normalised for cosine evaluators."""
    texts, mots = [], []
    for start in range(0, len(motions), batch_size):
        chunk = list(motions[start : start + batch_size])
        feats, lens = batch_motions(chunk)
        mots.append(evaluator.embed_motions(feats, lens).double())
        if captions is not None:
            texts.append(evaluator.embed_texts(list(captions[start : start + batch_size])).double())
    m = torch.cat(mots).numpy()
    t = torch.cat(texts).numpy() if captions is not None else None
    if getattr(evaluator, "kind", "distance") == "cosine":
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
        t = t / np.linalg.norm(t, axis=1, keepdims=True) if t is not None else None
    return t, m


# ----------------------------------------------------------------------------- protocol
def _text_metrics(t: np.ndarray, m: np.ndarray, batch_size: int) -> dict[str, float]:
    rp = M.r_precision(t, m, batch_size, 3)
    return {
        "R_precision_top1": float(rp[0]),
        "R_precision_top2": float(rp[1]),
        "R_precision_top3": float(rp[2]),
        "Matching_score": M.matching_score(t, m, batch_size),
    }


@dataclass(frozen=True, kw_only=True)
class ProtocolOptions:
    """Sizes and seed of the protocol (MDM's values: 20 replications × 1000 samples, mm 100 × 30)."""

    replications: int = 1
    num_samples: int = 256  # generated samples per replication (ignored for a folder: all its motions)
    batch_size: int = 32  # R-precision / matching-score batch
    diversity_times: int = 300  # random pairs for diversity
    mm: bool = False  # also compute multimodality
    mm_prompts: int = 100
    mm_repeats: int = 30
    mm_times: int = 10  # pairs per prompt for multimodality
    seed: int = 0  # replication r draws with seed + r, generates with seed + 1000·r


def evaluate_protocol(
    evaluator: Any,
    reference: ReferenceSet,
    options: ProtocolOptions | None = None,
    *,
    generate_fn: GenerateFn | None = None,
    motions: list[Motion] | None = None,
    motion_captions: list[Any] | None = None,
    motion_groups: list[int] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the protocol; either ``generate_fn(captions, lengths, seed)`` or pre-generated ``motions``
    (with their captions and, for multimodality, prompt groups).

    Returns ``{"replications": [per-replication dicts], "summary": {metric: {model: [mean, conf]}}}``,
    with models "ground truth" and "generated" ("multimodality" only for "generated").
    """
    o = options or ProtocolOptions()
    replications, num_samples, batch_size, seed = o.replications, o.num_samples, o.batch_size, o.seed
    if (generate_fn is None) == (motions is None):
        raise R3DError("give either a model to generate with or a folder of motions, not both")
    gt_text, gt_motion = embed(evaluator, reference.captions, reference.motions)
    if len(reference) < batch_size:
        raise R3DError(f"the reference set has {len(reference)} motions; need at least {batch_size}")
    if motions is not None:
        num_samples = len(motions)
        caps = motion_captions or []
        gen_text_all, gen_motion_all = embed(evaluator, caps, motions)
    div_times = min(o.diversity_times, num_samples - 1, len(reference) - 1)
    reps: list[dict[str, float]] = []
    task = progress.add_task("replications", total=replications) if progress is not None else None
    for r in range(replications):
        rng = np.random.default_rng(seed + r)
        order = rng.permutation(len(reference))
        rec: dict[str, float] = {
            f"gt/{k}": v for k, v in _text_metrics(gt_text[order], gt_motion[order], batch_size).items()
        }
        rec["gt/Diversity"] = M.diversity(gt_motion, div_times, rng)
        if generate_fn is not None:
            if num_samples > len(reference):
                pick = rng.choice(len(reference), num_samples, replace=True)
            else:
                pick = rng.choice(len(reference), num_samples, replace=False)
            texts = [reference.texts[i] for i in pick]
            gen = generate_fn(texts, [reference.motions[i].length for i in pick], seed + 1000 * r)
            gen_text, gen_motion = embed(evaluator, [reference.captions[i] for i in pick], gen)
        else:
            perm = rng.permutation(num_samples)
            gen_text, gen_motion = gen_text_all[perm], gen_motion_all[perm]
        if len(gen_motion) < batch_size:
            raise R3DError(
                f"need at least {batch_size} generated motions for R-precision, got {len(gen_motion)}"
            )
        rec.update({f"gen/{k}": v for k, v in _text_metrics(gen_text, gen_motion, batch_size).items()})
        rec["gen/FID"] = M.frechet_distance(gt_motion, gen_motion)
        rec["gt/FID"] = 0.0
        rec["gen/Diversity"] = M.diversity(gen_motion, min(div_times, len(gen_motion) - 1), rng)
        if o.mm:
            rec["gen/MultiModality"] = _multimodality(
                evaluator,
                reference,
                generate_fn,
                motions,
                motion_groups,
                gen_motion_all if motions is not None else None,
                o.mm_prompts,
                o.mm_repeats,
                o.mm_times,
                rng,
                seed + 1000 * r + 500,
            )
        reps.append(rec)
        if task is not None:
            progress.advance(task)
    return {
        "replications": reps,
        "summary": summarize(reps),
        "settings": {
            "replications": replications,
            "num_samples": num_samples,
            "batch_size": batch_size,
            "diversity_times": div_times,
            "mm": o.mm,
            "mm_prompts": o.mm_prompts,
            "mm_repeats": o.mm_repeats,
            "mm_times": o.mm_times,
            "seed": seed,
            "reference_size": len(reference),
        },
    }


def _multimodality(
    evaluator, reference, generate_fn, motions, groups, motion_emb, n_prompts, repeats, times, rng, seed
) -> float:
    if generate_fn is not None:
        pick = rng.choice(len(reference), min(n_prompts, len(reference)), replace=False)
        texts = [reference.texts[i] for i in pick for _ in range(repeats)]
        lens = [reference.motions[i].length for i in pick for _ in range(repeats)]
        _, emb = embed(evaluator, None, generate_fn(texts, lens, seed))
        return M.multimodality(emb.reshape(len(pick), repeats, -1), times, rng)
    groups_arr = np.asarray(groups if groups is not None else range(len(motions)))
    ids, counts = np.unique(groups_arr, return_counts=True)
    usable = ids[counts > times]
    if len(usable) == 0:
        raise R3DError(f"multimodality needs prompts with more than {times} motions each (the 'group' field)")
    per = int(counts[counts > times].min())
    emb = np.stack([motion_emb[np.flatnonzero(groups_arr == g)[:per]] for g in usable])
    return M.multimodality(emb, times, rng)


def summarize(reps: list[dict[str, float]]) -> dict[str, dict[str, list[float]]]:
    """{metric: {"ground truth"/"generated": [mean, 1.96·std/√n]}} over replications."""
    out: dict[str, dict[str, list[float]]] = {}
    for key in reps[0]:
        who, metric = key.split("/", 1)
        mean, conf = M.mean_confidence([rec[key] for rec in reps])
        out.setdefault(metric, {})["ground truth" if who == "gt" else "generated"] = [
            float(mean),
            float(conf),
        ]
    return out


def paired_difference(base: list[dict[str, float]], other: list[dict[str, float]]) -> dict[str, list[float]]:
    """{metric: [mean, 1.96·std/√n]} of ``other − base`` per replication, for the generated metrics.

    Both runs must use the same seed: replication r then draws the same captions, lengths and initial
    noise, so the per-replication difference cancels most of the sampling noise of either side.
    """
    if len(base) != len(other):
        raise R3DError(f"paired comparison needs equal replications, got {len(base)} and {len(other)}")
    out = {}
    for key in base[0]:
        if key.startswith("gen/") and key in other[0]:
            mean, conf = M.mean_confidence([o[key] - b[key] for b, o in zip(base, other, strict=True)])
            out[key.removeprefix("gen/")] = [float(mean), float(conf)]
    return out


# ----------------------------------------------------------------------------- end to end
def load_policy(
    model: str,
    adapter: str | Path | None = None,
    stats_dir: str | Path | None = None,
    clip: str | Path | None = None,
    guidance_scale: float | None = None,
    device: str = "cpu",
) -> Any:
    """A motion policy: a registry name / ``module:factory`` (e.g. ``tiny_motion``) or an official MDM
    checkpoint path (``.pt``; needs ``stats_dir`` with Mean.npy/Std.npy and a local CLIP folder)."""
    if Path(model).suffix in (".pt", ".pth", ".tar") or Path(model).is_file():
        from r3d.models.mdm import load_mdm_policy

        if stats_dir is None or clip is None:
            raise R3DError(
                "an MDM checkpoint needs --stats-dir (Mean.npy, Std.npy) and --clip (a local CLIP folder)"
            )
        policy = load_mdm_policy(
            model,
            Path(stats_dir) / "Mean.npy",
            Path(stats_dir) / "Std.npy",
            clip,
            guidance_scale if guidance_scale is not None else 2.5,
            device=device,
        )
    else:
        from r3d.core.registry import build_policy

        options = {"device": device}
        if guidance_scale is not None:
            options["guidance_scale"] = guidance_scale
        policy = build_policy(model, **options)
    if adapter is not None:
        from r3d.commands.runner import load_adapter

        load_adapter(policy, Path(adapter))
        policy.network.eval()
    return policy


def check_generation_memory(policy: Any, n: int, option: str) -> None:
    """Refuse to generate ``n`` samples at once when their initial noise and decoded motions alone
    (2 × the noise's bytes, held in host memory) exceed the memory available now; R3DError names
    ``option``. Runs before anything of that size is allocated."""
    from r3d.core.memory import available_memory, format_bytes

    one = policy.initial_noise(1, torch.Generator().manual_seed(0))
    need = 2 * n * one.numel() * one.element_size()
    free, where = available_memory("cpu")
    if free is not None and need > free:
        raise R3DError(
            f"{option} {n}: generating them needs at least {format_bytes(need)}, more than the {where}; "
            "use fewer samples (more --replications average over more draws)"
        )


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """The model that generates: a registry name / ``module:factory`` or an MDM checkpoint (``.pt``,
    with ``stats_dir`` holding Mean.npy/Std.npy and a local ``clip`` folder), optionally + ``adapter``."""

    model: str = "tiny_motion"
    adapter: str | Path | None = None
    steps: int = 20  # DDIM sampling steps
    guidance_scale: float | None = None  # None: the model's own
    stats_dir: str | Path | None = None
    clip: str | Path | None = None
    device: str = "cpu"

    def load(self, with_adapter: bool = True) -> Any:
        """The policy (see :func:`load_policy`), with the adapter unless ``with_adapter`` is False."""
        adapter = self.adapter if with_adapter else None
        return load_policy(self.model, adapter, self.stats_dir, self.clip, self.guidance_scale, self.device)


@dataclass(frozen=True, kw_only=True)
class MeasureOptions:
    """What generated motions are measured with and against: the evaluator and the reference set."""

    evaluator: str = "tiny-t2m"  # tiny-t2m, tiny-tmr, a T2M finest.tar, a TMR folder or .safetensors
    glove: str | Path | None = None  # for a T2M finest.tar: the GloVe folder
    evaluator_stats: str | Path | None = None  # for a T2M finest.tar: t2m_mean.npy / t2m_std.npy
    reference: str = "synthetic"  # or a HumanML3D folder
    split: str = "test"  # HumanML3D split file
    reference_size: int = 640  # motions in the synthetic reference set


def run_eval_motion(
    *,
    model: ModelOptions | None = None,
    motions_dir: str | Path | None = None,
    baseline: bool = False,
    measure: MeasureOptions | None = None,
    protocol: ProtocolOptions | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Everything ``r3d eval-motion`` does; returns the report dict (settings, replications, summary).

    Scores either ``model`` (generating) or the folder ``motions_dir`` (motions.jsonl + .npy).
    ``baseline`` (with ``model.adapter``): also evaluate the model without it on the same captions and
    noise; the report gains ``baseline`` (its report) and ``paired`` (adapter − base per metric).
    """
    measure = measure or MeasureOptions()
    protocol = protocol or ProtocolOptions()
    if baseline and (model is None or model.adapter is None or motions_dir is not None):
        raise R3DError(
            "--baseline compares a model with and without --adapter; give --adapter (not --motions)"
        )
    from r3d.motion.evaluators import resolve_evaluator

    if motions_dir is not None:  # read the folder first: a bad path fails before any heavy work
        from r3d.motion.artifacts import load_motion_folder

        motions, captions, groups = load_motion_folder(motions_dir)
    else:  # load the model first: an impossible sample count fails before any heavy work
        if model is None:
            raise R3DError("give --model (and optionally --adapter) or --motions DIR")
        policy = model.load()
        check_generation_memory(policy, protocol.num_samples, "--num-samples")
        if protocol.mm:
            n_mm = protocol.mm_prompts * protocol.mm_repeats
            check_generation_memory(policy, n_mm, "--mm-prompts × --mm-repeats")
    ev = resolve_evaluator(measure.evaluator, measure.glove, measure.evaluator_stats)
    ref = (
        synthetic_reference(measure.reference_size)
        if measure.reference == "synthetic"
        else humanml3d_reference(measure.reference, measure.split)
    )
    if motions_dir is not None:
        report = evaluate_protocol(
            ev,
            ref,
            protocol,
            motions=motions,
            motion_captions=captions,
            motion_groups=groups,
            progress=progress,
        )
        source = str(motions_dir)
    else:

        def evaluate_policy(policy: Any) -> dict[str, Any]:
            def gen(texts: list[str], lengths: list[int], s: int) -> list[Motion]:
                return generate(policy, texts, 1, s, model.steps, lengths=lengths, progress=progress)

            return evaluate_protocol(ev, ref, protocol, generate_fn=gen, progress=progress)

        report = evaluate_policy(policy)
        if baseline:
            base = evaluate_policy(model.load(with_adapter=False))
            report["baseline"] = base
            report["paired"] = paired_difference(base["replications"], report["replications"])
        source = f"{model.model}" + (f" + {model.adapter}" if model.adapter else "")
    report["settings"].update(
        {
            "source": source,
            "evaluator": measure.evaluator,
            "reference": measure.reference,
            "steps": model.steps if model else None,
            "guidance_scale": model.guidance_scale if model else None,
        }
    )
    return report


def collect_report_samples(
    report: dict[str, Any],
    model: str | None,
    motions_dir: Path | None,
    adapter: Path | None,
    options: dict[str, Any],
    captions: int = 4,
    per_caption: int = 3,
) -> list[SampleRow]:
    """Rows of samples to animate: from ``motions_dir``, up to ``per_caption`` motions of its first
    ``captions`` captions; from a model, the first ``captions`` reference captions, each with its
    reference motion, ``per_caption`` generations (seed ``options['seed']``), and with a baseline the
    model without the adapter at the same noise. ``options``: load_policy / generate settings
    (stats_dir, clip, guidance_scale, device, steps, seed, reference, split, reference_size)."""
    if motions_dir is not None:
        from r3d.motion.artifacts import load_motion_folder

        motions, texts, _ = load_motion_folder(motions_dir)
        order = list(dict.fromkeys(texts))[:captions]
        return [
            ("generated", c, [m for m, t in zip(motions, texts, strict=True) if t == c][:per_caption])
            for c in order
        ]
    o = options
    ref = (
        synthetic_reference(o["reference_size"])
        if o["reference"] == "synthetic"
        else humanml3d_reference(o["reference"], o["split"])
    )
    picks = list(range(min(captions, len(ref))))
    texts, lengths = [ref.texts[i] for i in picks], [ref.motions[i].length for i in picks]
    load = (o["stats_dir"], o["clip"], o["guidance_scale"], o["device"])
    models = [("with adapter" if adapter else "generated", adapter)]
    if report.get("paired") is not None:
        models.insert(0, ("base model", None))
    rows: list[SampleRow] = []
    generated = {
        title: generate(load_policy(model, path, *load), texts, per_caption, o["seed"], o["steps"], lengths)
        for title, path in models
    }
    for k, i in enumerate(picks):
        rows.append(("reference", texts[k], [ref.motions[i]]))
        rows += [
            (title, texts[k], gen[k * per_caption : (k + 1) * per_caption])
            for title, gen in generated.items()
        ]
    return rows
