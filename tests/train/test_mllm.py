import json
import math
import shutil

import pytest
import torch

from encoders import load_encoder
from train.losses import dpo_loss
from train.mllm import IGNORE, MLLMError, load_mllm, save_mllm

QUESTIONS = ["What colour is the circle?", "How many shapes are there?", "Is there a star in the image?"]
ANSWERS = ["red", "3", "yes"]


def _images(mllm, n=3, seed=0):
    size = mllm.encoder.preprocess.resolution
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_only_answer_tokens_carry_labels(tiny_mllm_dir):
    mllm = load_mllm(tiny_mllm_dir)
    batch = mllm.prepare(_images(mllm), QUESTIONS, ANSWERS)
    for row, answer in enumerate(ANSWERS):
        labelled = batch.labels[row][batch.labels[row] != IGNORE].tolist()
        assert labelled == mllm.answer_ids(answer)  # the answer's tokens and the end-of-turn token, nothing else
        assert mllm.tokenizer.decode(labelled, skip_special_tokens=True).strip() == answer
    assert int((batch.input_ids == mllm.image_token_id).sum()) == 3 * mllm.num_visual_tokens
    assert mllm.grid == (4, 4)


def test_changing_the_prompt_does_not_change_what_is_scored_but_changes_the_score(tiny_mllm_dir):
    mllm = load_mllm(tiny_mllm_dir)
    images = _images(mllm)
    logp, n_tokens = mllm.answer_logprobs(mllm.prepare(images, QUESTIONS, ANSWERS))
    assert n_tokens.tolist() == [len(mllm.answer_ids(a)) for a in ANSWERS]
    assert (logp < 0).all()
    # the visual tokens matter: other images give other log-probs
    other, _ = mllm.answer_logprobs(mllm.prepare(_images(mllm, seed=1), QUESTIONS, ANSWERS))
    assert not torch.allclose(logp, other)


def test_batched_equals_one_by_one_and_generation_too(tiny_mllm_dir):
    mllm = load_mllm(tiny_mllm_dir)
    images = _images(mllm)
    with torch.no_grad():
        batched, _ = mllm.answer_logprobs(mllm.prepare(images, QUESTIONS, ANSWERS))
        single = torch.cat([mllm.answer_logprobs(mllm.prepare(images[i:i + 1], [QUESTIONS[i]], [ANSWERS[i]]))[0] for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)
    generated = mllm.generate(images, QUESTIONS, max_new_tokens=3)
    assert generated == [mllm.generate(images[i:i + 1], [QUESTIONS[i]], max_new_tokens=3)[0] for i in range(3)]


def test_dpo_loss_of_the_model_against_itself_is_log2(tiny_mllm_dir):
    mllm = load_mllm(tiny_mllm_dir)
    images = _images(mllm)
    with torch.no_grad():
        chosen, _ = mllm.answer_logprobs(mllm.prepare(images, QUESTIONS, ANSWERS))
        rejected, _ = mllm.answer_logprobs(mllm.prepare(images, QUESTIONS, ["blue", "2", "no"]))
    loss, _ = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone())
    assert torch.allclose(loss, torch.full_like(loss, math.log(2.0)))


def test_saved_mllm_reproduces_log_probs_and_its_encoder_loads_through_encoders(tiny_mllm_dir, tmp_path):
    mllm = load_mllm(tiny_mllm_dir)
    with torch.no_grad():
        mllm.projector.fc2.bias.add_(0.5)  # a change that must survive the round trip
    images = _images(mllm)
    copy = load_mllm(save_mllm(mllm, tmp_path / "saved"))
    with torch.no_grad():
        before, _ = mllm.answer_logprobs(mllm.prepare(images, QUESTIONS, ANSWERS))
        after, _ = copy.answer_logprobs(copy.prepare(images, QUESTIONS, ANSWERS))
        encoder = load_encoder(tmp_path / "saved" / "encoder.safetensors")  # no --arch needed
        assert torch.equal(encoder.features(images).pooled, mllm.encoder.features(images).pooled)
    assert torch.allclose(before, after)
    assert encoder.weights_hash == mllm.encoder.weights_hash


def test_bad_mllm_directories_name_the_file_and_the_fix(tiny_mllm_dir, tmp_path):
    with pytest.raises(MLLMError, match="no mllm.json"):
        load_mllm(tmp_path)
    broken = tmp_path / "no_lm"
    shutil.copytree(tiny_mllm_dir, broken)
    shutil.rmtree(broken / "lm")
    with pytest.raises(MLLMError, match="lm: missing"):
        load_mllm(broken)
    no_tokenizer = tmp_path / "no_tok"
    shutil.copytree(tiny_mllm_dir, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / "lm" / name).unlink()
    with pytest.raises(MLLMError, match="no tokenizer"):
        load_mllm(no_tokenizer)
    wrong = tmp_path / "wrong_projector"
    shutil.copytree(tiny_mllm_dir, wrong)
    meta = json.loads((wrong / "mllm.json").read_text())
    meta["projector"]["hidden"] += 1
    (wrong / "mllm.json").write_text(json.dumps(meta))
    with pytest.raises(MLLMError, match="projector"):
        load_mllm(wrong)


def test_an_encoder_of_another_architecture_is_refused(tiny_mllm_dir, tmp_path):
    from tests.train.conftest import write_tiny_encoder

    other = tmp_path / "other"
    shutil.copytree(tiny_mllm_dir, other)
    write_tiny_encoder(other / "encoder.safetensors", options={"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 3, "num_heads": 2})
    with pytest.raises(MLLMError, match="width 48 differs from the projector's input 32"):
        load_mllm(other)


def test_question_image_layout_puts_the_visual_tokens_after_the_question_and_survives_saving(tiny_mllm_dir, tmp_path):
    before = load_mllm(tiny_mllm_dir)
    assert before.prompt_layout == "image-question"
    after = load_mllm(tiny_mllm_dir)
    after.prompt_layout = "question-image"
    question_ids = after.tokenizer(QUESTIONS[0], add_special_tokens=False)["input_ids"]

    def positions(mllm):
        ids = mllm.prompt_ids(QUESTIONS[0])
        image = [i for i, token in enumerate(ids) if token == mllm.image_token_id]
        start = next(i for i in range(len(ids)) if ids[i:i + len(question_ids)] == question_ids)
        return image, start

    (image_first, question_at), (image_last, question_after) = positions(before), positions(after)
    assert len(image_first) == len(image_last) == before.num_visual_tokens
    assert image_first[-1] < question_at and question_after + len(question_ids) <= image_last[0]
    assert sorted(before.prompt_ids(QUESTIONS[0])) == sorted(after.prompt_ids(QUESTIONS[0]))  # same tokens, another order
    copy = load_mllm(save_mllm(after, tmp_path / "saved"))
    assert copy.prompt_layout == "question-image" and copy.prompt_ids(QUESTIONS[0]) == after.prompt_ids(QUESTIONS[0])
    meta = json.loads((tmp_path / "saved" / "mllm.json").read_text())
    meta["prompt_layout"] = "image-last"
    (tmp_path / "saved" / "mllm.json").write_text(json.dumps(meta))
    with pytest.raises(MLLMError, match="prompt_layout 'image-last' is not one of image-question, question-image; fix mllm.json"):
        load_mllm(tmp_path / "saved")
    del meta["prompt_layout"]  # written before the field existed: LLaVA's layout
    (tmp_path / "saved" / "mllm.json").write_text(json.dumps(meta))
    assert load_mllm(tmp_path / "saved").prompt_layout == "image-question"
