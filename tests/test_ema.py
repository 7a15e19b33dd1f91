"""train.ema: the EMA of the LoRA weights (formula, evaluation, checkpoint, exact resume, off by default)."""

import torch
from safetensors.torch import load_file
from test_grpo_trainer import recipe, strip_times, trainer
from torch import nn

from r3d.core.checkpoint import load_state
from r3d.core.config import GRPORecipe
from r3d.core.ema import ParameterEMA, trainable

EMA = {"enabled": True, "decay": 0.8, "update_interval": 2}
TRAIN_KEYS = ("reward", "reward_std", "policy_loss", "grad_norm", "ratio_first_step_mean")


def test_ema_follows_the_flow_grpo_formula_with_warmup_and_interval():
    """After optimizer step n, when (n + 1) % interval == 0: ema += (1 − min((1+n)/(10+n), decay))(θ − ema);
    other steps leave it alone (catches an off-by-one in the interval or the warm-up)."""
    p = nn.Parameter(torch.zeros(3))
    ema = ParameterEMA({"w": p}, decay=0.5, update_interval=2)
    expected = torch.zeros(3)
    for n in range(6):
        with torch.no_grad():
            p.add_(1.0)
        ema.update()
        if (n + 1) % 2 == 0:
            d = min((1 + n) / (10 + n), 0.5)
            expected = expected + (1 - d) * (p.detach() - expected)
        assert torch.allclose(ema.weights["w"], expected, atol=1e-7), n
    assert ema.step == 6
    flat = ParameterEMA({"w": p}, decay=0.5, warmup=False)
    flat.update()
    assert torch.allclose(flat.weights["w"], p.detach())  # decay 0.5 from θ itself: stays θ


def test_swapped_in_evaluates_with_the_average_and_restores_the_live_weights():
    p = nn.Parameter(torch.ones(2))
    ema = ParameterEMA({"w": p}, decay=0.9, warmup=False)
    ema.weights["w"] = torch.full((2,), 7.0)
    with ema.swapped_in():
        assert torch.equal(p.detach(), torch.full((2,), 7.0))
    assert torch.equal(p.detach(), torch.ones(2))


def test_ema_is_off_by_default_and_does_not_change_training(tmp_path):
    """Default recipes keep no EMA (no checkpoint entry). With it on, every training metric and the final
    adapter equal the run without it bit for bit: only evaluation reads the average."""
    assert GRPORecipe.model_validate(recipe().model_dump()).train.ema.enabled is False
    off = trainer(recipe(iterations=3), tmp_path / "off")
    assert off.ema is None
    plain = off.train()
    assert "ema" not in load_state(tmp_path / "off" / "checkpoint")
    on = trainer(recipe(iterations=3, ema=EMA), tmp_path / "on")
    with_ema = on.train()
    for a, b in zip(plain[1:], with_ema[1:], strict=True):
        assert all(a[k] == b[k] for k in TRAIN_KEYS if k in a), a["iteration"]
    assert plain[-1]["eval/reward"] != with_ema[-1]["eval/reward"]
    live_off, live_on = (
        load_file(str(tmp_path / d / "checkpoint" / "adapter_model.safetensors")) for d in ("off", "on")
    )
    assert all(torch.equal(live_off[k], live_on[k]) for k in live_off)


def test_evaluation_uses_the_ema_weights(tmp_path):
    """The logged end-of-run evaluation is what the EMA weights give, not the live ones."""
    t = trainer(recipe(iterations=2, ema=EMA), tmp_path / "r")
    last = t.train()[-1]
    live = {k: p.detach().clone() for k, p in trainable(t.peft).items()}
    assert any(not torch.equal(live[k], t.ema.weights[k]) for k in live)
    with t.ema.swapped_in():
        assert t._evaluate("check")["eval/reward"] == last["eval/reward"]
    assert t._evaluate("check")["eval/reward"] != last["eval/reward"]


def test_resume_with_ema_reproduces_the_uninterrupted_run(tmp_path):
    """The EMA (weights and step count) is checkpointed: stopping at iteration 2 (4 optimizer steps) and resuming logs the
    same metrics, EMA evaluations included, and ends with the same EMA as one uninterrupted run."""
    full_t = trainer(recipe(iterations=4, ema=EMA), tmp_path / "full")
    full = full_t.train()
    trainer(recipe(iterations=2, ema=EMA), tmp_path / "part").train()
    saved = load_state(tmp_path / "part" / "checkpoint")["ema"]
    assert saved["step"] == 4 and set(saved["weights"]) == set(full_t.ema.weights)
    resumed_t = trainer(recipe(iterations=4, ema=EMA), tmp_path / "part")
    resumed = resumed_t.train(resume=True)
    assert strip_times(resumed) == strip_times(full[3:])
    assert all(torch.equal(full_t.ema.weights[k], resumed_t.ema.weights[k]) for k in full_t.ema.weights)
    assert resumed_t.ema.step == full_t.ema.step == 8  # 2 optimizer steps per iteration


def test_enabling_ema_on_resume_starts_it_from_the_resumed_weights(tmp_path):
    """A run checkpointed without EMA and resumed with it on: the EMA starts at the resumed LoRA weights
    (not at the LoRA's initial identity) and is saved from then on."""
    trainer(recipe(iterations=1), tmp_path / "r").train()
    saved = load_file(str(tmp_path / "r" / "checkpoint" / "adapter_model.safetensors"))
    t = trainer(recipe(iterations=2, ema=EMA), tmp_path / "r")
    t.resume()
    assert t.ema.step == 0
    for name, value in t.ema.weights.items():  # peft drops the adapter name from saved keys
        assert torch.equal(value, saved[name.replace(".default.weight", ".weight")]), name
    t.train(resume=True)
    assert load_state(tmp_path / "r" / "checkpoint")["ema"]["step"] == 2
