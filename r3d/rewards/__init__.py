"""Reward adapters, one module each, registered by name in :data:`r3d.core.registry.REWARDS` and
imported lazily (naming a reward never pulls in another one's dependencies). Scoring mesh files is
the ``r3d score`` command's library side, :mod:`r3d.commands.score`."""
