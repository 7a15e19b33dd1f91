"""``r3d.core.device.resolve_device``: the one device resolver (editors, Hunyuan3D, train-vqvae, dry run)."""

from __future__ import annotations

import pytest
import torch

from r3d.core.device import resolve_device
from r3d.core.errors import R3DError


@pytest.mark.parametrize("spec", ["auto", None])
def test_auto_and_none_pick_cuda_only_when_present(spec, monkeypatch):
    """auto / None follow torch.cuda.is_available() (catches an 'auto' that always means cpu or cuda)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(spec) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(spec) == torch.device("cuda")


def test_explicit_names_and_devices_pass_through_unchanged():
    """cpu, meta and torch.device objects come back as given; 'cuda' keeps no index (the rank's GPU)."""
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("meta") == torch.device("meta")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("cuda", require_available=False) == torch.device("cuda")
    assert resolve_device("cuda", require_available=False).index is None


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "", "cpu:-1x"])
def test_unknown_names_are_one_line_errors(spec):
    """A typo is an R3DError naming it and the valid forms, not torch's RuntimeError traceback."""
    with pytest.raises(R3DError, match="unknown device") as info:
        resolve_device(spec)
    assert "\n" not in str(info.value) and "cuda:N" in str(info.value)


def test_missing_cuda_is_an_error_unless_the_caller_plans_without_it(monkeypatch):
    """cuda / cuda:N without CUDA (or beyond the device count) fails in one line; the dry run, which
    reports the missing device itself, gets the device back with require_available=False."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(R3DError, match="CUDA is not available.*--device cpu"):
        resolve_device("cuda")
    assert resolve_device("cuda:1", require_available=False) == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(R3DError, match="2 CUDA device"):
        resolve_device("cuda:2")


def test_every_former_resolver_is_this_one():
    """The editors, the Hunyuan3D loader and train-vqvae import this function: no copy can drift."""
    from r3d.edit import editors
    from r3d.models import hunyuan3d
    from r3d.vqvae import train

    assert editors.resolve_device is hunyuan3d.resolve_device is train.resolve_device is resolve_device
