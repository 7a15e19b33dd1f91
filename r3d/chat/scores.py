"""Reading a judge's answer into a score — never guessing.

:func:`parse_score` accepts the shapes judges actually write ("Score: 8.5", "8.5/10", "Rating: 7",
``{"score": 8}``, "I would rate this a 6.", a bare "7", and Chinese or full-width forms such as
"评分：7", "分数: 8/10", "７分") and returns ``None`` whenever the text holds no
single, unambiguous score inside ``[0, max_score]``: two different scores, a fraction over another
scale ("4/5"), an out-of-range value ("Score: 12"), a number with no score cue ("It added 2 cats").
:func:`parse_score_explained` also says why a text was rejected; the runner stores that reason.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

_NUM = r"[-+]?\d+(?:\.\d+)?"
# A number stands alone: no ASCII letter, digit or "." glued before it, none after it (so "1e309",
# "0x7", "v2" and "3.5.1" are not scores); CJK text may touch it ("评分为7", "7分").
_ALONE_BEFORE = r"(?<![A-Za-z0-9_.])"
_ALONE_AFTER = r"(?![A-Za-z0-9_]|\.\d)"
# A label (English, or Chinese 评分 / 分数 / 得分 / 打分), an optional parenthetical such as "(0-10)",
# then a separator, then the number and an optional "/ 10" or "out of 10".
_LABELED = re.compile(
    r"(?:\b(?:score|rating|grade|mark)s?\b|评分|分数|得分|打分)(?:\s*\([^)\n]{0,20}\))?"
    r"\s*(?:[:=]\s*|\b(?:is|of|would\s+be|equals)\s+|为|是|\s|)\s*(?:an?\s+|about\s+)?"
    rf"{_ALONE_BEFORE}({_NUM}){_ALONE_AFTER}(?:\s*(?:/|out\s+of)\s*({_NUM}){_ALONE_AFTER})?",
    re.IGNORECASE,
)
# "7分" (7 points), but not "满分10分" (out of 10) nor "10分制" (a 10-point scale).
_POINTS = re.compile(rf"(?<!满分){_ALONE_BEFORE}({_NUM})\s*分(?![数制])")
_FRACTION = re.compile(rf"{_ALONE_BEFORE}({_NUM})\s*(?:/|out\s+of)\s*({_NUM}){_ALONE_AFTER}", re.IGNORECASE)
_CUE = re.compile(
    r"\b(?:rate|rated|rating|score|scored|give|giving|gave|deserves?|grade|award)\b", re.IGNORECASE
)
_STANDALONE_NUM = re.compile(rf"{_ALONE_BEFORE}({_NUM}){_ALONE_AFTER}")
_JSON_KEYS = ("score", "rating", "overall", "final_score", "grade")


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)  # full-width "：", "７", "／" → ASCII
    text = re.sub(r"```(?:json|JSON)?", "", text)
    return text.replace("*", "").replace("`", "").strip()


def _single(values: list[float], what: str) -> tuple[float | None, str | None]:
    distinct = sorted(set(values))
    if len(distinct) == 1:
        return distinct[0], None
    shown = ", ".join(f"{v:g}" for v in distinct)
    return None, f"ambiguous: several different {what} ({shown})"


def _from_json(text: str) -> tuple[bool, float | None, str | None]:
    """(found_json, score, reason) from the first ``{...}`` object in the text, if any."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return False, None, None
    try:
        obj: Any = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return False, None, None
    if not isinstance(obj, dict):
        return False, None, None
    lowered = {str(k).lower(): v for k, v in obj.items()}
    for key in _JSON_KEYS:
        if key not in lowered:
            continue
        value = lowered[key]
        if isinstance(value, list):
            if len(value) != 1:
                return True, None, f"JSON field '{key}' holds {len(value)} values, expected one"
            value = value[0]
        if isinstance(value, bool):
            return True, None, f"JSON field '{key}' is not a number"
        if isinstance(value, (int, float)):
            return True, float(value), None
        if isinstance(value, str) and re.fullmatch(rf"\s*{_NUM}\s*(?:/\s*\d+(?:\.\d+)?)?\s*", value):
            return True, float(re.match(rf"\s*({_NUM})", value).group(1)), None
        return True, None, f"JSON field '{key}' is not a number: {value!r}"
    return True, None, "JSON answer has no score field"


def _denominator_ok(denominator: str | None, max_score: float) -> bool:
    return denominator is None or float(denominator) == float(max_score)


def _from_text(text: str, max_score: float) -> tuple[float | None, str | None]:
    labeled = list(_LABELED.finditer(text))
    if labeled:
        if any(not _denominator_ok(m.group(2), max_score) for m in labeled):
            return None, f"score given on another scale than 0-{max_score:g}"
        return _single([float(m.group(1)) for m in labeled], "labelled scores")
    points = list(_POINTS.finditer(text))
    if points:
        return _single([float(m.group(1)) for m in points], "'N分' scores")
    fractions = [m for m in _FRACTION.finditer(text) if float(m.group(2)) == float(max_score)]
    if fractions:
        return _single([float(m.group(1)) for m in fractions], f"'/{max_score:g}' scores")
    if _FRACTION.search(text):
        return None, f"score given on another scale than 0-{max_score:g}"
    bare = text.strip().rstrip(".").strip()
    if re.fullmatch(_NUM, bare):
        return float(bare), None
    cued: list[float] = []
    for sentence in re.split(r"(?<=[.!?;\n])\s+", text):
        cue = _CUE.search(sentence)
        if cue:
            cued.extend(float(m.group(1)) for m in _STANDALONE_NUM.finditer(sentence, cue.end()))
    if cued:
        return _single(cued, "numbers after a rating cue")
    return None, "no score found"


def parse_score_explained(text: str | None, max_score: float = 10) -> tuple[float | None, str | None]:
    """``(score, None)`` for a readable score in ``[0, max_score]``, else ``(None, reason)``."""
    if not isinstance(text, str) or not text.strip():
        return None, "empty answer"
    cleaned = _clean(text)
    found_json, score, reason = _from_json(cleaned)
    if not found_json:
        score, reason = _from_text(cleaned, max_score)
    if score is None:
        return None, reason
    if not 0.0 <= score <= float(max_score):
        return None, f"score {score:g} outside 0-{max_score:g}"
    return float(score), None


def parse_score(text: str | None, max_score: float = 10) -> float | None:
    """The judge's score as a float in ``[0, max_score]``, or ``None`` when the text holds no single
    unambiguous score in range (no guessing, no default)."""
    return parse_score_explained(text, max_score)[0]
