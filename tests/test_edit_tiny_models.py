"""The offline tiny editor (diffusers QwenImageEditPipeline) and judge (transformers Qwen3-VL): seeds,
batching, the hub-folder loading paths, left padding, the expected-score formula, and parse failures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from r3d.core.errors import R3DError
from r3d.edit.config import EditorConfig, JudgeConfig
from r3d.edit.dataset import load_dataset
from r3d.edit.editors import Editor
from r3d.edit.judges import Judge, JudgeItem, LocalVLM, Query
from r3d.edit.prompts import combine
from r3d.edit.tiny import save_tiny_editor, save_tiny_judge
from r3d.edit.vl_inputs import vision_token_ids

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def samples():
    return load_dataset().samples


@pytest.fixture(scope="module")
def editor():
    return Editor.load(EditorConfig(model="tiny", num_inference_steps=2, output_size=128, device="cpu"))


@pytest.fixture(scope="module")
def judge_backend():
    return LocalVLM.load(JudgeConfig(model="tiny", max_new_tokens=6, batch_size=4))


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


def _latents(editor, images, texts, seeds):
    kwargs = {**editor.call_kwargs(images, texts, seeds), "output_type": "latent"}
    return editor.pipe(**kwargs).images


def test_editor_seeds_are_per_sample_and_batch_independent(editor, samples):
    """A sample's edit depends on its own seed only: its final latents are the same in a batch of two
    as alone, and another seed gives other latents."""
    a, b = samples[0], samples[1]
    images = [a.load_image(), b.load_image()]
    batch = _latents(editor, images, [a.instruction, b.instruction], [0, 5])
    alone_a = _latents(editor, images[:1], [a.instruction], [0])
    alone_b = _latents(editor, images[1:], [b.instruction], [5])
    torch.testing.assert_close(batch, torch.cat([alone_a, alone_b]), atol=1e-4, rtol=1e-4)
    other_seed = _latents(editor, images[:1], [a.instruction], [1])
    assert (other_seed - alone_a).abs().mean() > 0.1
    (edited,) = editor.edit(images[:1], [a.instruction], [0])
    assert edited.size == (128, 128) and edited.mode == "RGB"


def test_editor_output_size_keeps_aspect_and_rejects_unknown_arguments(editor):
    """output_size sets the pixel area and keeps the input aspect on the latent grid; extra arguments
    the pipeline does not take are a one-line user error, not a crash mid-run."""
    width, height = editor.output_dims(400, 200)
    assert width % editor.multiple == 0 and height % editor.multiple == 0
    assert width / height == pytest.approx(2.0, rel=0.25) and abs(width * height - 128**2) <= 0.3 * 128**2
    with pytest.raises(R3DError, match="takes no argument"):
        Editor(editor.pipe, EditorConfig(model="tiny", extra={"strenght": 0.5}), editor.device)


def test_editor_loads_from_a_pipeline_folder(tmp_path, editor, samples):
    """A diffusers folder laid out like Qwen/Qwen-Image-Edit loads through from_pretrained (with r3d's
    torchvision-free processor) and edits exactly like the in-memory tiny pipeline."""
    folder = save_tiny_editor(tmp_path / "tiny-edit")
    loaded = Editor.load(
        EditorConfig(model=str(folder), num_inference_steps=2, output_size=128, device="cpu")
    )
    assert type(loaded.pipe).__name__ == "QwenImageEditPipeline"
    image, text = samples[2].load_image(), samples[2].instruction
    assert np.array_equal(
        _pixels(loaded.edit([image], [text], [0])[0]), _pixels(editor.edit([image], [text], [0])[0])
    )


def test_judge_left_padded_batches_match_single_queries(judge_backend, samples):
    """Batching pads on the left, so every query gets the same answer and the same expected score as
    alone; vision special tokens are never generated."""
    img = samples[0].load_image()
    queries = [
        Query("Rate it.", [img]),
        Query("A much longer question about this edit, please rate it " * 3, [img, img]),
    ]
    batched = judge_backend.generate(queries)
    single = [judge_backend.generate([q])[0] for q in queries]
    assert [a.text for a in batched] == [a.text for a in single]
    exp_batched = judge_backend.expected(queries)
    exp_single = [judge_backend.expected([q])[0] for q in queries]
    for x, y in zip(exp_batched, exp_single, strict=True):
        assert x.score == pytest.approx(y.score, abs=2e-4) and 0.0 <= x.score <= 10.0
    inputs = judge_backend.encode(queries)
    assert (inputs["attention_mask"][:, -1] == 1).all() and (inputs["attention_mask"][0, 0] == 0)
    out = judge_backend.model.generate(
        **inputs, max_new_tokens=6, do_sample=False, suppress_tokens=judge_backend.suppress
    )
    assert not set(out[:, inputs["input_ids"].shape[1] :].flatten().tolist()) & set(
        vision_token_ids(judge_backend.tokenizer)
    )


def test_expected_score_handles_ten_as_two_tokens(judge_backend, samples, monkeypatch):
    """E[score] over digit tokens: P("1") splits into 10 and 1 by P("0" | "1") against ending the
    number; mass on non-digit tokens is renormalised away."""
    ids = judge_backend.digit_ids
    vocab = len(judge_backend.tokenizer)

    def dist(weights):
        p = torch.zeros(1, vocab)
        for token, w in weights.items():
            p[0, token] = w
        return p

    cases = [
        # first-token weights, after-"1" weights, expected score
        ({ids[1]: 1.0}, {ids[0]: 1.0}, 10.0),
        ({ids[1]: 1.0}, {0: 1.0}, 1.0),  # token 0 is a byte symbol, not a digit: the number ends
        ({ids[1]: 0.5, ids[7]: 0.5}, {ids[0]: 0.25, 0: 0.75}, 0.5 * (0.25 * 10 + 0.75 * 1) + 0.5 * 7),
        ({ids[4]: 0.2, 0: 0.8}, {}, 4.0),
        (
            {ids[1]: 0.6, ids[3]: 0.4},
            {ids[0]: 0.3, ids[5]: 0.5, 0: 0.2},
            0.6 * (0.6 * 10 + 0.4 * 1) + 0.4 * 3,
        ),
    ]
    img = samples[0].load_image()
    for first, after_one, expected in cases:
        calls = iter([dist(first), dist(after_one)])
        monkeypatch.setattr(judge_backend, "_next_token_probs", lambda inputs, c=calls: next(c))
        result = judge_backend.expected([Query("Score?", [img])])[0]
        assert result.score == pytest.approx(expected, abs=1e-4)
        assert result.digit_mass == pytest.approx(sum(w for t, w in first.items() if t in ids))


def test_random_judge_text_is_a_failure_never_a_score(judge_backend, samples):
    """In generate mode a random model's gibberish is stored as null with both raw answers (plain
    and stricter retry) and the reason."""
    judge = Judge(JudgeConfig(model="tiny", score_mode="generate", protocol="single"), judge_backend)
    item = JudgeItem(samples[0], samples[0].load_image(), samples[0].load_image())
    (verdict,) = judge.score([item])
    question = verdict.questions[0]
    assert verdict.overall is None and question["score"] is None
    assert len(question["raw"]) == 2 and all(isinstance(t, str) for t in question["raw"])
    assert "unparseable answer" in verdict.error


def test_local_judge_loads_from_a_model_folder(tmp_path, judge_backend, samples):
    """A saved transformers folder loads through AutoModelForImageTextToText / AutoTokenizer /
    AutoImageProcessor (PIL backend) and answers exactly like the in-memory tiny judge."""
    folder = save_tiny_judge(tmp_path / "tiny-judge")
    loaded = LocalVLM.load(JudgeConfig(model=str(folder), device="cpu", max_new_tokens=6))
    assert type(loaded.model).__name__ == "Qwen3VLForConditionalGeneration"
    query = [Query("Rate the edit.", [samples[1].load_image()])]
    assert loaded.generate(query)[0].text == judge_backend.generate(query)[0].text
    assert loaded.expected(query)[0] == judge_backend.expected(query)[0]


def test_viescore_combination():
    """SC = min of the two consistency scores, PQ = min of the two quality scores, overall = √(SC·PQ);
    any missing sub-score leaves overall null."""
    scores = {"edit_success": 8.0, "over_editing": 6.0, "naturalness": 9.0, "artifacts": 4.0}
    assert combine("viescore", scores) == {"SC": 6.0, "PQ": 4.0, "overall": math.sqrt(24.0)}
    assert combine("viescore", {**scores, "artifacts": None}) == {"SC": 6.0, "PQ": None, "overall": None}
    assert combine("single", {"score": 7.0}) == {"overall": 7.0}


def test_vl_inputs_repeat_image_tokens_per_merged_patch(judge_backend):
    """Each image placeholder becomes grid_t·grid_h·grid_w / merge² image tokens, flagged in
    mm_token_type_ids, and nothing else is flagged."""
    batch = judge_backend.inputs(
        ["<|image_pad|> a", "b <|image_pad|><|image_pad|>"], images=[Image.new("RGB", (64, 64))] * 3
    )
    per_image = int(batch["image_grid_thw"][0].prod()) // 4
    assert batch["mm_token_type_ids"].sum(dim=1).tolist() == [per_image, 2 * per_image]
    image_id = judge_backend.inputs.image_token_id
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == image_id)
