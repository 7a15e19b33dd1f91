"""Judge prompts: one 0–10 score per category (the seed protocol) or VIEScore-style SC / PQ.

Every question asks for exactly one number on a 0–10 scale, so the same parser, the same stricter
retry and the same digit-probability expectation serve every protocol.

- ``single``: one question, ``score``, phrased for the sample's category (physics, environment,
  social, causal, referential); the edited image, optionally preceded by the original.
- ``viescore``: four questions. Semantic consistency SC = min(edit_success, over_editing), both
  judged on (original, edited); perceptual quality PQ = min(naturalness, artifacts), judged on the
  edited image alone; overall = √(SC·PQ) — the VIEScore combination GEdit-Bench reports.

The wording is r3d's own. :data:`PROMPT_VERSION` is part of the judge fingerprint: records made with
other prompts are never mixed into a report.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from r3d.edit.dataset import EditSample

MAX_SCORE = 10

CATEGORY_FOCUS: dict[str, str] = {
    "physics": (
        "This is a physics edit. The result must obey physical laws: objects need support or must fall, "
        "liquids stay level and flow downhill, light, shadows and reflections agree with the light sources, "
        "and materials behave like themselves (metal bends, glass shatters, ice melts)."
    ),
    "environment": (
        "This is an environment edit. The scene's weather, season, time of day or surroundings must change as "
        "asked, and everything else must follow consistently: sky, light colour and direction, shadows, wet or "
        "snowy surfaces, vegetation."
    ),
    "social": (
        "This is a social edit. People's expressions, poses, gestures and interactions must match the "
        "instruction and read as plausible human behaviour in that setting; the people keep their identity, "
        "clothing and number unless told otherwise."
    ),
    "causal": (
        "This is a cause-and-effect edit. The instruction names a cause or an elapsed time; the image must show "
        "its believable consequence (what is burnt, melted, broken, grown or moved), not merely restate the "
        "instruction."
    ),
    "referential": (
        "This is a referential edit. The instruction singles out an object by its attributes or position; only "
        "that object may change, exactly as asked, and every other object, especially look-alikes, must stay "
        "untouched."
    ),
}

_SCALE = (
    "Use the whole scale: 0 means the instruction was ignored or the result is unusable, 5 means it was "
    "carried out partly or with clear mistakes, 10 means it was carried out completely and convincingly."
)
_ANSWER = 'End your answer with one line "Score: N", where N is a number from 0 to 10.'
STRICT_INSTRUCTION = (
    "Reply with a single number from 0 to 10 and nothing else: no words, no units, no explanation."
)

_VIE_QUESTIONS: dict[str, tuple[bool, str]] = {
    # name: (shows the original too, what to rate)
    "edit_success": (
        True,
        "Rate how completely and correctly the requested change was made in the edited image. 0: not done "
        "at all; 10: done exactly as asked.",
    ),
    "over_editing": (
        True,
        "Rate how well everything the instruction did not ask to change was kept as it was (identity, layout, "
        "background, style). 0: the image was changed beyond recognition; 10: only the requested change was made.",
    ),
    "naturalness": (
        False,
        "Rate how natural and physically plausible the image looks: lighting, perspective, proportions, "
        "shadows. 0: clearly synthetic or impossible; 10: indistinguishable from a real photograph or a "
        "coherent artwork.",
    ),
    "artifacts": (
        False,
        "Rate how free the image is of generation artifacts: distortions, smears, noise, broken textures, "
        "malformed hands, faces or text. 0: heavily corrupted; 10: no artifacts at all.",
    ),
}


@dataclass(frozen=True)
class Question:
    """One judge question: ``name`` of the sub-score, the prompt, its stricter retry, and which images
    it shows (``with_original``: original first, then the edited image)."""

    name: str
    prompt: str
    strict_prompt: str
    with_original: bool


def _context(sample: EditSample, with_original: bool) -> str:
    shown = (
        "The first image is the original; the second image is the result of editing it."
        if with_original
        else "The image is the result of an instruction-based edit."
    )
    lines = [
        "You are an expert evaluator of instruction-based image editing.",
        shown,
        f'Edit instruction: "{sample.instruction}"',
    ]
    if sample.description:
        lines.append(f"The original image showed: {sample.description}")
    return "\n".join(lines)


def _question(name: str, sample: EditSample, with_original: bool, body: str) -> Question:
    head = _context(sample, with_original)
    return Question(
        name=name,
        prompt=f"{head}\n{body}\n{_ANSWER}",
        strict_prompt=f"{head}\n{body}\n{STRICT_INSTRUCTION}",
        with_original=with_original,
    )


def build_questions(sample: EditSample, protocol: str, compare_original: bool) -> list[Question]:
    """The questions to ask about one edited sample under ``protocol`` ("single" or "viescore")."""
    focus = CATEGORY_FOCUS[sample.category]
    if protocol == "single":
        body = (
            f"{focus}\nRate how well the edited image fulfils the instruction under these criteria. {_SCALE}"
        )
        return [_question("score", sample, compare_original, body)]
    if protocol == "viescore":
        questions = []
        for name, (with_original, text) in _VIE_QUESTIONS.items():
            body = f"{focus}\n{text}" if name == "edit_success" else text
            questions.append(_question(name, sample, with_original, body))
        return questions
    raise ValueError(f"unknown protocol {protocol!r}")


def combine(protocol: str, scores: dict[str, float | None]) -> dict[str, float | None]:
    """Sub-scores → the reported scores; ``overall`` is None when any needed sub-score is None."""
    if protocol == "single":
        return {"overall": scores.get("score")}
    sc_parts = [scores.get("edit_success"), scores.get("over_editing")]
    pq_parts = [scores.get("naturalness"), scores.get("artifacts")]
    sc = min(sc_parts) if None not in sc_parts else None
    pq = min(pq_parts) if None not in pq_parts else None
    overall = math.sqrt(sc * pq) if sc is not None and pq is not None else None
    return {"SC": sc, "PQ": pq, "overall": overall}


def prompt_version() -> str:
    """Hash of every template above; changes whenever a prompt's wording changes."""
    text = "\n".join(
        [
            *CATEGORY_FOCUS.values(),
            _SCALE,
            _ANSWER,
            STRICT_INSTRUCTION,
            *(t for _, t in _VIE_QUESTIONS.values()),
        ]
    )
    text += _context(EditSample("x", "physics", "{i}", "{d}"), True) + _context(
        EditSample("x", "physics", "{i}"), False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


PROMPT_VERSION = prompt_version()
