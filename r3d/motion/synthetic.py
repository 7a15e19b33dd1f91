"""A procedural text-to-motion data set: skeleton motions of 16 action families with varied captions.

Each sample is drawn from a seeded generator: an action family (walk, run, jump, wave, turn, squat,
kick, raise arms, jumping jacks, punch, side step, bow, hop, stand, clap, walk in a circle), its
parameters (direction, side, speed, repetitions, angle) and a length of 40–100 frames (multiples of 4,
20 fps). The motion is built by forward kinematics of a 22-joint SMPL-like skeleton from per-joint
angle curves, canonicalised and converted to HumanML3D's 263-d features
(:func:`r3d.motion.representation.joints_to_features`). The caption is composed from templates and
synonyms, so one set of parameters has many phrasings; ``label`` names the parameters (two samples
with equal labels are the same motion class; contrastive training uses it to drop false negatives).

Conventions: y up, the body starts at the origin facing +z, its left is +x; a left turn is a
positive yaw (counter-clockwise seen from above).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from r3d.core.errors import R3DError
from r3d.core.io import atomic_write
from r3d.motion.representation import FEATURE_DIM, FPS, PARENTS, canonicalize, joints_to_features

MIN_LENGTH = 40
MAX_LENGTH = 100
UNIT_LENGTH = 4

# Rest pose (metres): arms hanging, facing +z, left = +x.
REST_JOINTS = np.array(
    [
        [0.0, 0.95, 0.0],
        [0.09, 0.87, -0.01],
        [-0.09, 0.87, -0.01],
        [0.0, 1.06, -0.02],
        [0.10, 0.50, 0.0],
        [-0.10, 0.50, 0.0],
        [0.0, 1.19, -0.01],
        [0.10, 0.09, -0.03],
        [-0.10, 0.09, -0.03],
        [0.0, 1.25, 0.0],
        [0.11, 0.03, 0.10],
        [-0.11, 0.03, 0.10],
        [0.0, 1.47, -0.02],
        [0.07, 1.38, -0.01],
        [-0.07, 1.38, -0.01],
        [0.0, 1.58, 0.03],
        [0.18, 1.40, -0.02],
        [-0.18, 1.40, -0.02],
        [0.20, 1.13, -0.03],
        [-0.20, 1.13, -0.03],
        [0.21, 0.88, -0.01],
        [-0.21, 0.88, -0.01],
    ]
)
OFFSETS = np.array(
    [REST_JOINTS[j] - REST_JOINTS[max(p, 0)] if p >= 0 else np.zeros(3) for j, p in enumerate(PARENTS)]
)
THIGH = float(np.linalg.norm(OFFSETS[4]))
SHIN = float(np.linalg.norm(OFFSETS[7]))

# joint ids
L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = 1, 2, 3, 4, 5, 6, 7, 8, 9
NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW = 12, 13, 14, 15, 16, 17, 18, 19
_POSITIVE_FLEX = (
    L_KNEE,
    R_KNEE,
    SPINE1,
    SPINE2,
    SPINE3,
    NECK,
)  # +x rotation bends these forward/back as named


# ----------------------------------------------------------------------------- kinematics
def _rot(axis: str, angle: np.ndarray) -> np.ndarray:
    """(T,) angles (radians) → (T, 3, 3) rotations about a coordinate axis."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    rows = {
        "x": [[o, z, z], [z, c, -s], [z, s, c]],
        "y": [[c, z, s], [z, o, z], [-s, z, c]],
        "z": [[c, -s, z], [s, c, z], [z, z, o]],
    }[axis]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


class Pose:
    """Per-frame joint angles of a motion of ``n`` frames (all zeros = rest pose standing still).

    Angles in radians, applied at joint j to its child bones: ``flex`` swings them forward (hips,
    shoulders, elbows; the spine and neck bend forward) except at the knees, where positive flexion
    bends the shin backward; ``abd`` swings them sideways away from the midline; ``twist`` turns them
    about the vertical, positive outward. ``yaw`` is the heading (positive = left), ``root`` the pelvis
    displacement (x, height offset, z), ``lean`` a forward bend of the lower spine.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.flex = np.zeros((22, n))
        self.abd = np.zeros((22, n))
        self.twist = np.zeros((22, n))
        self.root = np.zeros((n, 3))  # xz displacement and a height offset
        self.yaw = np.zeros(n)
        self.lean = np.zeros(n)  # forward pitch of the whole body

    def joints(self) -> np.ndarray:
        """(n, 22, 3) joint positions by forward kinematics (``lean`` bends the lower spine)."""
        n = self.n
        flex = self.flex.copy()
        flex[SPINE1] += self.lean
        glob = np.zeros((22, n, 3, 3))
        pos = np.zeros((22, n, 3))
        glob[0] = _rot("y", self.yaw)
        pos[0] = REST_JOINTS[0] + self.root
        for j in range(1, 22):
            par = PARENTS[j]
            pos[j] = pos[par] + np.einsum("nij,j->ni", glob[par], OFFSETS[j])
            side = 1.0 if REST_JOINTS[j, 0] >= 0 else -1.0
            local = _rot("x", flex[j] if j in _POSITIVE_FLEX else -flex[j])
            local = _rot("y", side * self.twist[j]) @ _rot("z", side * self.abd[j]) @ local
            glob[j] = glob[par] @ local
        return np.transpose(pos, (1, 0, 2))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _envelope(t: np.ndarray, ramp: float = 0.15) -> np.ndarray:
    """0 → 1 → 0 over normalised time t ∈ [0, 1] with smooth ramps of length ``ramp``."""
    return _smoothstep(t / ramp) * _smoothstep((1 - t) / ramp)


def _pulses(t: np.ndarray, count: int, width: float = 0.8) -> np.ndarray:
    """``count`` smooth bumps 0 → 1 → 0 over t ∈ [0, 1], each ``width`` of its slot."""
    slot = np.clip(t * count, 0, count - 1e-9)
    local = (slot - np.floor(slot) - (1 - width) / 2) / width
    return np.where((local > 0) & (local < 1), np.sin(np.pi * np.clip(local, 0, 1)) ** 2, 0.0)


def _squat_drop(hip: np.ndarray, knee: np.ndarray) -> np.ndarray:
    """Pelvis drop keeping the ankle under the body for thigh angle ``hip`` and knee bend ``knee``."""
    return THIGH * (1 - np.cos(hip)) + SHIN * (1 - np.cos(knee - hip))


def _gait(p: Pose, t: np.ndarray, freq: float, hip_amp: float, knee_amp: float, arm_amp: float) -> np.ndarray:
    """Alternating leg/arm swing at ``freq`` Hz; returns the phase (radians)."""
    phase = 2 * np.pi * freq * t
    s, c = np.sin(phase), np.cos(phase)
    p.flex[L_HIP], p.flex[R_HIP] = hip_amp * s, -hip_amp * s
    p.flex[L_KNEE] = knee_amp * np.maximum(0, c) + 0.1
    p.flex[R_KNEE] = knee_amp * np.maximum(0, -c) + 0.1
    p.flex[L_SHOULDER], p.flex[R_SHOULDER] = -arm_amp * s, arm_amp * s
    p.abd[L_SHOULDER] = p.abd[R_SHOULDER] = 0.08
    return phase


def _advance(p: Pose, speed: np.ndarray | float, heading_offset: float = 0.0) -> None:
    """Integrate root xz for a ground speed (m/s) along yaw + heading_offset (0 forward, π backward)."""
    speed = np.broadcast_to(np.asarray(speed, dtype=np.float64), (p.n,))
    heading = p.yaw + heading_offset
    step = speed / FPS
    p.root[1:, 0] = np.cumsum((step * np.sin(heading))[:-1])
    p.root[1:, 2] = np.cumsum((step * np.cos(heading))[:-1])


# ----------------------------------------------------------------------------- words
SUBJECTS = (
    "a person",
    "someone",
    "a man",
    "a woman",
    "the person",
    "a figure",
    "a human",
    "the man",
    "the woman",
)
COUNTS = {1: ("once", "one time"), 2: ("twice", "two times"), 3: ("three times", "thrice")}
SPEED_ADV = {
    "slow": ("slowly", "at a slow pace", "leisurely"),
    "normal": ("", "at a normal pace", "steadily"),
    "fast": ("quickly", "fast", "briskly", "at a fast pace"),
}
SIDE_WORD = {"left": "left", "right": "right"}


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _verb(rng: np.random.Generator, third: str, ing: str) -> str:
    """'walks' or 'is walking'."""
    return third if rng.random() < 0.6 else f"is {ing}"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p).strip()


# ----------------------------------------------------------------------------- actions
@dataclass
class MotionSpec:
    """One procedural motion: ``label`` (its class), ``caption`` and its (length, 263) features."""

    label: str
    caption: str
    features: np.ndarray
    joints: np.ndarray


ActionFn = Callable[[np.random.Generator, Pose, np.ndarray], tuple[str, str]]


def _walk(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    speed = _pick(rng, ("slow", "normal", "fast"))
    direction = _pick(rng, ("forward", "forward", "backward"))
    curve = _pick(rng, ("none", "none", "left", "right"))
    freq = {"slow": 0.7, "normal": 0.95, "fast": 1.25}[speed]
    _gait(p, t, freq, hip_amp=0.25 + 0.1 * freq, knee_amp=0.5 + 0.2 * freq, arm_amp=0.2 + 0.1 * freq)
    ramp = _smoothstep(t / 0.6)
    if curve != "none":
        p.yaw = (1 if curve == "left" else -1) * (np.pi / 2) * _smoothstep((t - 0.3) / (t[-1] - 0.3 + 1e-9))
    v = 2 * 0.55 * freq * (0.6 if direction == "backward" else 1.0)
    _advance(p, v * ramp, np.pi if direction == "backward" else 0.0)
    p.root[:, 1] = 0.015 * np.cos(4 * np.pi * freq * t)
    dir_words = (
        ("forward", "ahead", "straight ahead") if direction == "forward" else ("backward", "backwards")
    )
    verb = _verb(
        rng,
        *_pick(
            rng,
            [("walks", "walking"), ("steps", "stepping")]
            + ([("strolls", "strolling")] if speed == "slow" else []),
        ),
    )
    text = _join(_pick(rng, SUBJECTS), verb, _pick(rng, dir_words), _pick(rng, SPEED_ADV[speed]))
    if curve != "none":
        text += " " + _pick(
            rng, (f"and turns {curve}", f"then curves to the {curve}", f"while veering {curve}")
        )
    return f"walk/{direction}/{speed}/{curve}", text


def _run(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    speed = _pick(rng, ("slow", "fast"))
    curve = _pick(rng, ("none", "none", "left", "right"))
    freq = 1.3 if speed == "slow" else 1.6
    _gait(p, t, freq, hip_amp=0.55, knee_amp=1.3, arm_amp=0.55)
    p.flex[L_ELBOW] = p.flex[R_ELBOW] = 1.4
    p.lean[:] = 0.15
    ramp = _smoothstep(t / 0.4)
    if curve != "none":
        p.yaw = (1 if curve == "left" else -1) * (np.pi / 2) * _smoothstep((t - 0.3) / (t[-1] - 0.3 + 1e-9))
    _advance(p, (2.2 if speed == "slow" else 3.2) * ramp)
    p.root[:, 1] = 0.05 * np.abs(np.sin(2 * np.pi * freq * t)) - 0.04
    verb = _pick(
        rng,
        [("runs", "running"), ("jogs", "jogging")]
        if speed == "slow"
        else [("runs", "running"), ("sprints", "sprinting")],
    )
    adv = _pick(rng, ("forward", "ahead", "")) + (
        " " + _pick(rng, ("quickly", "fast")) if speed == "fast" else ""
    )
    text = _join(_pick(rng, SUBJECTS), _verb(rng, *verb), adv.strip())
    if curve != "none":
        text += " " + _pick(rng, (f"and turns {curve}", f"curving to the {curve}"))
    return f"run/{speed}/{curve}", text


def _jump(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    count = int(rng.integers(1, 4))
    forward = rng.random() < 0.5
    u = t / t[-1]
    crouch = _pulses(u, count, 0.9)
    slot = np.clip(u * count, 0, count - 1e-9)
    local = slot - np.floor(slot)
    flight = np.where((local > 0.4) & (local < 0.7), np.sin(np.pi * (local - 0.4) / 0.3), 0.0)
    hip = 0.7 * crouch * (1 - flight)
    knee = 1.3 * crouch * (1 - flight)
    p.flex[L_HIP] = p.flex[R_HIP] = hip
    p.flex[L_KNEE] = p.flex[R_KNEE] = knee
    p.lean = 0.35 * crouch * (1 - flight)
    p.flex[L_SHOULDER] = p.flex[R_SHOULDER] = 2.6 * flight - 0.5 * crouch * (1 - flight)
    p.root[:, 1] = 0.45 * flight - _squat_drop(hip, knee)
    if forward:
        in_air = np.cumsum(flight) / max(np.sum(flight), 1e-9)
        p.root[:, 2] = 0.5 * count * in_air
    n_words = COUNTS[count]
    where = (
        _pick(rng, ("forward", "forwards"))
        if forward
        else _pick(rng, ("in place", "on the spot", "up and down", ""))
    )
    verb = _verb(rng, "jumps", "jumping") if rng.random() < 0.8 else _verb(rng, "leaps", "leaping")
    text = _join(_pick(rng, SUBJECTS), verb, where, _pick(rng, n_words) if rng.random() < 0.85 else "")
    return f"jump/{'forward' if forward else 'place'}/{count}", text


def _wave(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    side = _pick(rng, ("left", "right", "both"))
    speed = _pick(rng, ("slow", "fast"))
    env = _envelope(t / t[-1], 0.2)
    osc = np.sin(2 * np.pi * (1.2 if speed == "slow" else 2.4) * t)
    for s, sh, el in (("left", L_SHOULDER, L_ELBOW), ("right", R_SHOULDER, R_ELBOW)):
        if side in (s, "both"):
            p.abd[sh] = 2.3 * env
            p.flex[el] = env * (0.5 + 0.45 * osc)
    hand = {
        "left": ("left hand", "left arm"),
        "right": ("right hand", "right arm"),
        "both": ("both hands", "both arms", "hands"),
    }[side]
    verb = _verb(rng, "waves", "waving")
    owner = _join(_pick(rng, ("", "with")), _pick(rng, ("their", "the")), _pick(rng, hand))
    text = _join(
        _pick(rng, SUBJECTS), verb, owner, _pick(rng, SPEED_ADV[speed]) if rng.random() < 0.7 else ""
    )
    return f"wave/{side}/{speed}", text


def _turn(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    side = _pick(rng, ("left", "right"))
    angle = _pick(rng, ("90", "180", "360"))
    total = {"90": np.pi / 2, "180": np.pi, "360": 2 * np.pi}[angle]
    u = t / t[-1]
    p.yaw = (1 if side == "left" else -1) * total * _smoothstep((u - 0.1) / 0.8)
    steps = _envelope(u, 0.15) * np.abs(np.sin(2 * np.pi * 1.5 * t))
    p.flex[L_HIP] = 0.3 * steps * (np.sin(2 * np.pi * 0.75 * t) > 0)
    p.flex[R_HIP] = 0.3 * steps * (np.sin(2 * np.pi * 0.75 * t) <= 0)
    p.flex[L_KNEE] = 2 * p.flex[L_HIP]
    p.flex[R_KNEE] = 2 * p.flex[R_HIP]
    words = {
        "90": [
            (f"turns to the {side}", f"turning to the {side}"),
            (f"turns {side}", f"turning {side}"),
            (f"makes a quarter turn to the {side}", f"making a quarter turn to the {side}"),
        ],
        "180": [
            (f"turns around to the {side}", f"turning around to the {side}"),
            (f"turns around over the {side} shoulder", f"turning around over the {side} shoulder"),
            (f"does a half turn to the {side}", f"doing a half turn to the {side}"),
        ],
        "360": [
            (f"spins around to the {side}", f"spinning around to the {side}"),
            (f"turns a full circle to the {side}", f"turning a full circle to the {side}"),
            (f"spins in place to the {side}", f"spinning in place to the {side}"),
        ],
    }[angle]
    return f"turn/{side}/{angle}", _join(
        _pick(rng, SUBJECTS), _verb(rng, *words[int(rng.integers(len(words)))])
    )


def _squat(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    count = int(rng.integers(1, 4))
    depth = _pulses(t / t[-1], count, 0.85)
    hip, knee = 1.3 * depth, 2.1 * depth
    p.flex[L_HIP] = p.flex[R_HIP] = hip
    p.flex[L_KNEE] = p.flex[R_KNEE] = knee
    p.lean = 0.45 * depth
    p.flex[L_SHOULDER] = p.flex[R_SHOULDER] = 1.4 * depth
    p.root[:, 1] = -_squat_drop(hip, knee)
    p.root[:, 2] = -0.12 * depth
    verb = _pick(rng, [("squats", "squatting"), ("crouches", "crouching"), ("squats down", "squatting down")])
    text = _join(_pick(rng, SUBJECTS), _verb(rng, *verb), _pick(rng, COUNTS[count]))
    if rng.random() < 0.3:
        text += " " + _pick(rng, ("and stands back up", "then stands up"))
    return f"squat/{count}", text


def _kick(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    side = _pick(rng, ("left", "right"))
    count = int(rng.integers(1, 3))
    kick = _pulses(t / t[-1], count, 0.5)
    hip, knee = (L_HIP, L_KNEE) if side == "left" else (R_HIP, R_KNEE)
    p.flex[hip] = 1.4 * kick
    p.flex[knee] = 0.9 * np.sin(np.pi * kick) ** 2
    p.lean = -0.15 * kick
    p.abd[L_SHOULDER] = p.abd[R_SHOULDER] = 0.5 * kick
    leg = _pick(rng, (f"{side} leg", f"{side} foot"))
    verb = _verb(rng, "kicks", "kicking")
    text = _join(
        _pick(rng, SUBJECTS), verb, _pick(rng, ("with the", "with their", "")), leg, _pick(rng, COUNTS[count])
    )
    return f"kick/{side}/{count}", text


def _raise_arms(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    side = _pick(rng, ("left", "right", "both"))
    env = _envelope(t / t[-1], 0.3)
    for s, sh in (("left", L_SHOULDER), ("right", R_SHOULDER)):
        if side in (s, "both"):
            p.flex[sh] = 2.9 * env
    arm = {
        "left": ("left arm", "left hand"),
        "right": ("right arm", "right hand"),
        "both": ("arms", "both arms", "both hands", "hands"),
    }[side]
    verb = _verb(rng, *_pick(rng, [("raises", "raising"), ("lifts", "lifting")]))
    where = _pick(rng, ("above the head", "overhead", "up", "up high"))
    text = _join(_pick(rng, SUBJECTS), verb, _pick(rng, ("their", "the")), _pick(rng, arm), where)
    if rng.random() < 0.4:
        pronoun = "them" if side == "both" else "it"
        text = _join(text, _pick(rng, (f"and lowers {pronoun}", f"then puts {pronoun} down")))
    return f"raise/{side}", text


def _jumping_jacks(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    count = int(rng.integers(2, 5))
    u = t / t[-1]
    open_ = _pulses(u, count, 0.95)
    p.abd[L_SHOULDER] = p.abd[R_SHOULDER] = 2.7 * open_
    p.abd[L_HIP] = p.abd[R_HIP] = 0.3 * open_
    hop = np.abs(np.sin(np.pi * count * u * 2))
    p.root[:, 1] = 0.08 * hop * _envelope(u, 0.1)
    text = _join(
        _pick(rng, SUBJECTS),
        _pick(rng, ("does", "is doing", "performs")),
        _pick(rng, ("jumping jacks", "star jumps")),
    )
    if rng.random() < 0.7:
        text = _join(text, {2: "two times", 3: "three times", 4: "four times"}[count])
    return f"jacks/{count}", text


def _punch(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    side = _pick(rng, ("left", "right", "both"))
    count = int(rng.integers(2, 5))
    u = t / t[-1]
    guard = _envelope(u, 0.12)
    for s, sh, el, k in (("left", L_SHOULDER, L_ELBOW, 0), ("right", R_SHOULDER, R_ELBOW, 1)):
        if side == "both":
            slot = np.clip(u * count, 0, count - 1e-9)
            mine = (np.floor(slot) % 2) == k
            hit = np.where(mine, _pulses(u, count, 0.7), 0.0)
        elif side == s:
            hit = _pulses(u, count, 0.6)
        else:
            hit = np.zeros_like(u)
        p.flex[sh] = guard * (0.9 + 0.7 * hit)
        p.flex[el] = guard * 2.0 * (1 - hit)
    fist = {
        "left": ("left fist", "left hand", "left arm"),
        "right": ("right fist", "right hand", "right arm"),
        "both": ("both fists", "both hands", "alternating fists"),
    }[side]
    verb = _verb(rng, *_pick(rng, [("punches", "punching"), ("throws punches", "throwing punches")]))
    text = _join(
        _pick(rng, SUBJECTS), verb, "with the", _pick(rng, fist), _pick(rng, ("", "forward", "in the air"))
    )
    return f"punch/{side}", text


def _side_step(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    side = _pick(rng, ("left", "right"))
    u = t / t[-1]
    steps = int(rng.integers(2, 4))
    step = _pulses(u, steps, 0.9)
    lead, trail = (L_HIP, R_HIP) if side == "left" else (R_HIP, L_HIP)
    slot = np.clip(u * steps, 0, steps - 1e-9)
    first_half = (slot - np.floor(slot)) < 0.5
    p.abd[lead] = 0.35 * step * first_half
    p.abd[trail] = 0.35 * step * (~first_half)
    p.root[:, 0] = (1 if side == "left" else -1) * 0.35 * steps * _smoothstep(u)
    p.abd[L_SHOULDER] = p.abd[R_SHOULDER] = 0.15
    text = _join(
        _pick(rng, SUBJECTS),
        _verb(
            rng,
            *_pick(rng, [("steps", "stepping"), ("side steps", "side stepping"), ("shuffles", "shuffling")]),
        ),
        _pick(rng, (f"to the {side}", f"sideways to the {side}", side)),
    )
    return f"sidestep/{side}", text


def _bow(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    deep = rng.random() < 0.5
    env = _envelope(t / t[-1], 0.3)
    p.flex[SPINE1] = (0.5 if deep else 0.25) * env
    p.flex[SPINE2] = (0.4 if deep else 0.2) * env
    p.flex[NECK] = 0.3 * env
    text = _join(
        _pick(rng, SUBJECTS),
        _verb(rng, "bows", "bowing"),
        _pick(rng, ("deeply", "down low")) if deep else _pick(rng, ("slightly", "politely", "")),
    )
    return f"bow/{'deep' if deep else 'slight'}", text


def _hop(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    side = _pick(rng, ("left", "right"))
    count = int(rng.integers(2, 5))
    u = t / t[-1]
    env = _envelope(u, 0.12)
    up_hip, up_knee = (R_HIP, R_KNEE) if side == "left" else (L_HIP, L_KNEE)
    p.flex[up_hip] = 0.4 * env
    p.flex[up_knee] = 1.6 * env
    hop = _pulses(u * 0.8 + 0.1, count, 0.6)
    p.root[:, 1] = 0.15 * hop * env
    p.abd[L_SHOULDER] = p.abd[R_SHOULDER] = 0.6 * env
    text = _join(
        _pick(rng, SUBJECTS),
        _verb(rng, "hops", "hopping"),
        _pick(rng, ("on the", "on their", "on one leg, the")),
        f"{side} " + _pick(rng, ("leg", "foot")),
    )
    return f"hop/{side}", text


def _stand(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    look = rng.random() < 0.5
    p.lean = 0.02 * np.sin(2 * np.pi * 0.3 * t)
    if look:
        p.twist[NECK] = 0.7 * np.sin(2 * np.pi * 0.4 * t) * _envelope(t / t[-1], 0.2)
        text = _join(
            _pick(rng, SUBJECTS),
            _pick(rng, ("stands and looks around", "is standing and looking around", "looks left and right")),
        )
    else:
        text = _join(
            _pick(rng, SUBJECTS),
            _pick(rng, ("stands still", "is standing still", "stands in place", "waits without moving")),
        )
    return f"stand/{'look' if look else 'still'}", text


def _clap(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    speed = _pick(rng, ("slow", "fast"))
    env = _envelope(t / t[-1], 0.15)
    osc = 0.5 + 0.5 * np.cos(2 * np.pi * (1.5 if speed == "slow" else 3.0) * t)
    p.flex[L_SHOULDER] = p.flex[R_SHOULDER] = 1.2 * env
    p.twist[L_SHOULDER] = p.twist[R_SHOULDER] = env * (0.7 * osc - 0.37)
    p.flex[L_ELBOW] = p.flex[R_ELBOW] = 0.5 * env
    verb = _verb(rng, "claps", "clapping")
    text = _join(
        _pick(rng, SUBJECTS),
        verb,
        _pick(rng, ("their hands", "hands", "")),
        _pick(rng, SPEED_ADV[speed]) if rng.random() < 0.8 else "",
    )
    return f"clap/{speed}", text


def _circle(rng: np.random.Generator, p: Pose, t: np.ndarray) -> tuple[str, str]:
    clockwise = rng.random() < 0.5
    _gait(p, t, 0.95, hip_amp=0.35, knee_amp=0.7, arm_amp=0.3)
    u = t / t[-1]
    p.yaw = (-1 if clockwise else 1) * 2 * np.pi * u
    _advance(p, 1.0 * _smoothstep(u / 0.1))
    p.lean[:] = 0.0
    direction = ("clockwise",) if clockwise else ("counterclockwise", "anticlockwise", "counter clockwise")
    text = _join(
        _pick(rng, SUBJECTS),
        _verb(rng, "walks", "walking"),
        _pick(rng, ("in a circle", "around in a circle", "in a full circle")),
        _pick(rng, direction),
    )
    return f"circle/{'cw' if clockwise else 'ccw'}", text


ACTIONS: dict[str, ActionFn] = {
    "walk": _walk,
    "run": _run,
    "jump": _jump,
    "wave": _wave,
    "turn": _turn,
    "squat": _squat,
    "kick": _kick,
    "raise": _raise_arms,
    "jacks": _jumping_jacks,
    "punch": _punch,
    "sidestep": _side_step,
    "bow": _bow,
    "hop": _hop,
    "stand": _stand,
    "clap": _clap,
    "circle": _circle,
}


def _draw(seed: int, action: str | None, length: int | None) -> tuple[np.random.Generator, Pose, str, str]:
    rng = np.random.default_rng(seed)
    name = action if action is not None else _pick(rng, tuple(ACTIONS))
    if name not in ACTIONS:
        raise R3DError(f"unknown synthetic action '{name}'; known: {', '.join(ACTIONS)}")
    n = (
        length
        if length is not None
        else int(rng.integers(MIN_LENGTH // UNIT_LENGTH, MAX_LENGTH // UNIT_LENGTH + 1)) * UNIT_LENGTH
    )
    pose = Pose(n + 1)
    label, caption = ACTIONS[name](rng, pose, np.arange(n + 1) / FPS)
    return rng, pose, label, " ".join(caption.split())


def sample_seed(seed: int, index: int) -> int:
    """The generator seed of sample ``index`` of the data set with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def caption_pool(n: int = 512, seed: int = 0) -> list[str]:
    """The captions of ``build_dataset(n, seed)`` without building the motions (fast)."""
    return [_draw(sample_seed(seed, i), None, None)[3] for i in range(n)]


def make_motion(seed: int, action: str | None = None, length: int | None = None) -> MotionSpec:
    """One sample from ``seed`` (its action drawn uniformly unless given; length 40–100 frames, ×4)."""
    rng, pose, label, caption = _draw(seed, action, length)
    joints = canonicalize(pose.joints())
    joints = joints + rng.normal(
        0, 0.002, size=joints.shape
    )  # sensor-like jitter; keeps every feature varied
    return MotionSpec(label=label, caption=caption, features=joints_to_features(joints), joints=joints[:-1])


# ----------------------------------------------------------------------------- data set
@dataclass
class MotionDataset:
    """A padded set of motions: features (N, MAX_LENGTH, 263) float32, lengths (N,), captions, labels."""

    features: np.ndarray
    lengths: np.ndarray
    captions: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, index: np.ndarray) -> MotionDataset:
        return MotionDataset(
            self.features[index],
            self.lengths[index],
            [self.captions[i] for i in index],
            [self.labels[i] for i in index],
        )


def build_dataset(n: int, seed: int = 0, max_length: int = MAX_LENGTH) -> MotionDataset:
    """``n`` samples; sample i uses seed (seed, i) so any prefix of a larger set is identical."""
    features = np.zeros((n, max_length, FEATURE_DIM), dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    captions, labels = [], []
    for i in range(n):
        spec = make_motion(sample_seed(seed, i))
        length = min(spec.features.shape[0], max_length)
        features[i, :length] = spec.features[:length]
        lengths[i] = length
        captions.append(spec.caption)
        labels.append(spec.label)
    return MotionDataset(features, lengths, captions, labels)


def default_cache_dir() -> Path:
    """``$R3D_CACHE_DIR/motion`` or ``~/.cache/r3d/motion``: where generated data sets are cached."""
    import os

    root = os.environ.get("R3D_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "r3d") / "motion"


def add_training_arguments(parser: Any) -> None:
    """The flags every training script on the synthetic set shares (an ``argparse`` parser): training
    set size and data seed, model seed, torch threads, data cache folder, output file."""
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()))
    parser.add_argument("--out", default=None, help="output .safetensors (default: the shipped asset path)")


def _cache_key(n: int, seed: int) -> str:
    source = Path(__file__).read_bytes() + Path(__file__).with_name("representation.py").read_bytes()
    return hashlib.sha1(source + f"{n}/{seed}".encode()).hexdigest()[:12]


def load_or_build(n: int, seed: int, cache_dir: str | Path | None) -> MotionDataset:
    """``build_dataset`` cached as an .npz keyed by (n, seed, generator source) under ``cache_dir``."""
    if cache_dir is None:
        return build_dataset(n, seed)
    path = Path(cache_dir) / f"synthetic_motion_{n}_{seed}_{_cache_key(n, seed)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return MotionDataset(
                data["features"], data["lengths"], list(data["captions"]), list(data["labels"])
            )
    ds = build_dataset(n, seed)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                features=ds.features,
                lengths=ds.lengths,
                captions=np.array(ds.captions),
                labels=np.array(ds.labels),
            )

    atomic_write(path, write)
    return ds
