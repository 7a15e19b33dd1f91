"""HumanML3D's 263-d motion features (Guo et al. 2022) for the 22-joint SMPL skeleton, and back.

Coordinates: y up, the body initially faces +z, its left side is +x; 20 frames per second.
Quaternions are (w, x, y, z). Per frame t the feature vector holds, in order:

====================  ======  ==============================================================
root_rot_velocity          1  half-angle yaw increment t → t+1 (arcsin of the y quaternion part)
root_linear_velocity       2  root xz displacement t → t+1 in the body-heading frame of t+1
root_y                     1  root height
ric_data              21 × 3  joint positions relative to the root's xz, rotated to face +z
rot_data              21 × 6  local joint rotations (continuous 6D: first two matrix columns)
local_velocity        22 × 3  joint displacement t → t+1 in the heading frame of t
foot_contact               4  left ankle, left foot, right ankle, right foot (squared speed < thr)
====================  ======  ==============================================================

``joints_to_features`` turns T+1 frames of joint positions into T feature frames;
``recover_from_ric`` turns features back into joint positions (exactly, from root + ric data).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)  # fmt: skip
NUM_JOINTS = 22
FEATURE_DIM = 263
FPS = 20
KINEMATIC_CHAIN = (
    (0, 2, 5, 8, 11),
    (0, 1, 4, 7, 10),
    (0, 3, 6, 9, 12, 15),
    (9, 14, 17, 19, 21),
    (9, 13, 16, 18, 20),
)
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
# Rest-pose bone directions of HumanML3D's t2m skeleton (t2m_raw_offsets).
RAW_OFFSETS = np.array(
    [[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0],
     [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, -1, 0], [0, -1, 0],
     [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0]], dtype=np.float64,
)  # fmt: skip
FACE_JOINTS = (2, 1, 17, 16)  # right hip, left hip, right shoulder, left shoulder
FOOT_LEFT = (7, 10)
FOOT_RIGHT = (8, 11)
FOOT_THRESHOLD = 0.002  # squared displacement per frame (m²) below which a foot joint is in contact

# Feature slices (start, stop) for the 22-joint layout.
ROOT_ROT_VEL = (0, 1)
ROOT_LIN_VEL = (1, 3)
ROOT_Y = (3, 4)
RIC = (4, 4 + 21 * 3)
ROT = (RIC[1], RIC[1] + 21 * 6)
LOCAL_VEL = (ROT[1], ROT[1] + 22 * 3)
FOOT_CONTACT = (LOCAL_VEL[1], LOCAL_VEL[1] + 4)
FEATURE_GROUPS = (ROOT_ROT_VEL, ROOT_LIN_VEL, ROOT_Y, RIC, ROT, LOCAL_VEL, FOOT_CONTACT)
assert FOOT_CONTACT[1] == FEATURE_DIM


# ----------------------------------------------------------------------------- quaternions (NumPy)
def qmul(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) quaternions."""
    w1, x1, y1, z1 = np.moveaxis(q, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(r, -1, 0)
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        axis=-1,
    )


def qinv(q: np.ndarray) -> np.ndarray:
    """Inverse of unit quaternions (the conjugate)."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate (..., 3) vectors by (..., 4) unit quaternions."""
    w = q[..., :1]
    u = q[..., 1:]
    uv = np.cross(u, v)
    return v + 2.0 * (w * uv + np.cross(u, uv))


def qbetween(v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """Unit quaternion of the shortest rotation taking direction v0 to direction v1 (..., 3)."""
    v0 = v0 / np.linalg.norm(v0, axis=-1, keepdims=True)
    v1 = v1 / np.linalg.norm(v1, axis=-1, keepdims=True)
    axis = np.cross(v0, v1)
    w = 1.0 + np.sum(v0 * v1, axis=-1, keepdims=True)
    q = np.concatenate([w, axis], axis=-1)
    # Opposite directions: any axis perpendicular to v0 (rotation by π).
    opposite = w[..., 0] < 1e-9
    if np.any(opposite):
        perp = np.cross(v0[opposite], np.array([1.0, 0.0, 0.0]))
        small = np.linalg.norm(perp, axis=-1) < 1e-6
        perp[small] = np.cross(v0[opposite][small], np.array([0.0, 0.0, 1.0]))
        q[opposite] = np.concatenate([np.zeros((perp.shape[0], 1)), perp], axis=-1)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions → (..., 3, 3) rotation matrices."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=-2,
    )


def quat_to_cont6d(q: np.ndarray) -> np.ndarray:
    """(..., 4) → (..., 6): the first two columns of the rotation matrix, concatenated."""
    m = quat_to_matrix(q)
    return np.concatenate([m[..., 0], m[..., 1]], axis=-1)


# ----------------------------------------------------------------------------- joints → features
def _heading_quat(joints: np.ndarray, smooth: bool) -> np.ndarray:
    """(T, 22, 3) → (T, 4): the yaw rotation that turns the body's forward direction onto +z."""
    r_hip, l_hip, r_sdr, l_sdr = FACE_JOINTS
    across = (joints[:, r_hip] - joints[:, l_hip]) + (joints[:, r_sdr] - joints[:, l_sdr])
    across = across / np.linalg.norm(across, axis=-1, keepdims=True)
    forward = np.cross(np.array([0.0, 1.0, 0.0]), across)
    if smooth:
        forward = gaussian_filter1d(forward, 20, axis=0, mode="nearest")
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    return qbetween(forward, np.broadcast_to(np.array([0.0, 0.0, 1.0]), forward.shape))


def inverse_kinematics(joints: np.ndarray, root_quat: np.ndarray) -> np.ndarray:
    """Local joint rotations (T, 22, 4) taking the rest bone directions onto the observed bones."""
    quats = np.zeros(joints.shape[:-1] + (4,))
    quats[:, 0] = root_quat
    for chain in KINEMATIC_CHAIN:
        acc = root_quat
        for parent, child in zip(chain[:-1], chain[1:], strict=False):
            bone = joints[:, child] - joints[:, parent]
            rest = np.broadcast_to(RAW_OFFSETS[child], bone.shape)
            local = qmul(qinv(acc), qbetween(rest, bone))
            quats[:, child] = local
            acc = qmul(acc, local)
    return quats


def canonicalize(joints: np.ndarray) -> np.ndarray:
    """Put a (T, 22, 3) motion on the floor, its first root xz at the origin, first facing +z."""
    joints = np.array(joints, dtype=np.float64)
    joints[..., 1] -= joints[..., 1].min()
    joints -= joints[0, 0] * np.array([1.0, 0.0, 1.0])
    q0 = _heading_quat(joints[:1], smooth=False)[0]
    return qrot(np.broadcast_to(q0, joints.shape[:-1] + (4,)), joints)


def joints_to_features(joints: np.ndarray, foot_threshold: float = FOOT_THRESHOLD) -> np.ndarray:
    """(T+1, 22, 3) canonical joint positions (metres) → (T, 263) HumanML3D features (float32)."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or joints.shape[0] < 2:
        raise ValueError(f"expected (T+1 >= 2, 22, 3) joint positions, got {joints.shape}")
    n = joints.shape[0]

    def contact(ids: tuple[int, int]) -> np.ndarray:
        disp = joints[1:, list(ids)] - joints[:-1, list(ids)]
        return (np.sum(disp**2, axis=-1) < foot_threshold).astype(np.float64)

    r_rot = _heading_quat(joints, smooth=True)  # (T+1, 4)
    quats = inverse_kinematics(joints, r_rot)
    cont6d = quat_to_cont6d(quats)  # (T+1, 22, 6)
    velocity = qrot(r_rot[1:], joints[1:, 0] - joints[:-1, 0])
    r_velocity = qmul(r_rot[1:], qinv(r_rot[:-1]))
    local = joints.copy()
    local[..., 0] -= local[:, :1, 0]
    local[..., 2] -= local[:, :1, 2]
    local = qrot(np.repeat(r_rot[:, None], NUM_JOINTS, axis=1), local)
    local_vel = qrot(np.repeat(r_rot[:-1, None], NUM_JOINTS, axis=1), joints[1:] - joints[:-1])
    features = np.concatenate(
        [
            np.arcsin(np.clip(r_velocity[:, 2:3], -1.0, 1.0)),
            velocity[:, [0, 2]],
            local[:-1, 0, 1:2],
            local[:-1, 1:].reshape(n - 1, -1),
            cont6d[:-1, 1:].reshape(n - 1, -1),
            local_vel.reshape(n - 1, -1),
            contact(FOOT_LEFT),
            contact(FOOT_RIGHT),
        ],
        axis=-1,
    )
    return features.astype(np.float32)


# ----------------------------------------------------------------------------- features → joints
def _qrot_t(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    w, u = q[..., :1], q[..., 1:]
    uv = torch.cross(u, v, dim=-1)
    return v + 2.0 * (w * uv + torch.cross(u, uv, dim=-1))


def recover_root(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., T, 263) → heading quaternions (..., T, 4) and root positions (..., T, 3)."""
    rot_vel = features[..., 0]
    angle = torch.zeros_like(rot_vel)
    angle[..., 1:] = rot_vel[..., :-1]
    angle = torch.cumsum(angle, dim=-1)
    quat = torch.zeros(features.shape[:-1] + (4,), dtype=features.dtype, device=features.device)
    quat[..., 0] = torch.cos(angle)
    quat[..., 2] = torch.sin(angle)
    pos = torch.zeros(features.shape[:-1] + (3,), dtype=features.dtype, device=features.device)
    pos[..., 1:, 0] = features[..., :-1, 1]
    pos[..., 1:, 2] = features[..., :-1, 2]
    inv = quat * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=features.dtype, device=features.device)
    pos = torch.cumsum(_qrot_t(inv, pos), dim=-2)
    pos[..., 1] = features[..., 3]
    return quat, pos


def recover_from_ric(features: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """(..., T, 263) de-normalised features → (..., T, 22, 3) joint positions (same array type)."""
    is_numpy = isinstance(features, np.ndarray)
    data = torch.as_tensor(features, dtype=torch.float32)
    if data.shape[-1] != FEATURE_DIM:
        raise ValueError(f"expected {FEATURE_DIM}-d features, got {tuple(data.shape)}")
    quat, root = recover_root(data)
    local = data[..., RIC[0] : RIC[1]].reshape(data.shape[:-1] + (NUM_JOINTS - 1, 3))
    inv = quat * torch.tensor([1.0, -1.0, -1.0, -1.0])
    local = _qrot_t(inv[..., None, :].expand(local.shape[:-1] + (4,)), local)
    local[..., 0] += root[..., None, 0]
    local[..., 2] += root[..., None, 2]
    joints = torch.cat([root[..., None, :], local], dim=-2)
    return joints.numpy() if is_numpy else joints


# ----------------------------------------------------------------------------- normalisation
def grouped_std(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (263,) and std (263,) of (N, 263) frames, the std averaged within each feature group
    (HumanML3D's ``mean_variance``) and floored at 1e-4 so constant groups stay finite."""
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    for lo, hi in FEATURE_GROUPS:
        std[lo:hi] = std[lo:hi].mean()
    return mean.astype(np.float32), np.maximum(std, 1e-4).astype(np.float32)


def renormalize(
    x: torch.Tensor,
    src_mean: torch.Tensor,
    src_std: torch.Tensor,
    dst_mean: torch.Tensor,
    dst_std: torch.Tensor,
) -> torch.Tensor:
    """Features normalised with (src_mean, src_std) → normalised with (dst_mean, dst_std); last dim 263."""
    return (x * src_std + src_mean - dst_mean) / dst_std
