"""One HTTP attempt and the retry loop shared by r3d's HTTP clients (stdlib only)."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger("r3d.http")

#: Statuses worth retrying besides every 5xx (timeout, conflict, too early, rate limited).
RETRY_STATUS = frozenset({408, 409, 425, 429})


def http_attempt(
    url: str, body: bytes | None, headers: dict[str, str], timeout_s: float
) -> tuple[bytes | None, str | None, bool, float | None]:
    """POST ``body`` (GET when None) once → (raw response, error, retryable, retry_after_s).

    Exactly one of raw / error is None. The error is one line: ``HTTP 503: <server detail>`` (a JSON
    ``error`` field is preferred), ``timed out after N s`` or ``connection error: <reason>``.
    """
    method = "POST" if body is not None else "GET"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.read(), None, False, None
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace")
        try:
            detail = str(json.loads(detail).get("error", detail))
        except (ValueError, AttributeError):
            pass
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
        retryable = exc.code in RETRY_STATUS or exc.code >= 500
        return None, f"HTTP {exc.code}: {' '.join(detail.split())[:200]}", retryable, wait
    except TimeoutError:
        return None, f"timed out after {timeout_s:g} s", True, None
    except (urllib.error.URLError, ConnectionError, OSError) as exc:
        return None, f"connection error: {getattr(exc, 'reason', exc)}", True, None


def with_retries(
    attempt: Callable[[], tuple[Any, str | None, bool, float | None]],
    retries: int,
    backoff_s: float,
    max_backoff_s: float,
    label: str,
) -> tuple[Any, str | None, int]:
    """Call ``attempt`` (→ value, error, retryable, retry_after_s) until it succeeds, fails for good
    or ``retries`` extra attempts are spent → (value, error, attempts made).

    The delay before retry k (0-based) is backoff_s·2^k, at least the server's Retry-After, at most
    ``max_backoff_s``; each retry is logged as a warning naming ``label`` and the error.
    """
    for k in range(retries + 1):
        value, error, retryable, wait = attempt()
        if error is None:
            return value, None, k + 1
        if not retryable or k == retries:
            return None, error, k + 1
        delay = min(max_backoff_s, max(backoff_s * 2**k, wait or 0.0))
        log.warning("%s failed (%s); retry %d in %.2f s", label, error, k + 1, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")
