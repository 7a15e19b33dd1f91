"""Differentiable rendering in plain torch: cameras, SDF/occupancy volume rendering, Gaussian splatting.

All renderers produce :class:`r3d.render.views.Views` (alpha, z-depth, camera-space normals) with the
camera conventions of :mod:`r3d.mesh.render`, so the 2D rewards of :mod:`r3d.rewards.render2d` score
ray-cast meshes and differentiable renders alike.
"""
