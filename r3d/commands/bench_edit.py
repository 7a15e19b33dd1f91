"""The bench-edit runner: edit phase, judge phase, report — resumable, one record per sample.

Layout of ``out``::

    config.yaml              resolved recipe
    records.jsonl            append-only; one line per edited or judged sample, fsync'ed at once
    images/<category>/<id>.png   edited images (safe file names)
    report.json / report.md / report.png
    bench_edit.log           the log (appended across resumes)

An edit record is keyed by ``id|editor fingerprint|seed``, a judge record by
``id|editor fingerprint|judge fingerprint|seed`` and names the SHA-1 of the image it judged. With
``resume`` a sample is skipped when its latest record of that key succeeded (and, for a judgment,
still matches the image on disk); failed and missing ones are redone. The image is written before
its record, so a SIGINT / SIGKILL loses at most the batch in flight (one sample at batch size 1).
The phases run one after the other (editor unloaded before the judge loads), or separately with
``edit_only`` / ``judge_only`` to split GPU work. The report always covers the whole selection (all
shards), so shards writing into one folder produce the full report once the last one finishes.
``out`` is locked while a run works in it (``.r3d.lock``, see :mod:`r3d.core.lock`): distinct shards
share it, but the same shard, or an unsharded run, twice at once exits with an error naming the holder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from r3d.core.errors import R3DError
from r3d.core.io import append_jsonl, atomic_write, read_jsonl
from r3d.core.lock import LOCK_FILE, FolderLock
from r3d.core.recipe import save_resolved
from r3d.edit.config import BenchEditConfig
from r3d.edit.dataset import (
    CATEGORIES,
    EditSample,
    load_dataset,
    parse_shard,
    safe_filename,
    select_samples,
    shard_samples,
)
from r3d.edit.prompts import PROMPT_VERSION
from r3d.edit.report import html_report, summarize, write_reports

log = logging.getLogger("r3d.edit")
RECORDS = "records.jsonl"
LOG_FILE = "bench_edit.log"


@dataclass
class RunResult:
    """What a run did and where its outputs are."""

    report: dict[str, Any]
    paths: dict[str, Path]
    dataset_summary: str
    edited: int
    judged: int
    skipped_edits: int
    skipped_judgments: int


class _Run:
    def __init__(self, cfg: BenchEditConfig, out: Path, console: Console | None, progress: bool) -> None:
        self.cfg = cfg
        self.out = out
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.editor_fp = cfg.editor.fingerprint()
        self.judge_fp = cfg.judge.fingerprint(PROMPT_VERSION)
        self.records_path = out / RECORDS
        self.edits: dict[str, dict[str, Any]] = {}
        self.judgments: dict[str, dict[str, Any]] = {}
        self.reload()

    def reload(self) -> None:
        """Index records.jsonl (other shards may append to it too); the latest record of a key wins."""
        self.edits, self.judgments = {}, {}
        for record in read_jsonl(self.records_path):
            table = self.edits if record.get("phase") == "edit" else self.judgments
            table[record.get("key", "")] = record

    # keys and state ------------------------------------------------------------------------------
    def seed(self, sample: EditSample) -> int:
        return sample.seed if sample.seed is not None else self.cfg.editor.seed

    def edit_key(self, sample: EditSample) -> str:
        return f"{sample.id}|{self.editor_fp}|{self.seed(sample)}"

    def judge_key(self, sample: EditSample) -> str:
        return f"{sample.id}|{self.editor_fp}|{self.judge_fp}|{self.seed(sample)}"

    def image_rel(self, sample: EditSample) -> str:
        return f"images/{sample.category}/{safe_filename(sample.id)}.png"

    def good_edit(self, sample: EditSample) -> dict[str, Any] | None:
        record = self.edits.get(self.edit_key(sample))
        if record and record.get("ok") and (self.out / record["image"]).is_file():
            return record
        return None

    def good_judgment(self, sample: EditSample) -> dict[str, Any] | None:
        edit = self.good_edit(sample)
        record = self.judgments.get(self.judge_key(sample))
        if edit and record and record.get("image_sha1") == edit.get("image_sha1"):
            return record
        return None

    def append(self, record: dict[str, Any]) -> None:
        record["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        append_jsonl(self.records_path, record)
        (self.edits if record["phase"] == "edit" else self.judgments)[record["key"]] = record

    def bar(self, description: str, total: int) -> Progress:
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        progress = Progress(*columns, console=self.console, disable=not self.progress, transient=False)
        progress.add_task(description, total=total)
        return progress

    # phases --------------------------------------------------------------------------------------
    def edit_phase(self, samples: list[EditSample]) -> int:
        from r3d.edit.editors import Editor

        pending = [s for s in samples if self.good_edit(s) is None]
        log.info("edit phase: %d to edit, %d already edited", len(pending), len(samples) - len(pending))
        if not pending:
            return 0
        editor = Editor.load(self.cfg.editor)
        try:
            with self.bar("editing", len(pending)) as progress:
                for batch in _batches_by_size(pending, self.cfg.editor.batch_size):
                    self._edit_batch(editor, batch)
                    progress.advance(progress.task_ids[0], len(batch))
        finally:
            editor.close()
        return len(pending)

    def _edit_batch(self, editor: Any, batch: list[EditSample]) -> None:
        start = time.perf_counter()
        try:
            originals = [s.load_image() for s in batch]
            edited = editor.edit(originals, [s.instruction for s in batch], [self.seed(s) for s in batch])
        except (KeyboardInterrupt, R3DError):
            raise
        except Exception as exc:  # e.g. CUDA out of memory: record it, go on with the next batch
            error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.error("edit failed for %s: %s", ", ".join(s.id for s in batch), error)
            for s in batch:
                self.append(self._edit_record(s, ok=False, error=error, seconds=time.perf_counter() - start))
            return
        seconds = (time.perf_counter() - start) / len(batch)
        for sample, image in zip(batch, edited, strict=True):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            data = buf.getvalue()
            atomic_write(self.out / self.image_rel(sample), lambda p, d=data: p.write_bytes(d))
            record = self._edit_record(sample, ok=True, error=None, seconds=seconds)
            record.update(
                image=self.image_rel(sample), image_sha1=hashlib.sha1(data).hexdigest(), size=list(image.size)
            )
            self.append(record)
            log.info("edited %s (%s) in %.2f s", sample.id, sample.category, seconds)

    def _edit_record(self, sample: EditSample, ok: bool, error: str | None, seconds: float) -> dict[str, Any]:
        return {
            "phase": "edit",
            "key": self.edit_key(sample),
            "id": sample.id,
            "category": sample.category,
            "seed": self.seed(sample),
            "editor": self.editor_fp,
            "ok": ok,
            "image": None,
            "error": error,
            "seconds": round(seconds, 3),
        }

    def judge_phase(self, samples: list[EditSample]) -> int:
        from r3d.edit.judges import Judge, JudgeItem

        unedited = [s for s in samples if self.good_edit(s) is None]
        if unedited:
            log.warning("%d sample(s) have no successful edit and are not judged", len(unedited))
        pending = [
            s
            for s in samples
            if self.good_edit(s) is not None and not (self.good_judgment(s) or {}).get("ok")
        ]
        log.info("judge phase: %d to judge", len(pending))
        if not pending:
            return 0
        judge = Judge.load(self.cfg.judge)
        size = self.cfg.judge.batch_size
        with self.bar("judging", len(pending)) as progress:
            for i in range(0, len(pending), size):
                batch = pending[i : i + size]
                start = time.perf_counter()
                items = []
                for s in batch:
                    with Image.open(self.out / self.good_edit(s)["image"]) as edited:
                        items.append(
                            JudgeItem(sample=s, original=s.load_image(), edited=edited.convert("RGB"))
                        )
                error = None
                try:
                    verdicts = judge.score(items)
                except (KeyboardInterrupt, R3DError):
                    raise
                except Exception as exc:  # a crashed backend: every sample of the batch failed
                    error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    log.error("judge failed for %s: %s", ", ".join(s.id for s in batch), error)
                    verdicts = None
                seconds = (time.perf_counter() - start) / len(batch)
                for k, sample in enumerate(batch):
                    self._judge_record(sample, verdicts[k] if verdicts else None, seconds, error=error)
                progress.advance(progress.task_ids[0], len(batch))
        return len(pending)

    def _judge_record(self, sample: EditSample, verdict: Any, seconds: float, error: str | None) -> None:
        scores = verdict.scores if verdict else {"overall": None}
        record = {
            "phase": "judge",
            "key": self.judge_key(sample),
            "id": sample.id,
            "category": sample.category,
            "seed": self.seed(sample),
            "editor": self.editor_fp,
            "judge": self.judge_fp,
            "image": self.good_edit(sample)["image"],
            "image_sha1": self.good_edit(sample)["image_sha1"],
            "ok": scores.get("overall") is not None,
            "overall": scores.get("overall"),
            "scores": scores,
            "questions": verdict.questions if verdict else [],
            "error": verdict.error if verdict else error,
            "seconds": round(seconds, 3),
        }
        self.append(record)
        if record["ok"]:
            log.info("judged %s (%s): %.3f", sample.id, sample.category, record["overall"])
        else:
            raw = [text for q in record["questions"] for text in q.get("raw", []) if text]
            log.warning(
                "no score for %s (%s): %s; raw: %r",
                sample.id,
                sample.category,
                record["error"],
                raw[-1:] or None,
            )

    # report --------------------------------------------------------------------------------------
    def report(self, samples: list[EditSample], data_path: Path) -> dict[str, Any]:
        outcomes, failed, edit_times, judge_times = [], [], [], []
        for s in samples:
            edit = self.edits.get(self.edit_key(s))
            judgment = self.good_judgment(s)
            if edit and edit.get("seconds") is not None and edit.get("ok"):
                edit_times.append(edit["seconds"])
            if judgment is not None:
                judge_times.append(judgment["seconds"])
                status = "ok" if judgment["ok"] else "failed"
                error = judgment.get("error")
            elif edit is not None and not edit.get("ok"):
                status, error = "edit_failed", edit.get("error")
            else:
                status, error = "missing", "not processed yet"
            scores = judgment["scores"] if judgment is not None else {}
            outcomes.append({"id": s.id, "category": s.category, "status": status, "scores": scores})
            if status != "ok":
                failed.append({"id": s.id, "category": s.category, "status": status, "error": error})
        metrics = (
            ["overall"]
            if self.cfg.judge.protocol == "single"
            else ["overall", "SC", "PQ", "edit_success", "over_editing", "naturalness", "artifacts"]
        )
        categories = [c for c in CATEGORIES if any(s.category == c for s in samples)]
        summary = summarize(outcomes, categories, metrics)
        editor = self.cfg.editor.model_dump(
            include={"model", "num_inference_steps", "true_cfg_scale", "negative_prompt", "seed"}
        )
        judge = self.cfg.judge.model_dump(
            include={"model", "backend", "protocol", "score_mode", "compare_original"}
        )
        return {
            "data": {"path": str(data_path), "selected": len(samples)},
            "editor": {**editor, "fingerprint": self.editor_fp},
            "judge": {**judge, "fingerprint": self.judge_fp, "prompts": PROMPT_VERSION},
            "headline": summary["headline"],
            "categories": summary["categories"],
            "overall": summary["overall"],
            "failed_samples": failed,
            "timing": {
                "edit_seconds_mean": round(sum(edit_times) / len(edit_times), 3) if edit_times else None,
                "judge_seconds_mean": round(sum(judge_times) / len(judge_times), 3) if judge_times else None,
            },
        }


def _batches_by_size(samples: list[EditSample], batch_size: int) -> Iterator[list[EditSample]]:
    """Batches of same-size images (the pipeline sizes a whole batch by its first image), in data order."""
    groups: dict[tuple[int, int], list[EditSample]] = {}
    for s in samples:
        groups.setdefault(s.image_size(), []).append(s)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]


def _lock_output(out: Path, shard: tuple[int, int] | None) -> ExitStack:
    """Lock ``out`` for this run (released by closing the returned stack).

    Unsharded: exclusive. A shard ``i/n``: the folder shared with other shards, plus ``i/n`` itself
    exclusive, so shards of one benchmark can write into one folder but no shard (and no unsharded
    run) runs twice at once.
    """
    stack = ExitStack()
    try:
        stack.enter_context(FolderLock(out, shared=shard is not None).acquire("bench-edit folder"))
        if shard is not None:
            name = f"{LOCK_FILE}.shard-{shard[0]}-of-{shard[1]}"
            stack.enter_context(
                FolderLock(out, name).acquire(f"shard {shard[0]}/{shard[1]} of bench-edit folder")
            )
    except BaseException:
        stack.close()
        raise
    return stack


def _file_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def run_bench(
    cfg: BenchEditConfig,
    out: str | Path,
    *,
    resume: bool = False,
    edit_only: bool = False,
    judge_only: bool = False,
    report_only: bool = False,
    console: Console | None = None,
    progress: bool = True,
) -> RunResult:
    """Run (or continue) a benchmark into ``out`` and write its reports; see the module docstring."""
    if sum([edit_only, judge_only, report_only]) > 1:
        raise R3DError("choose at most one of --edit-only, --judge-only, --report-only")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise R3DError(f"--out {out} is a file; give a folder")
    dataset = load_dataset(cfg.data, cfg.allow_outside_images)
    if dataset.issues:
        shown = "; ".join(str(i) for i in dataset.issues[:5])
        more = f" (+{len(dataset.issues) - 5} more)" if len(dataset.issues) > 5 else ""
        if not cfg.skip_invalid:
            raise R3DError(f"{dataset.summary()}: {shown}{more}. Fix them or pass --skip-invalid")
    selected = select_samples(dataset.samples, cfg.categories, cfg.limit)
    shard = parse_shard(cfg.shard)
    mine = shard_samples(selected, shard)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise R3DError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    locks = _lock_output(out, shard)
    records_path = out / RECORDS
    if records_path.is_file() and not (resume or judge_only or report_only):
        locks.close()
        raise R3DError(
            f"{out} already holds a bench-edit run; pass --resume to continue it or choose another --out"
        )
    handler = _file_log(out / LOG_FILE)
    try:
        run = _Run(cfg, out, console, progress)
        if judge_only and not resume and any(r.get("judge") == run.judge_fp for r in run.judgments.values()):
            raise R3DError(f"{out} already has judgments with this judge; pass --resume to continue them")
        log.info(
            "bench-edit in %s: %s; %d selected, %d in this shard",
            out,
            dataset.summary(),
            len(selected),
            len(mine),
        )
        for issue in dataset.issues:
            log.warning("skipped invalid record %s", issue)
        if not report_only:
            save_resolved(cfg, out / "config.yaml")
        skipped_edits = sum(run.good_edit(s) is not None for s in mine)
        if judge_only and mine and not skipped_edits:
            raise R3DError(
                f"{out} has no edited images for this editor configuration; run the edit phase first "
                "(same recipe and --set options) or check --out"
            )
        edited = 0 if (judge_only or report_only) else run.edit_phase(mine)
        skipped_judgments = sum(bool((run.good_judgment(s) or {}).get("ok")) for s in mine)
        judged = 0 if (edit_only or report_only) else run.judge_phase(mine)
        run.reload()
        report = run.report(selected, dataset.path)
        paths = write_reports(report, out)
        paths["html"] = html_report(report, selected, out)
        paths.update(records=records_path, log=out / LOG_FILE, images=out / "images")
        log.info("report: headline %s, %d judge failures", report["headline"], report["overall"]["failures"])
        return RunResult(report, paths, dataset.summary(), edited, judged, skipped_edits, skipped_judgments)
    except KeyboardInterrupt:
        log.warning("interrupted; completed samples are saved — rerun with --resume to continue")
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
        locks.close()
