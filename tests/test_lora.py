"""r3d.core.lora.adapter_disabled: the base network's forward, as peft's disable_adapter gives it."""

import pytest
import torch
from toy_policy import ToyNet

from r3d.core.grpo import attach_lora
from r3d.core.lora import adapter_disabled


class _Holder:
    lora_target_modules = ["inp", "out"]

    def __init__(self) -> None:
        self.network = ToyNet()


def _trained_adapter():
    """A LoRA-wrapped toy net whose adapter changes the output (B weights moved off zero)."""
    peft = attach_lora(_Holder(), rank=4, alpha=8)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(generator=torch.Generator().manual_seed(1))
    return peft


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 2, generator=g), torch.rand(8, generator=g), torch.eye(2)[torch.arange(8) % 2]


def test_disabled_forward_equals_peft_disable_adapter_and_the_adapter_returns():
    """Inside the block the output is bitwise peft's disable_adapter() output (the base network's),
    which differs from the adapted output; after it the adapted output is back."""
    peft, args = _trained_adapter(), _inputs()
    adapted = peft(*args)
    with torch.no_grad(), peft.disable_adapter():
        base = peft(*args)
    with torch.no_grad(), adapter_disabled(peft):
        ours = peft(*args)
    assert torch.equal(ours, base) and not torch.equal(base, adapted)
    assert torch.equal(peft(*args), adapted)


def test_flags_are_restored_after_an_error_and_nested_blocks_stay_disabled():
    """An exception inside the block restores the adapter; an inner block leaves the outer one disabled."""
    peft, args = _trained_adapter(), _inputs()
    adapted = peft(*args).detach()
    with pytest.raises(RuntimeError), adapter_disabled(peft):
        raise RuntimeError("boom")
    assert torch.equal(peft(*args), adapted)
    with adapter_disabled(peft):
        with adapter_disabled(peft):
            pass
        still_base = peft(*args)
    assert not torch.equal(still_base, adapted)
    assert torch.equal(peft(*args), adapted)
