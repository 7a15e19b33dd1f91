"""``vlm_judge`` reward: a vision-language model behind an OpenAI-compatible endpoint (vLLM, SGLang...)
rates each artifact against its prompt.

Meshes are rendered on the CPU (:func:`r3d.mesh.render.render_views`, unit-sphere normalised, shaded,
``n_views`` orbit views side by side in one image); images are sent as they are. Each artifact is one
``/chat/completions`` request (the image as a PNG data URI, then the question; temperature 0) through
:class:`r3d.chat.client.OpenAIChatClient`: at most ``concurrency`` requests in flight, per-request
timeout, retries with backoff. The answer is read with :func:`r3d.chat.scores.parse_score_explained`
(0–``max_score``), and the reward is score / max_score ∈ [0, 1].

Never an invented score: an answer without a readable score, or a request that failed after its
retries, scores the minimum 0 and sets the sub-score ``failed`` to 1 (its mean is the failure rate);
``failures`` counts them over the reward's life. If no request of a batch got an answer at all the
reward raises (the server is down; training on zeros would be silent garbage). A None artifact (empty
decode) or a mesh that cannot be rendered scores 0 without a request.

Connection: ``base_url`` option, else ``$OPENAI_BASE_URL``, else ``http://127.0.0.1:8000/v1``; the
key is read from ``$OPENAI_API_KEY`` (``api_key_env``) and never logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from r3d.chat.client import OpenAIChatClient, OpenAIEndpoint, Query
from r3d.chat.scores import parse_score_explained
from r3d.core.errors import R3DError

log = logging.getLogger("r3d.rewards")

DEFAULT_MODEL = "Qwen/Qwen3-VL-30B-A3B-Instruct"
MESH_QUESTION = (
    'The image shows {n_views} views of one 3D shape generated from the text prompt "{prompt}". '
    "Rate how well the shape matches the prompt and how clean and plausible its geometry is, "
    "from 0 (not at all) to {max_score} (perfectly). Answer in the form 'Score: N'."
)
IMAGE_QUESTION = (
    'This image was generated from the text prompt "{prompt}". Rate how well it matches the prompt '
    "and how good its visual quality is, from 0 (not at all) to {max_score} (perfectly). "
    "Answer in the form 'Score: N'."
)


class VLMJudgeReward:
    """VLM-as-judge reward (see the module docstring).

    Args:
        model: the served model name. base_url: the endpoint up to ``/v1``. api_key_env: the variable
            holding the key ("EMPTY" is sent when it is unset, as vLLM expects).
        question: a template replacing the default question; ``{prompt}``, ``{max_score}`` and
            ``{n_views}`` are filled in.
        max_score: the top of the judge's scale. n_views, size, elevation_deg: the mesh rendering.
        max_tokens: answer length limit. concurrency, timeout_s, retries, backoff_s: the client.
    """

    name = "vlm_judge"
    higher_is_better = True
    value_range = (0.0, 1.0)
    differentiable = False

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        question: str | None = None,
        max_score: float = 10.0,
        n_views: int = 4,
        size: int = 256,
        elevation_deg: float = 20.0,
        max_tokens: int = 64,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 2.0,
    ) -> None:
        if max_score <= 0 or n_views < 1 or size < 16:
            raise R3DError("vlm_judge: max_score must be > 0, n_views >= 1 and size >= 16")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1"
        try:
            endpoint = OpenAIEndpoint(
                base_url=base_url,
                api_key_env=api_key_env,
                concurrency=concurrency,
                timeout_s=timeout_s,
                retries=retries,
                backoff_s=backoff_s,
            )
        except ValueError as exc:
            raise R3DError(f"vlm_judge: {' '.join(str(exc).split())}") from None
        self.client = OpenAIChatClient(endpoint, model, max_tokens)
        self.question = question
        self.max_score = float(max_score)
        self.n_views, self.size, self.elevation_deg = int(n_views), int(size), float(elevation_deg)
        self.failures = 0
        self.requests = 0

    def __repr__(self) -> str:  # no key here, ever
        return f"VLMJudgeReward(model={self.client.model!r}, url={self.client.url!r})"

    def render(self, artifact: Any) -> tuple[Image.Image, str] | None:
        """(image, default question template) for one artifact; None when there is nothing to judge."""
        if artifact is None:
            return None
        if isinstance(artifact, Image.Image):
            return artifact.convert("RGB"), IMAGE_QUESTION
        if type(artifact).__module__.startswith("trimesh"):
            from r3d.mesh.render import render_views, shaded_image

            try:
                views = render_views(artifact, self.n_views, self.size, self.elevation_deg)
            except R3DError as exc:
                log.warning("vlm_judge: mesh not rendered, scored 0 (%s)", exc)
                return None
            return Image.fromarray(np.concatenate([shaded_image(v) for v in views], axis=1)), MESH_QUESTION
        raise R3DError(f"vlm_judge scores meshes and PIL images, got a {type(artifact).__name__}")

    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{vlm_judge: score/max_score, failed: 0/1}`` → float32 (B,)."""
        scores = torch.zeros(len(artifacts), dtype=torch.float32)
        failed = torch.zeros(len(artifacts), dtype=torch.float32)
        todo, queries = [], []
        for i, (artifact, prompt) in enumerate(zip(artifacts, prompts, strict=True)):
            rendered = self.render(artifact)
            if rendered is None:
                continue
            image, template = rendered
            text = (self.question or template).replace("{prompt}", prompt)
            text = text.replace("{max_score}", f"{self.max_score:g}").replace("{n_views}", str(self.n_views))
            todo.append(i)
            queries.append(Query(text=text, images=[image]))
        answers = self.client.generate(queries)
        self.requests += len(answers)
        if answers and all(a.error is not None for a in answers):
            raise R3DError(f"vlm_judge: no answer from {self.client.url}: {answers[0].error}")
        for i, answer in zip(todo, answers, strict=True):
            score, reason = (
                (None, answer.error) if answer.error else parse_score_explained(answer.text, self.max_score)
            )
            if score is None:
                failed[i] = 1.0
                self.failures += 1
                shown = " ".join((answer.text or "").split())[:120]
                log.warning("vlm_judge: no score for %r, scored 0 (%s; answer %r)", prompts[i], reason, shown)
            else:
                scores[i] = score / self.max_score
        return {self.name: scores, "failed": failed}
