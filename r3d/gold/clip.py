"""``clip_views``: CLIP similarity of rendered views to the condition (image or text), a gold measure
for real backends whose rewards are not CLIP (Uni3D's EVA02 tower, normal consistency, geometry).

Each artifact (mesh or Gaussian cloud) is rendered from ``n_views`` orbiting cameras and shaded
(:func:`r3d.rewards.render2d.shade`); the views and the condition are embedded with a CLIP model from
transformers (``model``: a local folder or a Hugging Face id, default ViT-B/32). The condition is the
prompt: an image file (Hunyuan3D recipes) or a caption (DiffSplat recipes). Per sample: the mean cosine
similarity over views (headline ``clip_views``) and the worst view's (``min_view``). Needs the CLIP
weights (GPU recommended); the model loads at the first evaluation, so a dry run lists it cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from r3d.core.errors import R3DError
from r3d.core.policy import declare_hooks
from r3d.rewards.render2d import _CLIP_MEAN, _CLIP_STD, RenderReward, shade

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class ClipViewsGold:
    """Mean CLIP cosine of shaded views to the prompt's image or text (see the module docstring)."""

    name = "clip_views"
    higher_is_better = True
    value_range = (-1.0, 1.0)
    guarded = True

    def __init__(
        self,
        model: str = "openai/clip-vit-base-patch32",
        n_views: int = 4,
        size: int = 224,
        elevation_deg: float = 20.0,
        device: str = "auto",
    ) -> None:
        from r3d.core.device import resolve_device

        self.model_name, self.device = str(model), resolve_device(device, require_available=False)
        self.render = RenderReward(n_views=n_views, size=size, elevation_deg=elevation_deg)
        self._clip: Any = None
        self._processor: Any = None

    @staticmethod
    def missing_weights(model: str = "openai/clip-vit-base-patch32", **_: Any) -> list[str]:
        """A message when ``model`` names a local folder that is not there (hub ids are not checked)."""
        looks_local = str(model).startswith((".", "/", "~")) or str(model).startswith("weights/")
        if looks_local and not Path(model).expanduser().is_dir():
            return [f"CLIP model folder {model} not found (download openai/clip-vit-base-patch32 there)"]
        return []

    def _load(self) -> None:
        if self._clip is not None:
            return
        from transformers import CLIPModel, CLIPProcessor

        try:
            self._clip = CLIPModel.from_pretrained(self.model_name).to(self.device).eval()
            self._processor = CLIPProcessor.from_pretrained(self.model_name)
        except OSError as exc:
            raise R3DError(
                f"clip_views: CLIP model {self.model_name!r} could not be loaded ({exc})"
            ) from None

    @staticmethod
    def _features(out: Any) -> torch.Tensor:
        emb = out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers ≥ 5: an output
        return F.normalize(emb.float(), dim=-1)

    def _embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] → unit CLIP embeddings (N, D)."""
        x = F.interpolate(
            images.float().to(self.device), size=(224, 224), mode="bicubic", align_corners=False
        )
        mean = torch.tensor(_CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(_CLIP_STD, device=self.device).view(1, 3, 1, 1)
        return self._features(self._clip.get_image_features(pixel_values=(x.clamp(0, 1) - mean) / std))

    def _embed_condition(self, prompt: str) -> torch.Tensor:
        """The prompt's unit CLIP embedding (D,): an image file's, else the caption's."""
        if prompt.lower().endswith(_IMAGE_SUFFIXES):
            from PIL import Image

            try:
                image = np.asarray(Image.open(prompt).convert("RGB"), dtype=np.float32) / 255.0
            except OSError as exc:
                raise R3DError(f"clip_views: cannot read the condition image {prompt} ({exc})") from None
            return self._embed_images(torch.from_numpy(image).permute(2, 0, 1)[None])[0]
        tokens = self._processor(text=[prompt], return_tensors="pt", padding=True, truncation=True)
        return self._features(self._clip.get_text_features(**tokens.to(self.device)))[0]

    @torch.no_grad()
    def __call__(self, artifacts: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``clip_views`` (mean cosine over views) and ``min_view``, float32 (B,); None artifacts score −1."""
        self._load()
        keep = [i for i, a in enumerate(artifacts) if a is not None]
        mean = torch.full((len(artifacts),), -1.0)
        worst = torch.full((len(artifacts),), -1.0)
        if keep:
            views = self.render.render_artifacts([artifacts[i] for i in keep], self.render.cameras(len(keep)))
            n_views = views.cameras.views
            emb = self._embed_images(shade(views)).reshape(len(keep), n_views, -1)
            cond = {p: self._embed_condition(p) for p in dict.fromkeys(prompts[i] for i in keep)}
            target = torch.stack([cond[prompts[i]] for i in keep])
            cos = (emb * target[:, None]).sum(-1).cpu()
            mean[keep], worst[keep] = cos.mean(1), cos.min(1).values
        return {self.name: mean, "min_view": worst}


declare_hooks(ClipViewsGold, missing_weights=ClipViewsGold.missing_weights)
