"""Text–motion evaluators: Guo et al.'s T2M co-embedding model and TMR, weight-compatible.

**T2M** (the evaluator of the MDM protocol; checkpoint ``t2m/text_mot_match/model/finest.tar`` holding
``text_encoder``, ``motion_encoder``, ``movement_encoder`` state dicts): a movement encoder (two
stride-2 convolutions over the features without the 4 foot contacts, then a linear layer), a motion
BiGRU over the movement tokens (length = frames // ``unit_length``) and a text BiGRU over GloVe word
vectors plus part-of-speech one-hots. Both BiGRUs start from a learnt hidden state and end in
Linear → LayerNorm → LeakyReLU(0.2) → Linear to the co-embedding (512-d for HumanML3D). Matching is
by Euclidean distance. The reference returns embeddings sorted by motion length; here
``get_co_embeddings`` restores the input order.

**TMR** (Petrovich et al.): two ACTOR-style transformer encoders (a linear projection, learnt
distribution tokens μ and log σ², sinusoidal positions, a transformer encoder with key padding); the
embedding is μ (256-d); the text encoder reads DistilBERT token features (768-d) in the original.
Score = cos(text, motion) / 2 + 0.5 ∈ [0, 1].

Both adapters take **de-normalised** 263-d features and normalise them with the evaluator's own
statistics, so a generator's output is de-normalised with the generator's statistics first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from r3d.core.checkpoint import load_strict
from r3d.core.errors import R3DError
from r3d.core.io import atomic_write
from r3d.motion.text import (
    POS_CATEGORIES,
    GloveWordVectors,
    HashedWordVectors,
    t2m_text_inputs,
    token_sequences,
)

ASSETS = Path(__file__).resolve().parent.parent / "assets"

T2M_HUMANML_DIMS = {
    "dim_pose": 263,
    "dim_word": 300,
    "dim_pos_ohot": len(POS_CATEGORIES),
    "dim_text_hidden": 512,
    "dim_coemb_hidden": 512,
    "dim_motion_hidden": 1024,
    "dim_movement_enc_hidden": 512,
    "dim_movement_latent": 512,
    "unit_length": 4,
    "max_text_len": 20,
}
TMR_HUMANML_DIMS = {
    "nfeats": 263,
    "text_nfeats": 768,
    "latent_dim": 256,
    "ff_size": 1024,
    "num_layers": 6,
    "num_heads": 4,
    "activation": "gelu",
}


# ----------------------------------------------------------------------------- T2M modules
def _xavier(module: nn.Module) -> None:
    if isinstance(module, nn.Conv1d | nn.Linear):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class MovementConvEncoder(nn.Module):
    """(B, T, dim_pose − 4) → (B, T/4, out): two Conv1d(k=4, s=2, p=1) + LeakyReLU(0.2), Linear."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1),
            nn.Dropout(0.2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1),
            nn.Dropout(0.2),
            nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)
        self.main.apply(_xavier)
        self.out_net.apply(_xavier)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.out_net(self.main(inputs.permute(0, 2, 1)).permute(0, 2, 1))


class _BiGRUCo(nn.Module):
    """Shared body of the text and motion encoders: BiGRU from a learnt state, last states → MLP."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(
            nn.Linear(hidden_size * 2, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_size, output_size),
        )
        self.input_emb.apply(_xavier)
        self.output_net.apply(_xavier)
        self.hidden_size = hidden_size
        self.hidden = nn.Parameter(torch.randn((2, 1, hidden_size)))

    def _encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """inputs (B, L, input_size), lengths (B,) ≥ 1 in any order → (B, output_size) in input order."""
        emb = self.input_emb(inputs)
        hidden = self.hidden.repeat(1, inputs.shape[0], 1)
        packed = pack_padded_sequence(emb, lengths.cpu().long(), batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed, hidden)
        return self.output_net(torch.cat([last[0], last[1]], dim=-1))


class TextEncoderBiGRUCo(_BiGRUCo):
    """Word vectors (B, L, word_size) + POS one-hots (B, L, pos_size), cap_lens (B,) → (B, output_size)."""

    def __init__(self, word_size: int, pos_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__(word_size, hidden_size, output_size)
        self.pos_emb = nn.Linear(pos_size, word_size)
        self.pos_emb.apply(_xavier)

    def forward(
        self, word_embs: torch.Tensor, pos_onehot: torch.Tensor, cap_lens: torch.Tensor
    ) -> torch.Tensor:
        return self._encode(word_embs + self.pos_emb(pos_onehot), cap_lens)


class MotionEncoderBiGRUCo(_BiGRUCo):
    """Movement tokens (B, L, input_size), token lengths (B,) → (B, output_size)."""

    def forward(self, inputs: torch.Tensor, m_lens: torch.Tensor) -> torch.Tensor:
        return self._encode(inputs, m_lens)


# ----------------------------------------------------------------------------- T2M evaluator
class T2MEvaluator(nn.Module):
    """Guo et al.'s text–motion matching model with MDM's evaluation wrapper, in input order.

    ``mean``/``std`` (dim_pose,) are the evaluator's normalisation statistics (``t2m_mean.npy`` /
    ``t2m_std.npy`` for HumanML3D). ``word_vectors`` maps a word to its vector (GloVe or hashed).
    """

    kind = "distance"

    def __init__(
        self,
        dims: dict[str, int] | None = None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        word_vectors: Callable[[str], np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        d = {**T2M_HUMANML_DIMS, **(dims or {})}
        self.dims = d
        self.unit_length = int(d["unit_length"])
        self.movement_encoder = MovementConvEncoder(
            d["dim_pose"] - 4, d["dim_movement_enc_hidden"], d["dim_movement_latent"]
        )
        self.text_encoder = TextEncoderBiGRUCo(
            d["dim_word"], d["dim_pos_ohot"], d["dim_text_hidden"], d["dim_coemb_hidden"]
        )
        self.motion_encoder = MotionEncoderBiGRUCo(
            d["dim_movement_latent"], d["dim_motion_hidden"], d["dim_coemb_hidden"]
        )
        self.register_buffer(
            "mean", torch.zeros(d["dim_pose"]) if mean is None else torch.as_tensor(mean).float()
        )
        self.register_buffer(
            "std", torch.ones(d["dim_pose"]) if std is None else torch.as_tensor(std).float()
        )
        self.word_vectors = word_vectors
        self.eval()

    # -- the reference wrapper's API (inputs already normalised with the evaluator's statistics)
    def get_motion_embeddings(self, motions: torch.Tensor, m_lens: torch.Tensor) -> torch.Tensor:
        """Normalised motions (B, T, dim_pose), T a multiple of unit_length; m_lens (B,) → (B, D)."""
        m_lens = torch.as_tensor(m_lens, dtype=torch.int64).cpu()
        tokens = torch.clamp(m_lens // self.unit_length, min=1)
        if int(tokens.max()) * self.unit_length > motions.shape[1]:
            raise ValueError(f"a motion length exceeds the padded length {motions.shape[1]}")
        movements = self.movement_encoder(motions[..., :-4].float())
        return self.motion_encoder(movements, tokens)

    def get_text_embeddings(
        self, word_embs: torch.Tensor, pos_ohot: torch.Tensor, cap_lens: torch.Tensor
    ) -> torch.Tensor:
        return self.text_encoder(word_embs.float(), pos_ohot.float(), torch.as_tensor(cap_lens).cpu())

    def get_co_embeddings(
        self,
        word_embs: torch.Tensor,
        pos_ohot: torch.Tensor,
        cap_lens: torch.Tensor,
        motions: torch.Tensor,
        m_lens: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(text_emb, motion_emb), both (B, D) **in input order** (the reference sorts by motion length)."""
        m_lens = torch.as_tensor(m_lens, dtype=torch.int64).cpu()
        order = torch.argsort(m_lens, descending=True, stable=True)  # the reference's processing order
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())
        motion_emb = self.get_motion_embeddings(motions[order], m_lens[order])[inverse]
        text_emb = self.get_text_embeddings(
            word_embs[order], pos_ohot[order], torch.as_tensor(cap_lens)[order]
        )[inverse]
        return text_emb, motion_emb

    # -- r3d's adapter API (raw features, captions)
    def prepare_motions(self, motions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raw (B, T, dim_pose) → normalised, frames ≥ length zeroed, T padded to × unit_length."""
        x = (torch.as_tensor(motions).float() - self.mean) / self.std
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        frame = torch.arange(x.shape[1])
        x = x * (frame[None, :] < lengths[:, None]).unsqueeze(-1)
        pad = (-x.shape[1]) % self.unit_length
        return torch.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x

    def text_inputs(
        self, captions: Sequence[str | Sequence[str]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.word_vectors is None:
            raise R3DError(
                "this T2M evaluator has no word vectors; pass word_vectors= (GloVe) to load_t2m_evaluator"
            )
        return t2m_text_inputs(captions, self.word_vectors, int(self.dims["max_text_len"]))

    @torch.no_grad()
    def embed_texts(self, captions: Sequence[str | Sequence[str]]) -> torch.Tensor:
        return self.get_text_embeddings(*self.text_inputs(captions))

    @torch.no_grad()
    def embed_motions(self, motions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raw (de-normalised) features (B, T, dim_pose) and lengths (B,) → (B, D) in input order."""
        return self.get_motion_embeddings(self.prepare_motions(motions, lengths), torch.as_tensor(lengths))

    @staticmethod
    def similarity(text_emb: torch.Tensor, motion_emb: torch.Tensor) -> torch.Tensor:
        """Pairwise negative Euclidean distance (B_t, B_m): higher is a better match."""
        return -torch.cdist(text_emb.double(), motion_emb.double()).float()


# ----------------------------------------------------------------------------- TMR modules
class PositionalEncoding(nn.Module):
    """Sinusoidal positions added to (B, L, D) inputs (non-persistent buffer, as TMR's)."""

    def __init__(self, d_model: int, max_len: int = 5000) -> None:
        super().__init__()
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]]


class ACTORStyleEncoder(nn.Module):
    """(B, L, nfeats) + mask (B, L) → distribution tokens (B, nbtokens, latent_dim); μ is token 0."""

    def __init__(
        self,
        nfeats: int,
        vae: bool = True,
        latent_dim: int = 256,
        ff_size: int = 1024,
        num_layers: int = 6,
        num_heads: int = 4,
        dropout: float = 0.1,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.nfeats = nfeats
        self.projection = nn.Linear(nfeats, latent_dim)
        self.vae = vae
        self.nbtokens = 2 if vae else 1
        self.tokens = nn.Parameter(torch.randn(self.nbtokens, latent_dim))
        self.sequence_pos_encoding = PositionalEncoding(latent_dim)
        layer = nn.TransformerEncoderLayer(
            latent_dim, num_heads, ff_size, dropout, activation, batch_first=True
        )
        self.seqTransEncoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.projection(x)
        bs = x.shape[0]
        xseq = torch.cat([self.tokens.unsqueeze(0).expand(bs, -1, -1), x], dim=1)
        aug_mask = torch.cat(
            [torch.ones(bs, self.nbtokens, dtype=torch.bool, device=x.device), mask.bool()], dim=1
        )
        out = self.seqTransEncoder(self.sequence_pos_encoding(xseq), src_key_padding_mask=~aug_mask)
        return out[:, : self.nbtokens]


class TMREvaluator(nn.Module):
    """TMR's text and motion encoders; embeddings are the μ tokens; score = cos / 2 + 0.5.

    ``text_features(captions) -> (x (B, L, text_nfeats), mask (B, L))`` turns captions into the text
    encoder's input: DistilBERT token features for the published model (``DistilBertTokens``), hashed
    word vectors for r3d's tiny one. ``mean``/``std`` normalise motions as TMR's Normalizer
    (x − mean) / (std + 1e-12).
    """

    kind = "cosine"

    def __init__(
        self,
        dims: dict[str, Any] | None = None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        text_features: Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        super().__init__()
        d = {**TMR_HUMANML_DIMS, **(dims or {})}
        self.dims = d
        common = {k: d[k] for k in ("latent_dim", "ff_size", "num_layers", "num_heads", "activation")}
        self.motion_encoder = ACTORStyleEncoder(d["nfeats"], vae=True, **common)
        self.text_encoder = ACTORStyleEncoder(d["text_nfeats"], vae=True, **common)
        self.register_buffer(
            "mean", torch.zeros(d["nfeats"]) if mean is None else torch.as_tensor(mean).float()
        )
        self.register_buffer("std", torch.ones(d["nfeats"]) if std is None else torch.as_tensor(std).float())
        self.text_features = text_features
        self.eval()

    def encode_motion(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Normalised motions (B, T, nfeats), lengths (B,) → μ (B, latent_dim)."""
        lengths = torch.as_tensor(lengths, dtype=torch.int64, device=x.device)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        return self.motion_encoder(x.float(), mask)[:, 0]

    def encode_text(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(x.float(), mask)[:, 0]

    @torch.no_grad()
    def embed_texts(self, captions: Sequence[str]) -> torch.Tensor:
        if self.text_features is None:
            raise R3DError("this TMR evaluator has no text featurizer; pass text_features= to load_tmr")
        return self.encode_text(*self.text_features(list(captions)))

    @torch.no_grad()
    def embed_motions(self, motions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raw (de-normalised) features (B, T, nfeats) and lengths (B,) → μ (B, latent_dim)."""
        x = (torch.as_tensor(motions).float() - self.mean) / (self.std + 1e-12)
        return self.encode_motion(x, lengths)

    @staticmethod
    def similarity(text_emb: torch.Tensor, motion_emb: torch.Tensor) -> torch.Tensor:
        """Pairwise TMR score cos / 2 + 0.5 (B_t, B_m) ∈ [0, 1]."""
        t = torch.nn.functional.normalize(text_emb.float(), dim=-1)
        m = torch.nn.functional.normalize(motion_emb.float(), dim=-1)
        return t @ m.T / 2 + 0.5


class DistilBertTokens:
    """TMR's text input: last hidden states of ``distilbert-base-uncased`` from a local folder."""

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        if not Path(model_dir).is_dir():
            raise R3DError(f"DistilBERT folder not found: {model_dir}")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(captions), return_tensors="pt", padding=True).to(self.device)
        out = self.model(**enc).last_hidden_state
        return out.cpu(), enc["attention_mask"].bool().cpu()


# ----------------------------------------------------------------------------- loading / saving
def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise R3DError(f"evaluator checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file or pickled objects beyond tensors
        raise R3DError(f"cannot read {path} as a weights-only torch checkpoint: {exc}") from None


def _sub(state: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _read_meta(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta.get("r3d", "{}"))


def _stats(value: Any, dim: int) -> torch.Tensor | None:
    if value is None:
        return None
    if isinstance(value, str | Path):
        value = np.load(value, allow_pickle=False)
    t = torch.as_tensor(np.asarray(value), dtype=torch.float32).reshape(-1)
    if t.numel() != dim:
        raise R3DError(f"normalisation statistics have {t.numel()} entries, expected {dim}")
    return t


def load_t2m_evaluator(
    path: str | Path,
    mean: Any = None,
    std: Any = None,
    word_vectors: Callable[[str], np.ndarray] | str | Path | None = None,
    **dims: int,
) -> T2MEvaluator:
    """Load a ``finest.tar``-layout checkpoint (``text_encoder``, ``motion_encoder``, ``movement_encoder``).

    ``dims`` override HumanML3D's sizes (see ``T2M_HUMANML_DIMS``) for small models. ``mean``/``std``
    are arrays or ``.npy`` paths (``t2m_mean.npy``/``t2m_std.npy``); ``word_vectors`` a callable or the
    GloVe folder. r3d's own ``.safetensors`` evaluators carry their sizes, statistics and word vectors.
    """
    path = Path(path)
    state = _read_state(path)
    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        meta = _read_meta(path)
        if meta.get("kind", "t2m") != "t2m":
            raise R3DError(f"{path} is a '{meta.get('kind')}' evaluator, not a T2M one")
        parts = {k: _sub(state, f"{k}.") for k in ("text_encoder", "motion_encoder", "movement_encoder")}
        mean = state.get("mean") if mean is None else mean
        std = state.get("std") if std is None else std
    else:
        missing = [k for k in ("text_encoder", "motion_encoder", "movement_encoder") if k not in state]
        if missing:
            raise R3DError(f"{path}: not a T2M evaluator checkpoint (missing {', '.join(missing)})")
        parts = {k: state[k] for k in ("text_encoder", "motion_encoder", "movement_encoder")}
    all_dims = {**T2M_HUMANML_DIMS, **meta.get("dims", {}), **dims}
    if isinstance(word_vectors, str | Path):
        word_vectors = GloveWordVectors(word_vectors)
    if word_vectors is None and meta.get("word_vectors", {}).get("type") == "hashed":
        wv = meta["word_vectors"]
        word_vectors = HashedWordVectors(int(wv["dim"]), wv["salt"])
    model = T2MEvaluator(
        all_dims, _stats(mean, all_dims["dim_pose"]), _stats(std, all_dims["dim_pose"]), word_vectors
    )
    for name, sub in parts.items():
        load_strict(getattr(model, name), sub, f"{path} [{name}]", assign=False)
    model.source = str(path)
    return model.eval()


def load_tmr(
    path: str | Path,
    mean: Any = None,
    std: Any = None,
    text_features: Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]] | str | Path | None = None,
    **dims: Any,
) -> TMREvaluator:
    """Load TMR from a run folder (``last_weights/{text,motion}_encoder.pt``), a Lightning ``.ckpt``
    (``state_dict`` with ``text_encoder.*``/``motion_encoder.*``; the decoder is ignored) or r3d's
    ``.safetensors``. ``text_features`` is a callable or a local DistilBERT folder."""
    path = Path(path)
    meta: dict[str, Any] = {}
    if path.is_dir():
        weights = path / "last_weights"
        parts = {k: _read_state(weights / f"{k}.pt") for k in ("text_encoder", "motion_encoder")}
        if mean is None and (path / "mean.pt").is_file():
            mean, std = _read_state(path / "mean.pt"), _read_state(path / "std.pt")
    else:
        state = _read_state(path)
        if path.suffix == ".safetensors":
            meta = _read_meta(path)
            if meta.get("kind") != "tmr":
                raise R3DError(f"{path} is not a TMR evaluator (kind '{meta.get('kind')}')")
            mean = state.get("mean") if mean is None else mean
            std = state.get("std") if std is None else std
        else:
            state = state.get("state_dict", state)
        parts = {k: _sub(state, f"{k}.") for k in ("text_encoder", "motion_encoder")}
        if not parts["text_encoder"]:
            raise R3DError(f"{path}: no text_encoder.* weights; not a TMR checkpoint")
    all_dims = {**TMR_HUMANML_DIMS, **meta.get("dims", {}), **dims}
    if isinstance(text_features, str | Path):
        text_features = DistilBertTokens(text_features)
    if text_features is None and meta.get("text_features", {}).get("type") == "hashed":
        tf = meta["text_features"]

        def text_features(
            captions: Sequence[str], _d: int = int(tf["dim"]), _s: str = tf["salt"]
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return token_sequences(captions, _d, _s)

    model = TMREvaluator(
        all_dims, _stats(mean, all_dims["nfeats"]), _stats(std, all_dims["nfeats"]), text_features
    )
    for name, sub in parts.items():
        load_strict(getattr(model, name), sub, f"{path} [{name}]", assign=False)
    model.source = str(path)
    return model.eval()


def save_evaluator(model: T2MEvaluator | TMREvaluator, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write r3d's evaluator safetensors: weights under ``<module>.``, ``mean``/``std``, JSON metadata."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {"r3d": json.dumps({**meta, "dims": model.dims})}
    return atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=metadata))


def load_evaluator(path: str | Path) -> T2MEvaluator | TMREvaluator:
    """An r3d evaluator ``.safetensors`` of either kind (by its metadata), or a T2M ``finest.tar``."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file() and _read_meta(path).get("kind") == "tmr":
        return load_tmr(path)
    if path.is_dir():
        return load_tmr(path)
    return load_t2m_evaluator(path)


def tiny_evaluator_path(kind: str) -> Path:
    """The shipped tiny evaluator (``t2m`` or ``tmr``) trained on r3d's synthetic motions."""
    if kind not in ("t2m", "tmr"):
        raise R3DError(f"unknown tiny evaluator '{kind}'; use t2m or tmr")
    path = ASSETS / f"motion_{kind}_tiny.safetensors"
    if not path.is_file():
        raise R3DError(
            f"{path} is missing; train it with `python -m r3d.motion.train_evaluator --kind {kind}`"
        )
    return path


def resolve_evaluator(
    spec: str | Path, glove: str | Path | None = None, stats_dir: str | Path | None = None
) -> T2MEvaluator | TMREvaluator:
    """'tiny-t2m' / 'tiny-tmr' (shipped) or a checkpoint path. A published T2M ``finest.tar`` also needs
    ``glove`` (the GloVe folder) and ``stats_dir`` (with ``t2m_mean.npy``/``t2m_std.npy``, or
    ``mean.npy``/``std.npy``): its inputs are normalised with the evaluator's own statistics."""
    spec = str(spec)
    if spec in ("tiny-t2m", "tiny-tmr"):
        return load_evaluator(tiny_evaluator_path(spec.split("-")[1]))
    path = Path(spec)
    if not path.exists():
        raise R3DError(
            f"evaluator not found: {spec} (use tiny-t2m, tiny-tmr, a T2M finest.tar or a TMR folder)"
        )
    if path.suffix == ".safetensors" or path.is_dir():
        return load_evaluator(path)
    if glove is None or stats_dir is None:
        raise R3DError(
            f"the T2M evaluator {spec} needs the GloVe folder (--glove, or the reward option glove) and "
            "its statistics t2m_mean.npy / t2m_std.npy (--evaluator-stats, or the reward option stats_dir)"
        )
    stats = Path(stats_dir)
    names = [("t2m_mean.npy", "t2m_std.npy"), ("mean.npy", "std.npy"), ("Mean.npy", "Std.npy")]
    found = next(
        ((stats / m, stats / s) for m, s in names if (stats / m).is_file() and (stats / s).is_file()), None
    )
    if found is None:
        raise R3DError(f"no evaluator statistics (t2m_mean.npy / t2m_std.npy) in {stats}")
    return load_t2m_evaluator(path, mean=found[0], std=found[1], word_vectors=glove)
