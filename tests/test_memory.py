"""Memory accounting (r3d.core.memory) and the dry run's estimate (r3d.commands.dry_run.dry_run)."""

from __future__ import annotations

import pytest
import torch
from test_hunyuan3d import images, model_dir, tiny_config  # noqa: F401  (fixtures)
from torch import nn

from r3d.commands.dry_run import dry_run
from r3d.core.config import GRPORecipe
from r3d.core.memory import (
    SavedTensorMeter,
    available_memory,
    count_parameters,
    find_modules,
    measure_batched,
    saved_peak,
    unit_peak,
)
from r3d.models.hunyuan3d import build_modules


def _dit_pass(dit: nn.Module, b: int, device: str = "cpu") -> None:
    g = torch.Generator().manual_seed(b)
    x = torch.randn(b, 32, 8, generator=g).to(device)
    t = torch.rand(b, generator=g).to(device)
    ctx = torch.randn(b, 5, 32, generator=g).to(device)
    dit(x, t, ctx).float().sum().backward()


@pytest.fixture
def dit() -> nn.Module:
    torch.manual_seed(0)
    net = build_modules(tiny_config())[0]
    net.x_embedder.requires_grad_(False)  # frozen input layer: x itself is still kept by later layers
    return net


def test_activation_measurement_grows_linearly_with_batch_size(dit):
    """Saved-tensor bytes of a forward + backward grow with the batch, linearly (the basis of the
    extrapolation from batches 1 and 2 to train.batch_size)."""
    peaks = [saved_peak(lambda b=b: _dit_pass(dit, b), exclude=[dit]) for b in (1, 2, 4)]
    assert peaks[0] > 0 and peaks[0] < peaks[1] < peaks[2]
    assert abs((peaks[2] - peaks[1]) - 2 * (peaks[1] - peaks[0])) <= 0.02 * peaks[2]
    act = measure_batched(lambda b: saved_peak(lambda: _dit_pass(dit, b), exclude=[dit]), 4, "cpu")
    assert abs(act.bytes - peaks[2]) <= 0.02 * peaks[2] and "linear" in act.method


def test_meta_measurement_equals_the_real_one(dit):
    """The same network on the meta device (no memory, balanced MoE routing, attention counted as the
    fused kernel) keeps exactly the bytes it keeps on real CPU tensors."""
    real = saved_peak(lambda: _dit_pass(dit, 2), exclude=[dit])
    with torch.device("meta"):
        meta_dit = build_modules(tiny_config())[0]
    meta_dit.x_embedder.requires_grad_(False)
    meta = saved_peak(lambda: _dit_pass(meta_dit, 2, "meta"), exclude=[meta_dit])
    assert meta == real


def test_parameters_are_excluded_and_freed_graphs_released():
    """Weights are not activations; a graph freed by backward no longer counts, so two sequential
    steps peak at one step's bytes; a tensor saved twice counts once."""
    lin = nn.Linear(64, 64)
    x = torch.randn(8, 64, requires_grad=True)

    def step() -> None:
        h = lin(x)
        (h * h).sum().backward()  # h saved twice by mul (both operands): one storage

    one = saved_peak(step, exclude=[lin])
    two = saved_peak(lambda: (step(), step()), exclude=[lin])
    assert one == two == (8 * 64 + 8 * 64) * 4  # x (by the linear) + h (by the product)
    meter = SavedTensorMeter(exclude=[lin])
    with meter:
        step()
        step()
    assert meter.total == 2 * one and meter.live == 0


def test_checkpointing_keeps_block_inputs_and_recomputes_one_block(dit):
    """With gradient checkpointing the meter sees only what checkpointing keeps; one block's own bytes
    (unit_peak, measured without checkpointing) is what its recomputation adds back."""
    full = saved_peak(lambda: _dit_pass(dit, 2), exclude=[dit])
    per_block = unit_peak(lambda: _dit_pass(dit, 2), dit.checkpoint_units(), exclude=[dit])
    dit.gradient_checkpointing = True
    kept = saved_peak(lambda: _dit_pass(dit, 2), exclude=[dit])
    assert 0 < kept < full and 0 < per_block < full
    assert kept + per_block < full  # 7 blocks: checkpointing must save memory


def test_parameter_count_is_per_tensor_once_and_per_dtype():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Linear(4, 2).to(torch.bfloat16), shared)
    count = count_parameters([model, shared])
    assert count.count == 20 + 10
    assert count.by_dtype == {"fp32": (20, 80), "bf16": (10, 20)}
    assert count.bytes == sum(p.numel() * p.element_size() for p in model.parameters())


def test_available_memory_reports_system_ram_and_no_cuda_here():
    free, source = available_memory("cpu")
    assert free > 0 and "RAM" in source
    if not torch.cuda.is_available():
        assert available_memory("cuda") == (None, "no CUDA device on this machine")


def test_dry_run_estimate_equals_the_real_models_parameters(model_dir, images, tmp_path):  # noqa: F811
    """The policy rows of the estimate sum to the bytes of the loaded model's parameters (DiT, VAE
    decoder, DINOv2), the LoRA row to the trainable ones, AdamW to twice those; the pipeline ran."""
    recipe = GRPORecipe.model_validate(
        {
            "model": {
                "name": "hunyuan3d",
                "options": {"model_dir": str(model_dir), "device": "cpu", "decode_resolution": 8},
            },
            "prompts": {"train": images},
            "sampler": {"num_steps": 2},
            "rewards": {"geometry": {"weight": 1.0}},
            "train": {"prompts_per_iteration": 2, "group_size": 2, "batch_size": 3, "lora": {"rank": 2}},
        }
    )
    report = dry_run(recipe, tmp_path / "run")
    assert report.problems == [], report.problems
    rows = {(r.component, r.kind): r for r in report.memory.rows}
    policy = [r for r in report.memory.rows if r.component.startswith("policy:")]
    assert {r.component for r in policy} == {
        "policy: network",
        "policy: model.vae",
        "policy: model.conditioner",
    }
    from r3d.core.registry import build_policy

    fresh = build_policy("hunyuan3d", model_dir=str(model_dir), device="cpu")
    modules = [m for _, m in find_modules(fresh)]
    assert sum(r.bytes for r in policy) == sum(
        p.numel() * p.element_size() for m in modules for p in m.parameters()
    )
    lora = rows["LoRA adapter", "trainable"]
    targets = [m for n, m in fresh.network.named_modules() if n.split(".")[-1] in fresh.lora_target_modules]
    assert lora.count == sum(2 * (m.in_features + m.out_features) for m in targets) > 0  # rank 2: A and B
    assert (
        rows["AdamW", "optimizer state"].bytes
        == 2 * lora.bytes
        == 2 * rows["LoRA gradients", "gradients"].bytes
    )
    act = rows["activations", "micro-batch 3"]
    assert act.bytes > 0 and "batch 1, 2 on cpu" in act.note
    assert (tmp_path / "run").exists() is False
    items = dict(report.checks)
    assert "first-step ratio max |r − 1| = 0" in items["update"]
