"""One HTTP attempt and the retry loop shared by r3d's HTTP clients (stdlib only).

Redirects: a GET follows up to 5 of them, and its credentials (``Authorization``, ``Cookie``) are
dropped as soon as the target's origin (scheme, host, port) differs from the request's; a POST follows
only a same-origin 307/308 (method, body and credentials kept) — a 301/302/303, or any redirect to
another origin, is an error that is not retried, never a GET whose answer would be used.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger("r3d.http")

#: Statuses worth retrying besides every 5xx (timeout, conflict, too early, rate limited).
RETRY_STATUS = frozenset({408, 409, 425, 429})
#: Headers that carry credentials: never sent to an origin other than the one they were given for.
CREDENTIAL_HEADERS = ("Authorization", "Proxy-authorization", "Cookie")


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the default port made explicit (80 for http, 443 for https)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a malformed port never equals a real origin
        port = -1
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class RedirectRefused(urllib.error.HTTPError):
    """A redirect r3d does not follow (see the module docstring); its ``reason`` says why."""


class SafeRedirectHandler(urllib.request.HTTPRedirectHandler):
    """urllib's redirect handler with r3d's policy: credentials stay with their origin, POSTs do not
    turn into GETs and leave their origin only by an error."""

    max_redirections = 5

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        same = origin(req.full_url) == origin(newurl)
        if req.get_method() == "POST":
            if code in (307, 308) and same:
                return urllib.request.Request(newurl, data=req.data, headers=dict(req.headers), method="POST")
            where = "another origin" if not same else "a GET"
            raise RedirectRefused(
                req.full_url, code, f"redirect of a POST to {where} not followed ({newurl})", headers, fp
            )
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not same:
            for name in CREDENTIAL_HEADERS:
                new.remove_header(name)
        return new


_OPENER = urllib.request.build_opener(SafeRedirectHandler)


def http_attempt(
    url: str, body: bytes | None, headers: dict[str, str], timeout_s: float
) -> tuple[bytes | None, str | None, bool, float | None]:
    """POST ``body`` (GET when None) once → (raw response, error, retryable, retry_after_s).

    Exactly one of raw / error is None. The error is one line: ``HTTP 503: <server detail>`` (a JSON
    ``error`` field is preferred), ``timed out after N s`` or ``connection error: <reason>``. Redirects
    follow the policy of the module docstring; one refused is ``HTTP 30x: redirect ... not followed``.
    """
    method = "POST" if body is not None else "GET"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return response.read(), None, False, None
    except RedirectRefused as exc:
        return None, f"HTTP {exc.code}: {exc.reason}", False, None
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace")
        try:
            detail = str(json.loads(detail).get("error", detail))
        except (ValueError, AttributeError):
            pass
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
        retryable = exc.code in RETRY_STATUS or exc.code >= 500  # other 4xx: the request is wrong
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
