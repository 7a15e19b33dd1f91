"""Text features for the motion models, with no download.

- T2M evaluator input (Guo et al.): per caption, tokens ``sos``, up to 20 words, ``eos``, padded with
  ``unk`` to 22; each token is a word vector (GloVe 300-d for the published evaluator, or a hashed
  vector for r3d's tiny evaluator) plus a 15-way part-of-speech one-hot whose categories are those of
  the reference (``POS_CATEGORIES``, with the "VIP" word lists overriding the tag).
  ``cap_lens`` = number of real tokens + 2.
- Token sequences for a TMR-style text encoder: one hashed vector per word, with a mask.
- A sentence vector for the tiny MDM: signed feature hashing of unigrams and bigrams, L2-normalised
  (the stand-in for MDM's 512-d CLIP text embedding).

A hashed vector of a token is a fixed pseudo-random Gaussian vector seeded by the BLAKE2b hash of
``salt + token``: deterministic across machines and Python versions, defined for any word.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from r3d.core.errors import R3DError

POS_CATEGORIES = (
    "VERB",
    "NOUN",
    "DET",
    "ADP",
    "NUM",
    "AUX",
    "PRON",
    "ADJ",
    "ADV",
    "Loc_VIP",
    "Body_VIP",
    "Obj_VIP",
    "Act_VIP",
    "Desc_VIP",
    "OTHER",
)
MAX_TEXT_LEN = 20

# Word lists that override the part of speech (the reference's VIP lists).
VIP_WORDS = {
    "Loc_VIP": (
        "left",
        "right",
        "clockwise",
        "counterclockwise",
        "anticlockwise",
        "forward",
        "back",
        "backward",
        "up",
        "down",
        "straight",
        "curve",
    ),
    "Body_VIP": (
        "arm",
        "chin",
        "foot",
        "feet",
        "face",
        "hand",
        "mouth",
        "leg",
        "waist",
        "eye",
        "knee",
        "shoulder",
        "thigh",
    ),
    "Obj_VIP": (
        "stair",
        "dumbbell",
        "chair",
        "window",
        "floor",
        "car",
        "ball",
        "handrail",
        "baseball",
        "basketball",
    ),
    "Act_VIP": (
        "walk",
        "run",
        "swing",
        "pick",
        "bring",
        "kick",
        "put",
        "squat",
        "throw",
        "hop",
        "dance",
        "jump",
        "turn",
        "stumble",
        "stop",
        "sit",
        "lift",
        "lower",
        "raise",
        "wash",
        "stand",
        "kneel",
        "stroll",
        "rub",
        "bend",
        "balance",
        "flap",
        "jog",
        "shuffle",
        "lean",
        "rotate",
        "spin",
        "spread",
        "climb",
    ),
    "Desc_VIP": (
        "slowly",
        "carefully",
        "fast",
        "careful",
        "slow",
        "quickly",
        "happy",
        "angry",
        "sad",
        "happily",
        "angrily",
        "sadly",
    ),
}
_VIP = {w: cat for cat, words in VIP_WORDS.items() for w in words}

# A small closed-class lexicon (lemma, tag) for the tagger used with hashed vectors.
_LEXICON = {
    **{w: (w, "DET") for w in ("a", "an", "the", "this", "that", "each", "both")},
    **{
        w: (w, "ADP")
        for w in (
            "to",
            "in",
            "on",
            "with",
            "at",
            "around",
            "of",
            "over",
            "above",
            "into",
            "from",
            "while",
            "like",
            "for",
            "without",
            "sideways",
            "place",
            "spot",
        )
    },
    **{
        w: (w, "PRON")
        for w in ("he", "she", "they", "it", "his", "her", "their", "them", "someone", "somebody")
    },
    **{w: (w, "AUX") for w in ("is", "are", "was", "be", "does", "do")},
    **{w: (w, "NUM") for w in ("one", "two", "three", "four", "once", "twice", "thrice", "times", "time")},
    **{
        w: (w, "ADV")
        for w in (
            "then",
            "again",
            "still",
            "steadily",
            "briskly",
            "leisurely",
            "deeply",
            "slightly",
            "politely",
            "high",
            "overhead",
            "ahead",
            "backwards",
            "forwards",
            "around",
        )
    },
    **{
        w: (w, "NOUN")
        for w in (
            "person",
            "man",
            "woman",
            "figure",
            "human",
            "steps",
            "pace",
            "circle",
            "head",
            "hands",
            "arms",
            "fists",
            "fist",
            "jacks",
            "jumps",
            "punches",
            "turn",
            "shoulder",
        )
    },
    **{w: (w, "ADJ") for w in ("normal", "full", "half", "quarter", "low", "alternating", "jumping", "star")},
    **{w: (w, "CCONJ") for w in ("and", "or", "but")},
}
_VERB_LEMMAS = {
    "walks": "walk",
    "walking": "walk",
    "steps": "step",
    "stepping": "step",
    "strolls": "stroll",
    "strolling": "stroll",
    "runs": "run",
    "running": "run",
    "jogs": "jog",
    "jogging": "jog",
    "sprints": "sprint",
    "sprinting": "sprint",
    "jumps": "jump",
    "leaps": "leap",
    "leaping": "leap",
    "waves": "wave",
    "waving": "wave",
    "turns": "turn",
    "turning": "turn",
    "spins": "spin",
    "spinning": "spin",
    "makes": "make",
    "making": "make",
    "doing": "do",
    "squats": "squat",
    "squatting": "squat",
    "crouches": "crouch",
    "crouching": "crouch",
    "stands": "stand",
    "standing": "stand",
    "kicks": "kick",
    "kicking": "kick",
    "raises": "raise",
    "raising": "raise",
    "lifts": "lift",
    "lifting": "lift",
    "lowers": "lower",
    "puts": "put",
    "performs": "perform",
    "punching": "punch",
    "throws": "throw",
    "throwing": "throw",
    "side": "side",
    "shuffles": "shuffle",
    "shuffling": "shuffle",
    "bows": "bow",
    "bowing": "bow",
    "hops": "hop",
    "hopping": "hop",
    "looks": "look",
    "looking": "look",
    "waits": "wait",
    "moving": "move",
    "claps": "clap",
    "clapping": "clap",
    "curves": "curve",
    "veering": "veer",
    "curving": "curve",
    "stand": "stand",
}


def tokenize(text: str) -> list[str]:
    """Lower-case words (letters, digits, apostrophes); punctuation dropped."""
    return re.findall(r"[a-z0-9']+", text.lower())


def tag_word(word: str) -> tuple[str, str]:
    """(lemma, POS category) from r3d's small lexicon; unknown words are ('word', 'OTHER')."""
    if word in _VERB_LEMMAS:
        lemma, tag = _VERB_LEMMAS[word], "VERB"
    else:
        lemma, tag = _LEXICON.get(word, (word, "OTHER"))
    if lemma in _VIP:
        tag = _VIP[lemma]
    return lemma, tag if tag in POS_CATEGORIES else "OTHER"


def pos_one_hot(tag: str) -> np.ndarray:
    vec = np.zeros(len(POS_CATEGORIES), dtype=np.float32)
    vec[POS_CATEGORIES.index(tag if tag in POS_CATEGORIES else "OTHER")] = 1.0
    return vec


@lru_cache(maxsize=65536)
def hashed_vector(token: str, dim: int, salt: str = "r3d") -> np.ndarray:
    """A fixed unit-variance Gaussian vector (dim,) / √dim for ``token`` (float32, read-only)."""
    seed = int.from_bytes(hashlib.blake2b(f"{salt}\x00{token}".encode(), digest_size=8).digest(), "little")
    vec = (np.random.default_rng(seed).standard_normal(dim) / np.sqrt(dim)).astype(np.float32)
    vec.flags.writeable = False
    return vec


class HashedWordVectors:
    """Word → hashed vector of size ``dim`` (any word; ``sos``/``eos``/``unk`` are words too)."""

    def __init__(self, dim: int = 64, salt: str = "t2m") -> None:
        self.dim = dim
        self.salt = salt

    def __call__(self, word: str) -> np.ndarray:
        return hashed_vector(word, self.dim, self.salt)


class GloveWordVectors:
    """The T2M evaluator's GloVe table (``our_vab_data.npy``, ``our_vab_words.pkl``, ``our_vab_idx.pkl``).

    The pickles hold only a list of words and a word → row dict; they are read with an unpickler that
    refuses anything but built-in containers and strings, so a tampered file cannot run code.
    """

    def __init__(self, meta_dir: str | Path, prefix: str = "our_vab") -> None:
        meta = Path(meta_dir)
        files = [meta / f"{prefix}_data.npy", meta / f"{prefix}_words.pkl", meta / f"{prefix}_idx.pkl"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise R3DError(f"GloVe files not found: {', '.join(missing)}")
        vectors = np.load(files[0], allow_pickle=False)
        words = _safe_unpickle(files[1])
        index = _safe_unpickle(files[2])
        self.table = {w: vectors[index[w]].astype(np.float32) for w in words}
        self.dim = vectors.shape[1]
        if "unk" not in self.table:
            raise R3DError(f"{files[1]} has no 'unk' entry")

    def __call__(self, word: str) -> np.ndarray:
        return self.table.get(word, self.table["unk"])


class _BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a word-list pickle")


def _safe_unpickle(path: Path):  # noqa: ANN202
    with open(path, "rb") as fh:
        try:
            return _BuiltinsOnly(fh).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise R3DError(f"{path}: not a plain word-list pickle ({exc})") from None


def t2m_text_inputs(
    captions: Sequence[str | Sequence[str]], word_vectors, max_text_len: int = MAX_TEXT_LEN
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Captions → (word_embs (B, max_len+2, D), pos_ohot (B, max_len+2, 15), cap_lens (B,) int64).

    A caption is a string (tokenised and tagged with r3d's lexicon) or a list of HumanML3D tokens
    ``"word/POS"`` (as in HumanML3D's text files). Known VIP words override the tag, unknown words of a
    GloVe table become ``unk``/OTHER, as the reference's WordVectorizer does.
    """
    embs, poses, lens = [], [], []
    for cap in captions:
        if isinstance(cap, str):
            tokens = [tag_word(w) for w in tokenize(cap)]
        else:
            tokens = [(tok.split("/")[0], tok.split("/")[1] if "/" in tok else "OTHER") for tok in cap]
        tokens = [(w, _VIP.get(w, t)) for w, t in tokens][:max_text_len]
        seq = [("sos", "OTHER"), *tokens, ("eos", "OTHER")]
        lens.append(len(seq))
        seq += [("unk", "OTHER")] * (max_text_len + 2 - len(seq))
        known = getattr(word_vectors, "table", None)
        rows_w, rows_p = [], []
        for w, t in seq:
            if known is not None and w not in known:
                w, t = "unk", "OTHER"
            rows_w.append(word_vectors(w))
            rows_p.append(pos_one_hot(t))
        embs.append(np.stack(rows_w))
        poses.append(np.stack(rows_p))
    return (
        torch.from_numpy(np.stack(embs)),
        torch.from_numpy(np.stack(poses)),
        torch.tensor(lens, dtype=torch.int64),
    )


def token_sequences(
    captions: Sequence[str], dim: int = 64, salt: str = "tmr", max_len: int = 24
) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions → (hashed token vectors (B, L, dim), mask (B, L) bool) for a TMR-style text encoder."""
    toks = [tokenize(c)[:max_len] or ["unk"] for c in captions]
    length = max(len(t) for t in toks)
    x = np.zeros((len(toks), length, dim), dtype=np.float32)
    mask = np.zeros((len(toks), length), dtype=bool)
    for i, t in enumerate(toks):
        x[i, : len(t)] = np.stack([hashed_vector(w, dim, salt) for w in t])
        mask[i, : len(t)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


def sentence_features(captions: Sequence[str], dim: int = 256, salt: str = "mdm") -> torch.Tensor:
    """(B, dim) L2-normalised hashed bag of unigrams and bigrams (order-aware within word pairs)."""
    out = np.zeros((len(captions), dim), dtype=np.float32)
    for i, cap in enumerate(captions):
        words = tokenize(cap)
        grams = words + [f"{a}_{b}" for a, b in zip(words[:-1], words[1:], strict=True)]
        for g in grams or ["unk"]:
            out[i] += hashed_vector(g, dim, salt)
        out[i] /= max(float(np.linalg.norm(out[i])), 1e-8)
    return torch.from_numpy(out)
