"""Gold measures: held-out judges a run is evaluated with but never trained on (``eval.gold``).

A gold measure has the reward protocol (:class:`r3d.core.rewards.Reward`: ``name``,
``higher_is_better``, ``value_range``, ``__call__(artifacts, prompts) -> {component: (B,)}``) plus
``guarded`` (whether the over-optimisation guard watches its headline) and, optionally,
``needs_context = True`` to be called as ``measure(artifacts, prompts, context=EvalContext)`` with the
evaluation's latents and the base model's samples at the same noise (:class:`r3d.core.gold.EvalContext`).
Registered in :data:`r3d.core.registry.GOLD`; built by :func:`r3d.commands.runner.build_gold`.
"""
