"""Vision-language judges: a local transformers model or an OpenAI-compatible endpoint.

:class:`Judge` turns (original, edited) pairs into scores with the questions of
:mod:`r3d.edit.prompts`, whatever the backend:

- ``generate``: ask, parse with :func:`r3d.chat.scores.parse_score_explained`; an answer that holds
  no score is asked once more with the stricter prompt (number only). A score that still cannot be
  read stays ``None`` with the raw text and the reason — never a made-up number.
- ``expected`` (local only): ask the number-only prompt and take the expectation of the score under
  the next-token distribution over the digit tokens. "10" is two tokens, so the probability of "1"
  is split by a second forward pass with "1" appended: P(10) = P("1")·P("0"|"1") / (P("0"|"1") +
  P(end|"1")), where "end" is any non-digit token; "11"–"19" are out of range and dropped. Scores are
  renormalised over the digit mass, which is recorded.

Backends: :class:`LocalVLM` (``AutoModelForImageTextToText``, Qwen3-VL family, inputs built with
:class:`~r3d.edit.vl_inputs.QwenVLInputs`, left-padded batches, vision special tokens suppressed) and
:class:`OpenAIChatClient` (``/chat/completions`` with images as PNG data URIs, a thread pool for
concurrency, per-request timeouts, retries with exponential backoff on timeouts, connection errors,
408/409/425/429/5xx and malformed responses, honouring ``Retry-After``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

from r3d.chat.client import Answer, OpenAIChatClient, Query
from r3d.chat.scores import parse_score_explained
from r3d.core.device import resolve_device
from r3d.core.errors import R3DError
from r3d.edit.config import JudgeConfig
from r3d.edit.dataset import EditSample
from r3d.edit.editors import resolve_dtype
from r3d.edit.prompts import MAX_SCORE, Question, build_questions, combine
from r3d.edit.tiny import TINY, tiny_judge
from r3d.edit.vl_inputs import IMAGE_TOKEN, QwenVLInputs, vision_token_ids

log = logging.getLogger("r3d.edit")


@dataclass
class Expected:
    score: float
    digit_mass: float


class Backend(Protocol):
    def generate(self, queries: Sequence[Query]) -> list[Answer]: ...


@dataclass
class JudgeItem:
    sample: EditSample
    original: Image.Image
    edited: Image.Image


@dataclass
class Verdict:
    """Scores of one sample: ``scores`` holds the sub-scores and the combined ones (``overall``)."""

    scores: dict[str, float | None]
    questions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def overall(self) -> float | None:
        return self.scores.get("overall")

    @property
    def error(self) -> str | None:
        errors = [f"{q['name']}: {q['error']}" for q in self.questions if q.get("error")]
        return "; ".join(errors) if errors else None


# --------------------------------------------------------------------------------------------- local


def chat_prompt(tokenizer: Any, text: str, n_images: int) -> str:
    """The model's chat prompt for one user turn with ``n_images`` images then ``text``.

    Uses the tokenizer's chat template when it renders one image placeholder per image, else the
    Qwen ChatML layout ``<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>…<|im_end|>``.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [
            {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}
        ]
        try:
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if isinstance(rendered, str) and rendered.count(IMAGE_TOKEN) == n_images:
                return rendered
        except Exception as exc:  # a template that does not know image parts
            log.debug("chat template failed (%s); using ChatML", exc)
    vision = "<|vision_start|><|image_pad|><|vision_end|>" * n_images
    return f"<|im_start|>user\n{vision}{text}<|im_end|>\n<|im_start|>assistant\n"


class LocalVLM:
    """A transformers image-text-to-text model judging on this machine."""

    def __init__(
        self, model: Any, tokenizer: Any, image_processor: Any, batch_size: int, max_new_tokens: int
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.inputs = QwenVLInputs(image_processor, tokenizer)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.suppress = vision_token_ids(tokenizer)
        digits = [tokenizer.encode(str(d), add_special_tokens=False) for d in range(10)]
        self.digit_ids = [ids[0] for ids in digits] if all(len(ids) == 1 for ids in digits) else None

    @classmethod
    def load(cls, cfg: JudgeConfig) -> LocalVLM:
        if cfg.model == TINY:
            model, tokenizer, image_processor = tiny_judge()
            device = resolve_device("cpu" if cfg.device == "auto" else cfg.device)
            return cls(model.to(device), tokenizer, image_processor, cfg.batch_size, cfg.max_new_tokens)
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        extra = {"revision": cfg.revision} if cfg.revision else {}
        placement = {"device_map": "auto"} if cfg.device == "auto" and device.type == "cuda" else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(cfg.model, **extra)
            image_processor = AutoImageProcessor.from_pretrained(cfg.model, backend="pil", **extra)
            model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=dtype, **placement, **extra)
        except (OSError, ValueError) as exc:
            raise R3DError(
                f"cannot load judge {cfg.model!r}: {str(exc).splitlines()[0]} "
                f"(download it first, e.g. `hf download {cfg.model}`, or pass a local folder)"
            ) from None
        if not placement:
            model = model.to(device)
        return cls(model, tokenizer, image_processor, cfg.batch_size, cfg.max_new_tokens)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, queries: Sequence[Query]) -> dict[str, torch.Tensor]:
        texts = [chat_prompt(self.tokenizer, q.text, len(q.images)) for q in queries]
        images = [im for q in queries for im in q.images]
        batch = self.inputs(texts, images=images or None)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _batches(self, queries: Sequence[Query]) -> list[Sequence[Query]]:
        return [queries[i : i + self.batch_size] for i in range(0, len(queries), self.batch_size)]

    @torch.no_grad()
    def generate(self, queries: Sequence[Query]) -> list[Answer]:
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            suppress_tokens=self.suppress or None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.model.generation_config.eos_token_id,
        )
        answers: list[Answer] = []
        for chunk in self._batches(queries):
            inputs = self.encode(chunk)
            out = self.model.generate(**inputs, generation_config=config)
            new = out[:, inputs["input_ids"].shape[1] :]
            answers += [Answer(text=t) for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers

    def _next_token_probs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.model(**inputs, logits_to_keep=1).logits[:, -1].float()
        return logits.softmax(dim=-1)

    @torch.no_grad()
    def expected(self, queries: Sequence[Query]) -> list[Expected]:
        if self.digit_ids is None:
            raise R3DError("score_mode 'expected' needs a tokenizer with one token per digit 0-9")
        ids = torch.tensor(self.digit_ids)
        results: list[Expected] = []
        for chunk in self._batches(queries):
            inputs = self.encode(chunk)
            p = self._next_token_probs(inputs)[:, ids.to(self.device)].cpu().double()  # (B, 10)
            one = torch.full_like(inputs["input_ids"][:, :1], self.digit_ids[1])
            after_one = dict(inputs)
            after_one["input_ids"] = torch.cat([inputs["input_ids"], one], dim=1)
            after_one["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(one)], dim=1)
            after_one["mm_token_type_ids"] = torch.cat(
                [inputs["mm_token_type_ids"], torch.zeros_like(one)], dim=1
            )
            q = self._next_token_probs(after_one)[:, ids.to(self.device)].cpu().double()
            q_zero, q_end = q[:, 0], (1.0 - q.sum(dim=1)).clamp_min(0.0)
            p_ten = torch.where(q_zero + q_end > 0, q_zero / (q_zero + q_end), torch.zeros_like(q_zero))
            values = torch.arange(10, dtype=torch.float64)
            mass = p.sum(dim=1)
            total = (p * values).sum(dim=1) - p[:, 1] + p[:, 1] * (10.0 * p_ten + (1.0 - p_ten))
            for s, m in zip((total / mass).tolist(), mass.tolist(), strict=True):
                results.append(Expected(score=round(s, 4), digit_mass=round(m, 6)))
        return results


# --------------------------------------------------------------------------------------------- judge


class Judge:
    """Scores edits with a backend under a protocol (see module docstring)."""

    def __init__(self, cfg: JudgeConfig, backend: Backend) -> None:
        self.cfg = cfg
        self.backend = backend

    @classmethod
    def load(cls, cfg: JudgeConfig) -> Judge:
        if cfg.backend == "openai":
            return cls(cfg, OpenAIChatClient(cfg.api, cfg.model, cfg.max_new_tokens))
        return cls(cfg, LocalVLM.load(cfg))

    def _queries(
        self, items: Sequence[JudgeItem], strict: bool
    ) -> tuple[list[tuple[int, Question]], list[Query]]:
        index: list[tuple[int, Question]] = []
        queries: list[Query] = []
        for i, item in enumerate(items):
            for question in build_questions(item.sample, self.cfg.protocol, self.cfg.compare_original):
                images = [item.original, item.edited] if question.with_original else [item.edited]
                index.append((i, question))
                queries.append(Query(question.strict_prompt if strict else question.prompt, images))
        return index, queries

    def score(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """One :class:`Verdict` per item, in order."""
        verdicts = [Verdict(scores={}) for _ in items]
        if self.cfg.score_mode == "expected":
            index, queries = self._queries(items, strict=True)
            for (i, question), result in zip(index, self.backend.expected(queries), strict=True):  # type: ignore[attr-defined]
                verdicts[i].questions.append(
                    {
                        "name": question.name,
                        "score": result.score,
                        "digit_mass": result.digit_mass,
                        "raw": [],
                        "error": None,
                    }
                )
        else:
            index, queries = self._queries(items, strict=False)
            records = [
                self._record(q.name, a)
                for (_, q), a in zip(index, self.backend.generate(queries), strict=True)
            ]
            retry = [k for k, r in enumerate(records) if r["score"] is None and r["retryable"]]
            if retry and self.cfg.strict_retry:
                strict_queries = [Query(index[k][1].strict_prompt, queries[k].images) for k in retry]
                for k, answer in zip(retry, self.backend.generate(strict_queries), strict=True):
                    self._update(records[k], answer)
            for (i, _), record in zip(index, records, strict=True):
                record.pop("retryable")
                verdicts[i].questions.append(record)
        for verdict in verdicts:
            sub = {q["name"]: q["score"] for q in verdict.questions}
            combined = combine(self.cfg.protocol, sub)
            verdict.scores = combined if self.cfg.protocol == "single" else {**sub, **combined}
        return verdicts

    @staticmethod
    def _record(name: str, answer: Answer) -> dict[str, Any]:
        record: dict[str, Any] = {
            "name": name,
            "raw": [],
            "score": None,
            "error": None,
            "requests": 0,
            "retryable": False,
        }
        Judge._update(record, answer)
        return record

    @staticmethod
    def _update(record: dict[str, Any], answer: Answer) -> None:
        """Fold one attempt into a question's record (raw texts kept in order)."""
        record["requests"] += answer.requests
        record["raw"].append(answer.text)
        if answer.text is None:
            record["score"], record["error"], record["retryable"] = None, answer.error, False
            return
        score, reason = parse_score_explained(answer.text, MAX_SCORE)
        record["score"] = score
        record["error"] = None if score is not None else f"unparseable answer: {reason}"
        record["retryable"] = score is None
