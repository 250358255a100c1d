"""Split files: the published ones against biomedcoop.md §4.2/§4.3, and the split helpers."""
import json
from collections import Counter
from pathlib import Path

import pytest

from clip_biomed.data_tools.catalog import PUBLISHED_DATASETS, class_folder, published_dataset
from clip_biomed.data_tools.own_data import read_label_csv, scan_class_folders
from clip_biomed.data_tools.splits import (
    Entry, SplitFileError, parse_split, read_split_file, stratified_split, write_split_file,
)
from datasets.base import base_new_labels

SHARED_SPLITS = Path(__file__).resolve().parents[1].parent / "shared" / "splits"

# biomedcoop.md §4.2: images per label (in label order) in train / val / test.
PUBLISHED_COUNTS = {
    "BTMRI": ([660, 669, 728, 797], [264, 267, 291, 319], [397, 403, 438, 479]),
    "BUSI": ([218, 105, 66], [87, 42, 26], [132, 63, 41]),
    "CHMNIST": ([312] * 8, [125] * 8, [188] * 8),
    "COVID_19": ([1808, 3006, 672, 5096], [723, 1202, 269, 2038], [1085, 1804, 404, 3058]),
    "CTKidney": ([1854, 688, 1141, 2538], [741, 275, 456, 1015], [1114, 414, 686, 1524]),
    "DermaMNIST": ([227, 359, 769, 80, 779, 4693, 99], [33, 52, 110, 12, 111, 671, 14],
                   [66, 103, 220, 23, 223, 1341, 29]),
    "KneeXray": ([2286, 1046, 1516, 757, 173], [328, 153, 212, 106, 27], [639, 296, 447, 223, 51]),
    "Kvasir": ([250] * 8, [100] * 8, [150] * 8),
    "LungColon": ([2500] * 5, [1000] * 5, [1500] * 5),
    "RETINA": ([549, 503, 519, 537], [219, 201, 207, 214], [330, 303, 312, 323]),
}
# biomedcoop.md §4.3: number of test images in the base / new halves.
PUBLISHED_TEST_BASE_NEW = {
    "BTMRI": (800, 917), "BUSI": (195, 41), "CHMNIST": (752, 752), "COVID_19": (2889, 3462),
    "CTKidney": (1528, 2210), "DermaMNIST": (412, 1593), "KneeXray": (1382, 274), "Kvasir": (600, 600),
    "LungColon": (4500, 3000), "RETINA": (633, 635),
}


def published_split(name):
    path = SHARED_SPLITS / f"split_{name}.json"
    if not path.is_file():
        pytest.skip(f"published split files not available ({path})")
    return read_split_file(str(path))


@pytest.mark.parametrize("name", sorted(PUBLISHED_COUNTS))
def test_published_split_matches_the_documented_classes_and_counts(name):
    split = published_split(name)
    classnames = published_dataset(name).classnames
    for key, expected in zip(("train", "val", "test"), PUBLISHED_COUNTS[name]):
        per_label = Counter(entry.label for entry in split[key])
        assert [per_label[label] for label in range(len(classnames))] == expected, key
        assert {(e.label, e.classname) for e in split[key]} == set(enumerate(classnames)), key
        assert all(e.path.split("/")[0] == class_folder(e.classname) for e in split[key])


@pytest.mark.parametrize("name", sorted(PUBLISHED_TEST_BASE_NEW))
def test_published_base_new_partition(name):
    split = published_split(name)
    classnames = published_dataset(name).classnames
    n = len(classnames)
    base = base_new_labels({e.label for e in split["train"]}, "base")
    new = base_new_labels({e.label for e in split["train"]}, "new")
    assert base == {label: label for label in range((n + 1) // 2)}
    assert new == {label: label - (n + 1) // 2 for label in range((n + 1) // 2, n)}
    test_counts = tuple(sum(e.label in part for e in split["test"]) for part in (base, new))
    assert test_counts == PUBLISHED_TEST_BASE_NEW[name]


def test_catalog_lists_the_eleven_datasets_with_their_config_names():
    assert [d.name for d in PUBLISHED_DATASETS] == [
        "BTMRI", "BUSI", "CHMNIST", "COVID_19", "CTKidney", "DermaMNIST", "KneeXray", "Kvasir", "LungColon",
        "OCTMNIST", "RETINA"]
    assert published_dataset("COVID_19").config == "covid"
    assert published_dataset("OCTMNIST").classnames[3] == "normal OCT scan"
    assert class_folder("normal OCT scan") == "normal_OCT_scan"
    with pytest.raises(ValueError, match="BTMRI"):
        published_dataset("BTMR")


def test_base_new_labels_rejects_unknown_choices():
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES.*'novel'"):
        base_new_labels({0, 1}, "novel")
    assert base_new_labels({0, 1, 2}, "all") == {0: 0, 1: 1, 2: 2}


@pytest.mark.parametrize("data, problem", [
    ({"train": [], "val": []}, "keys"),
    ({"train": [["a.png", "0", "x"]], "val": [], "test": []}, r"\[relative_path, label, classname\]"),
    ({"train": [["a.png", 0, "x"], ["b.png", 0, "y"]], "val": [], "test": []}, "both 'x' and 'y'"),
    ({"train": [["a.png", 1, "x"]], "val": [], "test": []}, "0..n-1"),
    ({"train": [["a.png", 0, "x"]], "val": [], "test": [["b.png", 1, "y"]]}, "test uses labels"),
])
def test_invalid_split_data_is_rejected_with_the_reason(data, problem):
    with pytest.raises(SplitFileError, match=problem):
        parse_split(data, source="split_X.json")


def test_split_file_round_trip_and_invalid_json(tmp_path):
    split = {"train": [Entry("a/1.png", 0, "a")], "val": [Entry("a/2.png", 0, "a")], "test": [Entry("a/3.png", 0, "a")]}
    path = tmp_path / "split_X.json"
    write_split_file(split, str(path))
    assert json.loads(path.read_text())["train"] == [["a/1.png", 0, "a"]]
    assert read_split_file(str(path)) == split
    path.write_text("{not json")
    with pytest.raises(SplitFileError, match="split_X.json is not valid JSON"):
        read_split_file(str(path))


def test_stratified_split_is_per_class_seeded_and_order_independent():
    paths = [[f"a/{i}.png" for i in range(10)], [f"b/{i}.png" for i in range(7)]]
    split = stratified_split(paths, ["a", "b"], ratios=(0.5, 0.2, 0.3), seed=3)
    counts = {key: Counter(e.label for e in entries) for key, entries in split.items()}
    assert counts == {"train": {0: 5, 1: 4}, "val": {0: 2, 1: 1}, "test": {0: 3, 1: 2}}  # round(3.5) == 4
    assert sorted(e.path for key in split for e in split[key]) == sorted(sum(paths, []))
    assert stratified_split([p[::-1] for p in paths], ["a", "b"], seed=3) == split  # input order is irrelevant
    assert stratified_split(paths, ["a", "b"], seed=4) != split
    with pytest.raises(ValueError, match="Class 'c' has 2 images"):
        stratified_split([["c/1.png", "c/2.png"]], ["c"])
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_split(paths, ["a", "b"], ratios=(0.5, 0.5, 0.5))


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_scan_class_folders_orders_labels_and_ignores_non_image_folders(tmp_path):
    for rel in ["normal_scan/1.png", "benign_tumor/x/2.jpg", "benign_tumor/3.PNG", "malignant/4.tif",
                "normal0/6.png", "split_fewshot/shot_1-seed_1.json", "normal_scan/notes.txt", ".hidden/5.png"]:
        _touch(tmp_path / rel)
    images = scan_class_folders(str(tmp_path))
    assert images.classnames == ["benign tumor", "malignant", "normal0", "normal scan"]  # by folder name
    assert images.paths_by_class[0] == ["benign_tumor/3.PNG", "benign_tumor/x/2.jpg"]
    ordered = scan_class_folders(str(tmp_path), ["normal_scan", "benign tumor", "malignant", "normal0"])
    assert ordered.classnames == ["normal scan", "benign tumor", "malignant", "normal0"]
    assert ordered.paths_by_class[0] == ["normal_scan/1.png"]
    with pytest.raises(ValueError, match=r"not listed: \['malignant'\]"):
        scan_class_folders(str(tmp_path), ["normal_scan", "benign_tumor", "normal0"])
    _touch(tmp_path / "normal scan" / "7.png")
    with pytest.raises(ValueError, match="two class folders both mean the class 'normal scan'"):
        scan_class_folders(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        scan_class_folders(str(tmp_path / "nope"))


def test_read_label_csv_with_names_or_integer_labels(tmp_path):
    named = tmp_path / "named.csv"
    named.write_text("path,label\nimg/1.png,normal_scan\nimg/2.png,tumor\nimg/3.png,tumor\n")
    images = read_label_csv(str(named))
    assert images.classnames == ["normal scan", "tumor"]
    assert images.paths_by_class == [["img/1.png"], ["img/2.png", "img/3.png"]]
    assert read_label_csv(str(named), ["tumor", "normal_scan"]).classnames == ["tumor", "normal scan"]

    numbered = tmp_path / "numbered.csv"
    numbered.write_text("img/1.png,1,tumour\nimg/2.png,0,healthy\nimg/3.png,1,tumour\n")
    assert read_label_csv(str(numbered)).classnames == ["healthy", "tumour"]
    numbered.write_text("img/1.png,1\nimg/2.png,0\n")
    with pytest.raises(ValueError, match="integer labels need class names"):
        read_label_csv(str(numbered))
    assert read_label_csv(str(numbered), ["cat", "dog"]).paths_by_class == [["img/2.png"], ["img/1.png"]]
    numbered.write_text("img/1.png,2,x\nimg/2.png,0,y\n")
    with pytest.raises(ValueError, match=r"0..n-1 without gaps, found \[0, 2\]"):
        read_label_csv(str(numbered))
    numbered.write_text("img/1.png\n")
    with pytest.raises(ValueError, match="data row 1"):
        read_label_csv(str(numbered))
