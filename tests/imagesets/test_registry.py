from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import DataError
from imagesets import (
    ImageSplit,
    available_splits,
    dataset_kinds,
    open_split,
    parse_spec,
    register_dataset,
    registry,
    resolve_params,
)


def test_builtin_kinds_are_registered():
    assert {"shapes", "digits", "imagenet", "ade20k"} <= set(dataset_kinds())


def test_parse_spec_types_values_and_keeps_only_given_keys():
    assert parse_spec("shapes") == ("shapes", {})
    assert parse_spec("shapes:n=2000:seed=3:size=96") == ("shapes", {"n": 2000, "seed": 3, "size": 96})
    assert parse_spec(" digits:size=16 ") == ("digits", {"size": 16})
    assert parse_spec("imagenet:root=/data/imagenet") == ("imagenet", {"root": "/data/imagenet"})


def test_root_paths_may_contain_colons():
    assert parse_spec("ade20k:root=/mnt/a:b/ADEChallengeData2016") == ("ade20k", {"root": "/mnt/a:b/ADEChallengeData2016"})


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "valid kinds"),
        ("cifar", "valid kinds: .*digits.*imagenet.*shapes"),
        ("shapes:colour=red", "valid keys: n "),
        ("shapes:n=abc", "not a valid int"),
        ("shapes:n=0", "too small"),
        ("shapes:size=8", "too small"),
        ("shapes:n=10:n=20", "given twice"),
        ("shapes:n", "not key=value"),
        ("imagenet:root=", "empty"),
    ],
)
def test_bad_specs_say_what_is_valid(spec: str, fragment: str):
    with pytest.raises(ValueError, match=fragment):
        parse_spec(spec)


def test_missing_required_key_shows_how_to_write_it():
    with pytest.raises(ValueError, match=r"missing required key\(s\) root.*imagenet:root=<str>"):
        open_split("imagenet", "train")


def test_defaults_are_filled():
    assert resolve_params("shapes", {"n": 40}) == {"n": 40, "n_val": None, "n_test": None, "seed": 0, "size": 224}


def test_unknown_split_lists_valid_splits():
    with pytest.raises(ValueError, match="valid splits: train, val, test"):
        open_split("shapes:n=10", "validation")


def test_available_splits(tmp_path: Path):
    assert available_splits("shapes") == ["train", "val", "test"]
    assert available_splits("digits") == ["train", "val", "test"]
    (tmp_path / "train").mkdir()
    assert available_splits(f"imagenet:root={tmp_path}") == ["train"]
    with pytest.raises(DataError, match="expected layout"):
        available_splits(f"imagenet:root={tmp_path / 'missing'}")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):

        @register_dataset("shapes")
        class Again(ImageSplit):
            PARAMS: dict = {}
            SPLITS = ("train",)


def test_registered_kind_opens_through_specs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(registry.KINDS, "_items", dict(registry.KINDS._items))  # keep the global registry clean

    @register_dataset("tiny")
    class Tiny(ImageSplit):
        PARAMS = {"k": registry.Param(int, 2, min=1)}
        SPLITS = ("train",)

        def __init__(self, spec: str, split: str, k: int) -> None:
            self.spec, self.split, self.name, self.k = spec, split, "tiny", k

    split = open_split("tiny:k=5", "train")
    assert isinstance(split, Tiny) and split.k == 5
    assert "tiny" in dataset_kinds()
