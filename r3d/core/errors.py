"""User-facing errors: the CLI prints these as one line and exits non-zero."""

from __future__ import annotations

from collections.abc import Iterable


class R3DError(Exception):
    """A mistake the user can fix (bad recipe, missing file, corrupt input).

    The CLI prints ``error: <message>`` and exits with code 2; no traceback unless ``--debug``.
    """


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the closest choice (difflib ratio ≥ cutoff), else ``""``."""
    import difflib

    hint = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f"; did you mean '{hint[0]}'?" if hint else ""
