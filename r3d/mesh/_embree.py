"""First hits from the embree 4 library that ``embreex`` ships, called directly (ctypes).

The scene is the one ``embreex.rtcore_scene.EmbreeScene()`` plus ``embreex.mesh_construction.
TriangleMesh(scene, vertices, faces)`` make (a new device with the default configuration, the robust
scene flag, one triangle geometry of float32 vertices in 16-byte records and uint32 indices), and each
ray is cast on its own with ``rtcIntersect1`` as ``EmbreeScene.run`` does (``tnear`` 0, ``tfar`` 1e37,
every mask bit), so the hit faces are the same. The difference is speed: embreex fills the buffers one
element at a time through Python indexing (~0.5 µs per face), here they are filled with one copy.

:func:`first_faces` returns None where the library cannot be found (then callers use embreex).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

_ROBUST = 1 << 2  # RTC_SCENE_FLAG_ROBUST (embreex's default scene flag)
_TRIANGLE = 0  # RTC_GEOMETRY_TYPE_TRIANGLE
_INDEX, _VERTEX = 0, 1  # RTC_BUFFER_TYPE_*
_UINT3, _FLOAT3 = 0x5003, 0x9003  # RTC_FORMAT_*
_INVALID = 0xFFFFFFFF  # RTC_INVALID_GEOMETRY_ID
_RAY_WORDS = 32  # one RTCRayHit (96 bytes, 16-byte aligned) in a 128-byte record of 4-byte words
_PRIM_ID = 17  # word of hit.primID: ray (12 words) + hit.Ng (3) + hit.u, hit.v (2)


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The embree 4 shared library bundled with embreex (already loaded by it), None if not found."""
    try:
        import embreex.rtcore_scene  # noqa: F401 - loads the library
    except ImportError:
        return None
    import embreex

    root = Path(embreex.__file__).resolve().parent.parent
    found = sorted(p for d in ("embreex.libs", ".dylibs") for p in (root / d).glob("libembree4*"))
    if not found:
        return None
    lib = ctypes.CDLL(str(found[0]))
    ptr, uint, size = ctypes.c_void_p, ctypes.c_uint, ctypes.c_size_t
    for name, restype, argtypes in (
        ("rtcNewDevice", ptr, [ctypes.c_char_p]),
        ("rtcReleaseDevice", None, [ptr]),
        ("rtcNewScene", ptr, [ptr]),
        ("rtcSetSceneFlags", None, [ptr, ctypes.c_int]),
        ("rtcCommitScene", None, [ptr]),
        ("rtcReleaseScene", None, [ptr]),
        ("rtcNewGeometry", ptr, [ptr, ctypes.c_int]),
        ("rtcSetNewGeometryBuffer", ptr, [ptr, ctypes.c_int, uint, ctypes.c_int, size, size]),
        ("rtcCommitGeometry", None, [ptr]),
        ("rtcAttachGeometry", uint, [ptr, ptr]),
        ("rtcReleaseGeometry", None, [ptr]),
        ("rtcIntersect1", None, [ptr, ptr, ptr]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _aligned_words(n: int) -> np.ndarray:
    """(n, _RAY_WORDS) uint32 zeros starting on a 16-byte boundary."""
    raw = np.zeros(n * _RAY_WORDS + 4, dtype=np.uint32)
    skip = (-raw.ctypes.data % 16) // 4
    return raw[skip : skip + n * _RAY_WORDS].reshape(n, _RAY_WORDS)


def first_faces(
    vertices: np.ndarray, faces: np.ndarray, origins: np.ndarray, directions: np.ndarray
) -> np.ndarray | None:
    """(N,) int64 first face hit by each ray (−1: none), as embreex's ``EmbreeScene.run``.

    vertices (V, 3) float32, faces (F, 3) integer, origins and directions (N, 3) float32. None when
    the embree library is not available.
    """
    lib = _library()
    if lib is None:
        return None
    points = np.zeros((len(vertices), 4), dtype=np.float32)
    points[:, :3] = vertices
    indices = np.ascontiguousarray(faces, dtype=np.uint32)
    rays = _aligned_words(len(origins))
    floats = rays.view(np.float32)
    floats[:, 0:3], floats[:, 4:7], floats[:, 8] = origins, directions, np.float32(1e37)
    rays[:, 9] = _INVALID  # mask: every bit
    rays[:, _PRIM_ID : _PRIM_ID + 3] = _INVALID  # primID, geomID, instID[0]
    device = lib.rtcNewDevice(None)
    scene = lib.rtcNewScene(device)
    try:
        lib.rtcSetSceneFlags(scene, _ROBUST)
        geometry = lib.rtcNewGeometry(device, _TRIANGLE)
        vertex_buffer = lib.rtcSetNewGeometryBuffer(geometry, _VERTEX, 0, _FLOAT3, 16, len(points))
        index_buffer = lib.rtcSetNewGeometryBuffer(geometry, _INDEX, 0, _UINT3, 12, len(indices))
        if not vertex_buffer or not index_buffer:
            lib.rtcReleaseGeometry(geometry)
            return None
        ctypes.memmove(vertex_buffer, points.ctypes.data, points.nbytes)
        ctypes.memmove(index_buffer, indices.ctypes.data, indices.nbytes)
        lib.rtcCommitGeometry(geometry)
        lib.rtcAttachGeometry(scene, geometry)
        lib.rtcReleaseGeometry(geometry)
        lib.rtcCommitScene(scene)
        intersect, base = lib.rtcIntersect1, rays.ctypes.data
        for address in range(base, base + rays.nbytes, _RAY_WORDS * 4):
            intersect(scene, address, None)
    finally:
        lib.rtcReleaseScene(scene)
        lib.rtcReleaseDevice(device)
    prim = rays[:, _PRIM_ID].astype(np.int64)
    prim[rays[:, _PRIM_ID] == _INVALID] = -1
    return prim
