"""A light OpenAI-compatible chat client (no transformers import): queries with images, answers.

:class:`OpenAIChatClient` posts ``/chat/completions`` with images as PNG data URIs, at most
``endpoint.concurrency`` requests in flight, per-request timeouts and retries with exponential backoff
(:func:`r3d.core.http.with_retries`). Used by bench-edit's judge (:mod:`r3d.edit.judges`) and by the
``vlm_judge`` reward, which must not pay for importing transformers.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import Field

from r3d.core.http import http_attempt, with_retries
from r3d.core.recipe import StrictModel


class OpenAIEndpoint(StrictModel):
    """An OpenAI-compatible chat-completions server (vLLM, SGLang, ...) that serves the judge."""

    base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="URL up to /v1; /chat/completions is appended"
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="environment variable with the key ('EMPTY' if unset)"
    )
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    retries: int = Field(3, ge=0, description="extra attempts after a timeout, connection error, 408/429/5xx")
    backoff_s: float = Field(2.0, ge=0, description="first retry delay; doubles every attempt")
    max_backoff_s: float = Field(60.0, ge=0)


@dataclass
class Query:
    """One prompt with its images (in order)."""

    text: str
    images: list[Image.Image]


@dataclass
class Answer:
    """A backend's reply: ``text`` or, after all transport retries, ``error``."""

    text: str | None
    error: str | None = None
    requests: int = 1


def image_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIChatClient:
    """Chat completions against an OpenAI-compatible server, with concurrency, timeouts, retries."""

    def __init__(self, endpoint: OpenAIEndpoint, model: str, max_new_tokens: int) -> None:
        self.endpoint = endpoint
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.url = endpoint.base_url.rstrip("/") + "/chat/completions"
        self.api_key = os.environ.get(endpoint.api_key_env) or "EMPTY"

    def payload(self, query: Query) -> dict[str, Any]:
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": image_data_uri(im)}} for im in query.images
        ]
        content.append({"type": "text", "text": query.text})
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0.0,
            "max_tokens": self.max_new_tokens,
        }

    def _post(self, body: bytes) -> tuple[str | None, str | None, bool, float | None]:
        """(text, error, retryable, retry_after_s) for one HTTP attempt."""
        raw, error, retryable, wait = http_attempt(
            self.url,
            body,
            {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
            self.endpoint.timeout_s,
        )
        if raw is None:
            return None, error, retryable, wait
        try:
            message = json.loads(raw)["choices"][0]["message"]
            content = message.get("content")
            if isinstance(content, list):  # some servers return content parts
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            if not isinstance(content, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return None, f"malformed response ({exc.__class__.__name__}: {str(exc)[:80]})", True, None
        return content, None, False, None

    def complete(self, query: Query) -> Answer:
        body = json.dumps(self.payload(query)).encode("utf-8")
        e = self.endpoint
        text, error, attempts = with_retries(
            lambda: self._post(body), e.retries, e.backoff_s, e.max_backoff_s, "judge request"
        )
        if error is None:
            return Answer(text=text, requests=attempts)
        return Answer(text=None, error=f"{error} (after {attempts} request(s))", requests=attempts)

    def generate(self, queries: Sequence[Query]) -> list[Answer]:
        with ThreadPoolExecutor(max_workers=self.endpoint.concurrency) as pool:
            return list(pool.map(self.complete, queries))
