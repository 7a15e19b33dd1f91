"""Policy adapters: generative backends behind the ``FlowPolicy`` / ``DiffusionPolicy`` protocols.

Modules are imported by name through ``r3d.core.registry`` (e.g. ``tiny_shapes:load_tiny_shapes``), so
importing this package loads no backend.
"""
