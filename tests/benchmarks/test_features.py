"""The feature store: computed once, resumable after a kill, safe under concurrent runs."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from benchmarks.features import ExtractionConfig, FeatureError, extract_features
from encoders import load_encoder
from tests.benchmarks.conftest import ListSplit, write_tiny_checkpoint

CONFIG = ExtractionConfig(batch_size=4, shard_size=8, progress=False)


def test_cached_entry_is_reused(tmp_path, tiny_encoder, monkeypatch):
    first = extract_features(tiny_encoder, ListSplit(20), tmp_path, layers=[0], config=CONFIG)
    assert set(first.arrays) == {"cls", "mean", "L0.cls", "L0.mean"}
    assert first.arrays["cls"].dtype == np.float16 and isinstance(first.arrays["cls"], np.memmap | np.ndarray)
    monkeypatch.setattr("benchmarks.features.extract._extract_shards", lambda *a, **k: pytest.fail("recomputed a finished entry"))
    again = extract_features(tiny_encoder, ListSplit(20), tmp_path, layers=[0], config=CONFIG)
    np.testing.assert_array_equal(np.asarray(first.arrays["mean"]), np.asarray(again.arrays["mean"]))
    assert first.key == again.key


def test_key_changes_with_weights_layers_and_precision(tmp_path, tiny_encoder):
    other = load_encoder(write_tiny_checkpoint(tmp_path / "other.safetensors", seed=1))
    keys = {
        extract_features(tiny_encoder, ListSplit(8), tmp_path, config=CONFIG).key,
        extract_features(other, ListSplit(8), tmp_path, config=CONFIG).key,
        extract_features(tiny_encoder, ListSplit(8), tmp_path, layers=[0], config=CONFIG).key,
        extract_features(tiny_encoder, ListSplit(8), tmp_path, config=ExtractionConfig(batch_size=4, shard_size=8, progress=False, precision="bf16")).key,
    }
    assert len(keys) == 4


def test_killed_run_resumes_to_identical_features(tmp_path, tiny_encoder, monkeypatch):
    reference = extract_features(tiny_encoder, ListSplit(30), tmp_path / "ref", config=CONFIG)
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny_encoder, ListSplit(30, explode_at=19), tmp_path / "cache", config=CONFIG)
    entry = next((tmp_path / "cache").iterdir())
    assert sorted(p.name for p in entry.glob("*.valid.npy")) == ["shard-00000.valid.npy", "shard-00001.valid.npy"]
    assert not (entry / "done.json").exists() and not list(entry.glob("*.tmp*"))
    extracted = []
    original = __import__("benchmarks.features.extract", fromlist=["_extract_shards"])._extract_shards

    def spy(encoder, split, entry, shards, todo, *rest):
        extracted.append(list(todo))
        return original(encoder, split, entry, shards, todo, *rest)

    monkeypatch.setattr("benchmarks.features.extract._extract_shards", spy)
    resumed = extract_features(tiny_encoder, ListSplit(30), tmp_path / "cache", config=CONFIG)
    assert extracted == [[2, 3]], "only the shards the killed run did not finish are extracted"
    for name in reference.arrays:
        np.testing.assert_array_equal(np.asarray(reference.arrays[name]), np.asarray(resumed.arrays[name]))


def test_unreadable_images_are_counted_or_fatal(tmp_path, tiny_encoder):
    features = extract_features(tiny_encoder, ListSplit(40, bad={3}), tmp_path, config=CONFIG)
    assert features.bad_count == 1 and len(features.tensor("cls")) == 39 and len(features.valid_labels()) == 39
    with pytest.raises(FeatureError, match="could not be read"):
        extract_features(tiny_encoder, ListSplit(40, bad={1, 2, 5, 7, 9}), tmp_path / "b", config=CONFIG)


def test_empty_split(tmp_path, tiny_encoder):
    with pytest.raises(FeatureError, match="empty"):
        extract_features(tiny_encoder, ListSplit(0), tmp_path, config=CONFIG)


def test_non_finite_features_name_encoder_and_layer(tmp_path):
    encoder = load_encoder(write_tiny_checkpoint(tmp_path / "nan.safetensors", nan=True))
    with pytest.raises(FeatureError, match="NaN/Inf") as err:
        extract_features(encoder, ListSplit(8), tmp_path / "c", config=CONFIG)
    assert encoder.name in str(err.value) and "layer" in str(err.value)


def _extract_in_process(checkpoint, cache, queue):
    encoder = load_encoder(checkpoint)
    features = extract_features(encoder, ListSplit(32), cache, config=CONFIG)
    queue.put(np.asarray(features.arrays["mean"]).tolist())


def test_two_runs_share_one_cache(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "t.safetensors")
    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_extract_in_process, args=(str(checkpoint), str(tmp_path / "cache"), queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert results[0] == results[1]
    entry = next(p for p in (tmp_path / "cache").iterdir())
    assert (entry / "done.json").exists() and not list(entry.glob("*.tmp*"))


def test_uint8_inputs_normalised_on_device_give_the_features_of_the_float_transform(tmp_path, tiny_encoder):
    import torch

    from benchmarks.features import store_key
    from benchmarks.features.forward import feature_dict
    from benchmarks.features.pipeline import normalize_on_device, uint8_transform

    split = ListSplit(10, bad={4})
    config = ExtractionConfig(batch_size=4, shard_size=8, progress=False, max_bad_fraction=0.5)
    features = extract_features(tiny_encoder, split, tmp_path, layers=[0], config=config)
    # Today's inputs: the float transform (ToTensor + Normalize) in the workers.
    transform = tiny_encoder.preprocess.transform()
    rows = [i for i in range(10) if i != 4]
    images = torch.stack([transform(split.load_image(i)) for i in rows])
    with torch.inference_mode():
        reference = feature_dict(tiny_encoder, images, [0])
    for name, value in reference.items():
        np.testing.assert_array_equal(np.asarray(features.arrays[name])[rows], value.numpy().astype(np.float16))
    # The pixels themselves are bit-identical: uint8 / 255, - mean, / std == ToTensor + Normalize.
    image = split.load_image(0)
    pixels = uint8_transform(tiny_encoder.preprocess)(image)
    assert pixels.dtype == torch.uint8
    ours = normalize_on_device(pixels[None], torch.tensor([True]), tiny_encoder.preprocess.mean, tiny_encoder.preprocess.std, "cpu")
    assert torch.equal(ours[0], transform(image))
    # The store key does not name the input pipeline (entries written before stay valid).
    _, meta = store_key(tiny_encoder, split, [0], "fp32")
    assert set(meta) == {"version", "weights_hash", "dataset_fingerprint", "split", "transform", "layers", "precision"}


def _smooth_imagenet(root, n_per_class: int = 3):
    from PIL import Image

    for c, wnid in enumerate(["n01", "n02"]):
        for k in range(n_per_class):
            yy, xx = np.mgrid[0:45, 0:60]
            pixels = np.stack([xx * 4 + 20 * k, yy * 5 + 40 * c, (xx + yy) * 2], axis=-1).clip(0, 255).astype(np.uint8)
            for split in ("train", "val"):
                folder = root / split / wnid
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{wnid}_{k}.{'png' if k == 2 else 'JPEG'}", quality=95)
    return root


def test_decode_on_device_reads_files_close_to_pil_and_has_its_own_key(tmp_path, tiny_encoder):
    import torch

    from benchmarks.features import decode_resize_crop
    from benchmarks.features.pipeline import uint8_transform
    from imagesets import open_split

    root = _smooth_imagenet(tmp_path / "imagenet")
    (root / "train" / "n01" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    split = open_split(f"imagenet:root={root}", "train")
    pil = extract_features(tiny_encoder, split, tmp_path / "cache", config=ExtractionConfig(batch_size=4, shard_size=8, progress=False, max_bad_fraction=0.5))
    device = extract_features(tiny_encoder, split, tmp_path / "cache", config=ExtractionConfig(batch_size=4, shard_size=8, progress=False, max_bad_fraction=0.5, decode="gpu"))
    assert pil.key != device.key and device.meta["decode"] == "gpu" and "decode" not in pil.meta
    assert device.valid.tolist() == pil.valid.tolist() and device.bad_count == 1
    # Same decoded pixels up to the resize kernels' rounding (JPEG and PNG alike).
    files = [np.fromfile(split.path(i), dtype=np.uint8) for i in range(len(split)) if pil.valid[i]]
    ours, readable = decode_resize_crop(files, tiny_encoder.preprocess, "cpu")
    theirs = torch.stack([uint8_transform(tiny_encoder.preprocess)(split.load_image(i)) for i in range(len(split)) if pil.valid[i]])
    assert readable.all() and ours.shape == theirs.shape and ours.dtype == torch.uint8
    assert (ours.float() - theirs.float()).abs().mean() < 2.0
    np.testing.assert_allclose(np.asarray(device.arrays["mean"])[pil.valid], np.asarray(pil.arrays["mean"])[pil.valid], atol=0.1)
    with pytest.raises(ValueError, match="--decode gpu"):
        extract_features(tiny_encoder, ListSplit(4), tmp_path / "cache", config=ExtractionConfig(decode="gpu", progress=False))
