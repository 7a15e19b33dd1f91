"""r3d: RL post-training and evaluation of generative diffusion / flow models beyond text-to-image."""

__version__ = "0.2.0"
