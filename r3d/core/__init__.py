"""Model-agnostic machinery: recipes, kernels, advantages, losses, trainer, checkpoints.

Nothing in this package imports a backend or a modality-specific library.
"""
