"""Talking to vision-language judges: an OpenAI-compatible chat client and the score parser.

Below both bench-edit's judges (:mod:`r3d.edit.judges`) and the ``vlm_judge`` reward
(:mod:`r3d.rewards.vlm`), so neither imports the other.
"""

from r3d.chat.client import Answer, OpenAIChatClient, OpenAIEndpoint, Query
from r3d.chat.scores import parse_score, parse_score_explained

__all__ = ["Answer", "OpenAIChatClient", "OpenAIEndpoint", "Query", "parse_score", "parse_score_explained"]
