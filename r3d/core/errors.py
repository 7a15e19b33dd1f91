"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class R3DError(Exception):
    """A mistake the user can fix (bad recipe, missing file, corrupt input).

    The CLI prints ``error: <message>`` and exits with code 2; no traceback unless ``--debug``.
    """
