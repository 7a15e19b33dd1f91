"""Running a LoRA-wrapped network as its base network, cheaply (the KL reference forward)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from peft.tuners.tuners_utils import BaseTunerLayer

_LAYERS: weakref.WeakKeyDictionary[Any, list[BaseTunerLayer]] = weakref.WeakKeyDictionary()


def _tuner_layers(peft_model: Any) -> list[BaseTunerLayer]:
    """The model's adapter layers, found once per model."""
    layers = _LAYERS.get(peft_model)
    if layers is None:
        layers = [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)]
        _LAYERS[peft_model] = layers
    return layers


@contextmanager
def adapter_disabled(peft_model: Any) -> Iterator[None]:
    """Inside the block ``peft_model`` computes its base network, as in ``peft_model.disable_adapter()``.

    Each adapter layer's disable flag (the one its forward reads) is set, then restored on exit.
    peft's own context also scans the whole model's status and toggles the adapter weights'
    ``requires_grad`` on every entry and exit — about 2 ms for tiny-shapes' 16 layers, more than
    the reference forward it wraps. The forward is the same: a disabled layer returns its base
    layer's output, so no gradient reaches the adapter weights either way. Falls back to peft's
    context for adapters other than LoRA-style layers (no such flag).
    """
    layers = _tuner_layers(peft_model)
    if not layers or not all(hasattr(m, "_disable_adapters") for m in layers):
        with peft_model.disable_adapter():
            yield
        return
    previous = [m._disable_adapters for m in layers]
    for m in layers:
        object.__setattr__(m, "_disable_adapters", True)  # a plain attribute: skip Module.__setattr__
    try:
        yield
    finally:
        for m, was in zip(layers, previous, strict=True):
            object.__setattr__(m, "_disable_adapters", was)
