"""Writers of tiny datasets in the exact layouts of COCO, MMPR-style preference JSONL and Hugging Face
parquet exports of image-caption pairs (shared by the dataset and suite tests)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import write_image

# Non-contiguous ids, as COCO's (1 person, 3 car, 18 dog).
CATEGORIES = [{"supercategory": "person", "id": 1, "name": "person"}, {"supercategory": "vehicle", "id": 3, "name": "car"},
              {"supercategory": "animal", "id": 18, "name": "dog"}]
COCO_SIZE = (32, 32)  # width, height of every fixture image
WORDS = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "star"]


def rect_polygon(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """A COCO polygon with integer corners: pycocotools rasterises it to rows y0..y1-1, cols x0..x1-1."""
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def rect_mask(x0: int, y0: int, x1: int, y1: int, size: tuple[int, int] = COCO_SIZE) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def compressed_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths, starting with a run of zeros), as crowd annotations store it."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def _annotation(ann_id: int, image_id: int, category: int, box: tuple[int, int, int, int], segmentation, *, crowd: int = 0, area: float | None = None) -> dict:
    x0, y0, x1, y1 = box
    return {"id": ann_id, "image_id": image_id, "category_id": category, "iscrowd": crowd, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": float(area if area is not None else (x1 - x0) * (y1 - y0)), "segmentation": segmentation}


def write_coco(root: Path, *, n_train: int = 24, n_val: int = 12, missing_train: int = 1, year: str = "2017", captions: bool = True) -> Path:
    """``root`` in COCO's layout: annotations/{instances,captions}_{train,val}<year>.json and
    {train,val}<year>/*.jpg, 32x32 images. Every image has a large polygon object of class i % 3 (its
    label), a small compressed-RLE object of the next class; every third image a crowd person region
    (uncompressed RLE) and every fourth an uncompressed-RLE object that is not crowd. The last
    ``missing_train`` train images are named in the annotations but not written. Val image 0 is the
    hand-checked one: a dog polygon at x 4..20, y 4..16, a car RLE at x 22..30, y 20..28, a crowd
    person region at x 24..32, y 0..4."""
    notes = root / "annotations"
    notes.mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for split, n in (("train", n_train), ("val", n_val)):
        images, annotations, caption_rows = [], [], []
        for i in range(n):
            image_id = (1000 if split == "val" else 0) + i * 7 + 3  # ids not in file order of names
            name = f"{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": name, "width": COCO_SIZE[0], "height": COCO_SIZE[1]})
            if not (split == "train" and i >= n - missing_train):
                write_image(root / f"{split}{year}" / name, size=COCO_SIZE, seed=(0 if split == "train" else 500) + i, fmt="JPEG")
            main = CATEGORIES[i % 3]["id"] if not (split == "val" and i == 0) else 18
            other = CATEGORIES[(i + 1) % 3]["id"] if not (split == "val" and i == 0) else 3
            big = (4, 4, 20, 16) if split == "val" and i == 0 else (2 + i % 3, 3, 22 + i % 5, 17 + i % 4)
            small = (22, 20, 30, 28)
            annotations.append(_annotation(ann_id, image_id, main, big, [rect_polygon(*big)]))
            annotations.append(_annotation(ann_id + 1, image_id, other, small, compressed_rle(rect_mask(*small))))
            ann_id += 2
            if i % 3 == 0:
                crowd = (24, 0, 32, 4)
                annotations.append(_annotation(ann_id, image_id, 1, crowd, uncompressed_rle(rect_mask(*crowd)), crowd=1, area=1000.0))
                ann_id += 1
            if i % 4 == 1:
                extra = (0, 24, 6, 30)
                annotations.append(_annotation(ann_id, image_id, 1, extra, uncompressed_rle(rect_mask(*extra))))
                ann_id += 1
            for k in range(2):
                caption = f"a {WORDS[(i + k) % 4]} {WORDS[4 + i % 4]} number {i}" if not (k == 0 and i == 2) else "   "
                caption_rows.append({"id": 50000 + len(caption_rows), "image_id": image_id, "caption": caption})
        instances = {"info": {"year": int(year)}, "licenses": [], "images": images, "annotations": annotations, "categories": CATEGORIES}
        (notes / f"instances_{split}{year}.json").write_text(json.dumps(instances))
        if captions:
            (notes / f"captions_{split}{year}.json").write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": caption_rows}))
    return root


def write_prefs(folder: Path, *, n: int = 12, regions: bool = True, name: str = "prefs.jsonl") -> Path:
    """MMPR-style preference JSONL: ``image`` relative to the file, ``question``, ``chosen``, ``rejected``
    (48x40 images). With ``regions``, every third item has a ``box`` and every third (offset 1) a ``mask``
    PNG; the rest have no region."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        image = f"images/{i:04d}.png"
        write_image(folder / image, size=(48, 40), seed=500 + i)
        record = {"image": image, "question": f"What colour is the {WORDS[4 + i % 4]}?", "chosen": WORDS[i % 4], "rejected": WORDS[(i + 1) % 4]}
        if regions and i % 3 == 0:
            record["box"] = [4, 6, 30, 28]
        if regions and i % 3 == 1:
            mask = np.zeros((40, 48), np.uint8)
            mask[10:30, 20:44] = 255
            (folder / "masks").mkdir(exist_ok=True)
            Image.fromarray(mask, "L").save(folder / "masks" / f"{i:04d}.png")
            record["mask"] = f"masks/{i:04d}.png"
        lines.append(json.dumps(record))
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def png_bytes(size: tuple[int, int], seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_pairs_parquet(path: Path, *, n: int = 16, captions: list[str] | None = None, image_column: str = "image", row_group_size: int = 5) -> Path:
    """Image-caption pairs as Hugging Face's parquet exports store them: ``image`` a struct
    ``{bytes, path}`` with the PNG bytes embedded, ``caption`` a string; small row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    captions = captions if captions is not None else [f"a {WORDS[i % 4]} {WORDS[4 + (i // 4) % 4]} with a {WORDS[(i + 2) % 4]} star" for i in range(n)]
    images = pa.array([{"bytes": png_bytes((40, 36), 900 + i), "path": f"wit_{i:05d}.png"} for i in range(n)],
                      type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({image_column: images, "caption": captions})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path
