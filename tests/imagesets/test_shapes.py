from __future__ import annotations

import pickle
import re
import time

import numpy as np
import pytest

from imagesets import VQA_KINDS, open_split
from imagesets.shapes import COLOURS, SHAPE_NAMES

SPEC = "shapes:n=40:size=96"
CHECKED = range(40)


@pytest.fixture(scope="module")
def train():
    return open_split(SPEC, "train")


def _pixels(split, index: int) -> np.ndarray:
    return np.asarray(split.load_image(index))


def test_same_spec_same_pixels_and_fingerprint(train):
    again = open_split(SPEC, "train")
    assert again.fingerprint == train.fingerprint
    for i in (0, 7, 39):
        assert np.array_equal(_pixels(again, i), _pixels(train, i))
        assert np.array_equal(again.seg_mask(i), train.seg_mask(i))
        assert again.vqa_items(i) == train.vqa_items(i)
    # Writing the defaults out does not change the dataset.
    assert open_split("shapes:n=40:size=96:seed=0:n_val=10", "val").fingerprint == open_split(SPEC, "val").fingerprint


def test_seed_split_and_size_change_pixels_and_fingerprint(train):
    for other in (open_split("shapes:n=40:size=96:seed=1", "train"), open_split(SPEC, "val")):
        assert other.fingerprint != train.fingerprint
        assert not np.array_equal(_pixels(other, 0), _pixels(train, 0))
    assert open_split("shapes:n=40:size=64", "train").fingerprint != train.fingerprint


def test_any_index_alone_and_prefix_stable(train):
    fresh = open_split("shapes:n=400:size=96", "train")  # longer split, first touch is index 33
    assert np.array_equal(_pixels(fresh, 33), _pixels(train, 33))
    assert fresh.labels[:40].tolist() == train.labels.tolist()
    assert fresh.fingerprint != train.fingerprint  # the length is part of the content
    assert np.array_equal(_pixels(train, -1), _pixels(train, 39))
    with pytest.raises(IndexError):
        train.load_image(40)


def test_pickles_for_dataloader_workers(train):
    train.load_image(5)
    clone = pickle.loads(pickle.dumps(train))
    assert np.array_equal(_pixels(clone, 5), _pixels(train, 5))
    assert clone.fingerprint == train.fingerprint


def test_split_sizes_and_balanced_labels():
    assert [len(open_split("shapes:n=40", s)) for s in ("train", "val", "test")] == [40, 10, 10]
    assert len(open_split("shapes:n=40:n_val=7", "val")) == 7 and len(open_split("shapes:n=3", "test")) == 1
    labels = open_split("shapes:n=100", "train").labels
    assert labels.dtype == np.int64 and np.bincount(labels, minlength=10).tolist() == [10] * 10


def test_metadata(train):
    assert train.classes == list(SHAPE_NAMES) and len(set(SHAPE_NAMES)) == 10
    assert train.seg_classes == ["background", *SHAPE_NAMES]
    assert train.item_id(3) == "train/0000003" and len({train.item_id(i) for i in CHECKED}) == 40
    img = train.load_image(0)
    assert img.mode == "RGB" and img.size == (96, 96)


def test_mask_boxes_labels_and_pixels_agree(train):
    for i in CHECKED:
        image, mask, boxes = _pixels(train, i), train.seg_mask(i), train.boxes(i)
        objects = train.objects(i)
        assert mask.shape == (96, 96) and mask.dtype == np.uint8 and mask.max() <= 10
        assert 1 <= len(boxes) == len(objects) <= 4
        present = sorted(set(np.unique(mask)) - {0})
        assert present == sorted(b.label for b in boxes)  # one object per shape type
        areas = {b.label: int((mask == b.label).sum()) for b in boxes}
        # The image class is the largest visible object.
        assert max(areas, key=areas.get) == train.labels[i] + 1
        for box, obj in zip(boxes, objects, strict=True):
            ys, xs = np.nonzero(mask == box.label)
            assert (box.x0, box.y0, box.x1, box.y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert box.label == obj.shape + 1 and areas[box.label] == obj.visible_pixels
            # The mask marks exactly the pixels painted in this object's colour (occlusion included).
            assert (image[mask == box.label] == obj.rgb).all()
            assert np.abs(np.array(obj.rgb) - COLOURS[obj.colour]).max() <= 12


def _subject(question: str) -> str:
    return next(name for name in SHAPE_NAMES if re.search(rf"\b{name}\b", question))


def test_vqa_answers_match_the_mask(train):
    seen = set()
    for i in CHECKED:
        mask, boxes, image = train.seg_mask(i), train.boxes(i), _pixels(train, i)
        by_name = {SHAPE_NAMES[b.label - 1]: b for b in boxes}
        items = train.vqa_items(i)
        assert len(items) >= 4
        for item in items:
            seen.add(item.kind)
            assert item.kind in VQA_KINDS and item.chosen != item.rejected and item.question.endswith("?")
            if item.question == "How many shapes are there?":
                assert int(item.chosen) == len(boxes) and item.box is None
            elif item.kind == "count":
                colour = item.question.split()[2]
                assert int(item.chosen) == sum(o.colour == colour for o in train.objects(i))
                assert abs(int(item.rejected) - int(item.chosen)) == 1 and int(item.rejected) >= 0
            elif item.kind == "presence":
                name = _subject(item.question)
                assert item.chosen == ("yes" if name in by_name else "no") and item.rejected in ("yes", "no")
                assert item.box == by_name.get(name)
            elif item.kind == "colour":
                box = by_name[_subject(item.question)]
                assert item.box == box and item.rejected in COLOURS
                painted = image[mask == box.label].mean(axis=0)
                assert np.abs(painted - COLOURS[item.chosen]).max() <= 12
            else:
                box = by_name[_subject(item.question)]
                ys, xs = np.nonzero(mask == box.label)
                assert item.box == box
                if "left or right" in item.question:
                    assert item.chosen == ("left" if xs.mean() + 0.5 < 48 else "right")
                else:
                    assert item.chosen == ("top" if ys.mean() + 0.5 < 48 else "bottom")
    assert seen == set(VQA_KINDS)


def test_generation_is_fast():
    split = open_split("shapes:n=30", "train")  # the default 224 px
    split.load_image(0)
    start = time.process_time()
    for i in range(1, 30):
        split.load_image(i)
    per_image_ms = (time.process_time() - start) / 29 * 1000
    assert per_image_ms < 25, f"{per_image_ms:.1f} ms of CPU per 224 px image"  # ~2-3 ms measured; loose for busy CI


def test_dataloader_workers_produce_the_same_images(train):
    torch = pytest.importorskip("torch")

    class Wrapped(torch.utils.data.Dataset):
        def __init__(self, split):
            self.split = split

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.from_numpy(np.asarray(self.split.load_image(i)).copy())

    loader = torch.utils.data.DataLoader(Wrapped(train), batch_size=4, num_workers=2)
    batches = torch.cat(list(loader)).numpy()
    assert np.array_equal(batches, np.stack([_pixels(train, i) for i in range(8)]))
