"""Meshes: file io, CPU ray-cast rendering, geometry measures (and TRELLIS voxelization)."""

from r3d.mesh.io import MESH_SUFFIXES, expand_inputs, load_mesh, save_mesh

__all__ = ["MESH_SUFFIXES", "expand_inputs", "load_mesh", "save_mesh"]
