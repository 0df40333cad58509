"""Every family, format and key layout round-trips through the public loader with identical outputs."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from encoders import CheckpointError, load_encoder, save_encoder_checkpoint, weights_hash
from tests.encoders.conftest import OPEN_CLIP, TIMM_CONV, TIMM_VIT, hf_vision_model, open_clip_model, timm_model


def _same(a, b) -> None:
    assert a.grid == b.grid
    torch.testing.assert_close(a.pooled, b.pooled)
    torch.testing.assert_close(a.patch_tokens, b.patch_tokens)
    torch.testing.assert_close(a.prefix_tokens, b.prefix_tokens)


def _save(state: dict, path) -> None:
    if str(path).endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".safetensors"])
@pytest.mark.parametrize("layout", ["plain", "ddp", "compile", "ddp+compile", "llava", "llava-short"])
def test_timm_vit_formats_and_layouts(tmp_path, images, suffix, layout):
    arch, options = TIMM_VIT
    model = timm_model(arch, options)
    state = model.state_dict()
    if layout in ("ddp", "ddp+compile"):
        state = {f"module.{k}": v for k, v in state.items()}
    if layout in ("compile", "ddp+compile"):
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    if layout == "llava":
        state = {f"model.vision_tower.vision_tower.{k}": v for k, v in state.items()}
        state.update({"model.mm_projector.0.weight": torch.zeros(4, 32), "model.layers.0.mlp.weight": torch.zeros(4, 4), "lm_head.weight": torch.zeros(8, 4)})
    if layout == "llava-short":
        state = {f"model.vision_tower.{k}": v for k, v in state.items()}
        state["model.embed_tokens.weight"] = torch.zeros(8, 4)
    path = tmp_path / f"ckpt{suffix}"
    _save(state, path)
    encoder = load_encoder(path, arch=arch, options=options)
    with torch.no_grad():
        _same(encoder.features(images), model_features(model, images))
    assert encoder.weights_hash == weights_hash(model.state_dict())
    if layout == "llava":
        assert encoder.remap.dropped == {"projector": 1, "llm": 2}
        assert "mllm" in encoder.remap.layouts
    if layout.startswith("ddp"):
        assert "module." in encoder.remap.stripped_prefixes


def model_features(model, images):
    from encoders.families.timm_family import TimmFamily

    return TimmFamily().adapter(model)(model, images, [])


def test_timm_classifier_head_dropped_and_reported(tmp_path, images):
    from tests.encoders.conftest import TIMM_CLS_VIT

    arch, options = TIMM_CLS_VIT
    model = timm_model(arch, options, num_classes=10)
    torch.save(model.state_dict(), tmp_path / "cls.pt")
    encoder = load_encoder(tmp_path / "cls.pt", arch=arch, options=options)
    assert encoder.remap.dropped == {"classifier_head": 2}
    with torch.no_grad():
        torch.testing.assert_close(encoder.features(images).pooled, model.forward_head(model.forward_features(images), pre_logits=True))


def test_timm_convnet_tokens_and_layers(tmp_path, images):
    arch, options = TIMM_CONV
    model = timm_model(arch, options)
    torch.save(model.state_dict(), tmp_path / "conv.pt")
    encoder = load_encoder(tmp_path / "conv.pt", arch=arch)
    with torch.no_grad():
        out = encoder.features(images, layers="all")
        torch.testing.assert_close(out.pooled, model(images))
    assert out.prefix_tokens.shape[1] == 0
    assert out.patch_tokens.shape[1] == out.grid[0] * out.grid[1]
    assert sorted(out.layers) == list(range(encoder.num_layers))


def test_project_checkpoint_needs_no_arch(tmp_path, images):
    arch, options = TIMM_VIT
    model = timm_model(arch, options)
    hashes = set()
    for suffix in (".pt", ".safetensors"):
        path = save_encoder_checkpoint(model.state_dict(), {"family": "timm", "arch": arch, "options": options}, tmp_path / f"enc{suffix}")
        encoder = load_encoder(path)
        assert (encoder.arch, encoder.checkpoint_format) == (arch, "project")
        with torch.no_grad():
            _same(encoder.features(images), model_features(model, images))
        hashes.add(encoder.weights_hash)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    hashes.add(load_encoder(tmp_path / "plain.pt", arch=arch, options=options).weights_hash)
    assert len(hashes) == 1, "the same weights must hash the same in every format"


def test_hash_changes_with_one_weight(tmp_path):
    arch, options = TIMM_VIT
    state = timm_model(arch, options).state_dict()
    before = weights_hash(state)
    state["blocks.0.attn.qkv.bias"][0] += 1e-3
    assert weights_hash(state) != before


def test_project_checkpoint_arch_conflict(tmp_path):
    arch, options = TIMM_VIT
    path = save_encoder_checkpoint(timm_model(arch, options).state_dict(), {"family": "timm", "arch": arch, "options": options}, tmp_path / "enc.pt")
    with pytest.raises(CheckpointError, match="embeds"):
        load_encoder(path, arch="vit_small_patch16_224")


@pytest.mark.parametrize("kind", ["siglip", "siglip2", "clip"])
@pytest.mark.parametrize("sharded", [False, True])
def test_hf_directories(tmp_path, images, kind, sharded):
    model = hf_vision_model(kind)
    model.save_pretrained(tmp_path / "hf", max_shard_size="20KB" if sharded else "5GB")
    if sharded:
        assert list((tmp_path / "hf").glob("*.index.json")), "expected a sharded save"
    encoder = load_encoder(tmp_path / "hf")
    assert encoder.family == "hf" and encoder.checkpoint_format == ("hf-dir-sharded" if sharded else "hf-dir")
    assert encoder.num_prefix_tokens == (1 if kind == "clip" else 0)
    from encoders.families.hf_family import _features

    with torch.no_grad():
        out = encoder.features(images, layers=[0, 1])
        _same(out, _features(model, images, []))
    assert out.patch_tokens.shape == (2, 4, 32) and out.grid == (2, 2)
    assert encoder.weights_hash == weights_hash(model.state_dict())


def test_hf_full_siglip_checkpoint_drops_text_tower(tmp_path, images):
    import transformers

    torch.manual_seed(0)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 16, "image_size": 32}
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 50, "max_position_embeddings": 8}
    full = transformers.SiglipModel(transformers.SiglipConfig(vision_config=vision, text_config=text)).eval()
    full.save_pretrained(tmp_path / "full")
    encoder = load_encoder(tmp_path / "full")
    assert encoder.remap.dropped["text_tower"] > 0
    with torch.no_grad():
        torch.testing.assert_close(encoder.features(images).pooled, full.vision_model(pixel_values=images).pooler_output)


def test_hf_llava_vision_tower(tmp_path, images):
    model = hf_vision_model("siglip")
    model.save_pretrained(tmp_path / "hf")
    state = {f"model.vision_tower.{k}": v for k, v in model.state_dict().items()}
    state["model.multi_modal_projector.linear_1.weight"] = torch.zeros(4, 32)
    torch.save(state, tmp_path / "mllm.bin")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "mllm").mkdir()
    (tmp_path / "mllm" / "config.json").write_text(json.dumps(config))
    (tmp_path / "mllm.bin").rename(tmp_path / "mllm" / "pytorch_model.bin")
    encoder = load_encoder(tmp_path / "mllm")
    assert encoder.remap.dropped == {"projector": 1}
    assert encoder.weights_hash == weights_hash(model.state_dict())


@pytest.mark.parametrize("layout", ["full", "visual-only", "ddp"])
def test_open_clip(tmp_path, images, layout):
    arch, options = OPEN_CLIP
    full = open_clip_model()
    state = full.state_dict()
    if layout == "visual-only":
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if layout == "ddp":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, tmp_path / "oc.pt")
    encoder = load_encoder(tmp_path / "oc.pt", arch=f"open_clip:{arch}", options=options)
    with torch.no_grad():
        out = encoder.features(images, layers=[0])
        torch.testing.assert_close(out.pooled, full.encode_image(images))
    assert out.prefix_tokens.shape[1] == 1 and out.grid == (2, 2)
    if layout != "visual-only":
        assert encoder.remap.dropped["text_tower"] > 0


def test_timm_converter_reads_open_clip_layout(tmp_path, images):
    """timm's own checkpoint_filter_fn maps an OpenAI-CLIP-layout state dict onto a timm ViT."""
    arch, options = OPEN_CLIP
    torch.save(open_clip_model().state_dict(), tmp_path / "oc.pt")
    as_open_clip = load_encoder(tmp_path / "oc.pt", arch=f"open_clip:{arch}", options=options)
    as_timm = load_encoder(tmp_path / "oc.pt", arch="vit_base_patch16_clip_224", options={"embed_dim": 64, "depth": 2, "num_heads": 1, "img_size": 32})
    assert as_timm.remap.converter.endswith("checkpoint_filter_fn")
    with torch.no_grad():
        torch.testing.assert_close(as_timm.features(images).patch_tokens, as_open_clip.features(images).patch_tokens, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["resnet18", "vit_b_16"])
def test_torchvision(tmp_path, images, arch):
    from torchvision import models

    torch.manual_seed(4)
    options = {"image_size": 32} if arch == "vit_b_16" else {}
    model = models.get_model(arch, weights=None, num_classes=1000, **options).eval()
    torch.save(model.state_dict(), tmp_path / "tv.pth")
    encoder = load_encoder(tmp_path / "tv.pth", arch=f"torchvision:{arch}", options=options)
    assert encoder.remap.dropped == {"classifier_head": 2}
    with torch.no_grad():
        out = encoder.features(images, layers=[-1])
        if arch == "resnet18":
            model.fc = torch.nn.Identity()
        else:
            model.heads = torch.nn.Identity()
        torch.testing.assert_close(out.pooled, model(images))
    assert out.patch_tokens.shape[1] == out.grid[0] * out.grid[1]
