"""Building datasets: published splits on placeholder trees, Dassl-exact few-shot subsets, the JSON
few-shot cache, base/new subsampling, FolderDataset (folder and CSV), configs and error messages."""
import json
import random
import shutil
from pathlib import Path

import pytest

from clip_biomed.dassl import DATASET_REGISTRY, DataManager, build_dataset, get_cfg_default, set_random_seed
from clip_biomed.data_tools.catalog import PUBLISHED_DATASETS
from clip_biomed.data_tools.splits import SplitFileError, file_sha256
from clip_biomed.data_tools.synthetic import write_synthetic_dataset
from datasets import add_dataset_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SPLITS = REPO_ROOT.parent / "shared" / "splits"


def make_cfg(root, dataset_name, num_shots=-1, seed=1, subsample="all", **folder):
    cfg = get_cfg_default()
    add_dataset_config(cfg)
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = dataset_name
    cfg.DATASET.NUM_SHOTS = num_shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    for key, value in folder.items():
        cfg.DATASET.FOLDER[key.upper()] = value
    return cfg


def build(cfg):
    """What train.py does: seed, then build the dataset (first thing that draws random numbers)."""
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    return build_dataset(cfg)


def dassl_fewshot(entries, num_shots):
    """Reference of Dassl's generate_fewshot_dataset (dassl.md §5.3), independent of the engine."""
    by_label = {}
    for entry in entries:
        by_label.setdefault(entry[1], []).append(entry)
    subset = []
    for items in by_label.values():
        subset.extend(random.sample(items, num_shots) if len(items) >= num_shots else items)
    return subset


def relpaths(dataset_items, image_dir):
    return [str(Path(item.impath).relative_to(image_dir)) for item in dataset_items]


def test_reference_sampler_reproduces_the_dassl_vectors():
    names = "c2_0 c0_0 c1_0 c3_0 c2_1 c0_1 c1_1 c2_2 c0_2 c1_2 c2_3 c0_3 c2_4 c0_4 c2_5 c2_6".split()
    entries = [(name, int(name[1]), "") for name in names]
    set_random_seed(1)
    first, second = ([e[0] for e in dassl_fewshot(entries, 4)] for _ in range(2))
    assert first == "c2_1 c2_4 c2_0 c2_2 c0_0 c0_3 c0_1 c0_2 c1_0 c1_1 c1_2 c3_0".split()
    assert second == "c2_5 c2_3 c2_1 c2_0 c0_3 c0_0 c0_1 c0_2 c1_0 c1_1 c1_2 c3_0".split()


# --------------------------------------------------------------------- published splits, placeholder files
@pytest.fixture(scope="module")
def published_root(tmp_path_factory):
    """BUSI and RETINA (the smallest published datasets) with empty files for every listed image."""
    if not SHARED_SPLITS.is_dir():
        pytest.skip(f"published split files not available ({SHARED_SPLITS})")
    root = tmp_path_factory.mktemp("published")
    for name in ("BUSI", "RETINA"):
        split_file = SHARED_SPLITS / f"split_{name}.json"
        image_dir = root / name / name
        image_dir.mkdir(parents=True)
        shutil.copyfile(split_file, root / name / f"split_{name}.json")
        entries = [e for part in json.loads(split_file.read_text()).values() for e in part]
        for folder in {e[0].split("/")[0] for e in entries}:
            (image_dir / folder).mkdir()
        for path, _, _ in entries:
            (image_dir / path).touch()
    return root


def published(root, name):
    split = json.loads((root / name / f"split_{name}.json").read_text())
    shutil.rmtree(root / name / "split_fewshot", ignore_errors=True)  # each test draws afresh
    return split, root / name / name


@pytest.mark.parametrize("name", ["BUSI", "RETINA"])
def test_full_published_dataset(published_root, name):
    split, image_dir = published(published_root, name)
    dataset = build(make_cfg(published_root, name))
    for part, items in (("train", dataset.train_x), ("val", dataset.val), ("test", dataset.test)):
        assert [[p, item.label, item.classname] for p, item in zip(relpaths(items, image_dir), items)] == split[part]
    expected = {"BUSI": ["benign tumor", "malignant tumor", "normal scan"],
                "RETINA": ["diabetic retinopathy", "glaucoma", "cataract", "normal retina"]}[name]
    assert dataset.classnames == expected and dataset.num_classes == len(expected)
    assert not (published_root / name / "split_fewshot").exists()


@pytest.mark.parametrize("name, num_shots, seed", [("BUSI", 16, 1), ("RETINA", 16, 2), ("RETINA", 1, 3)])
def test_fewshot_subsets_are_the_ones_dassl_draws(published_root, name, num_shots, seed):
    split, image_dir = published(published_root, name)
    dataset = build(make_cfg(published_root, name, num_shots=num_shots, seed=seed))
    random.seed(seed)
    expected_train = dassl_fewshot(split["train"], num_shots)
    expected_val = dassl_fewshot(split["val"], min(num_shots, 4))
    assert relpaths(dataset.train_x, image_dir) == [e[0] for e in expected_train]
    assert relpaths(dataset.val, image_dir) == [e[0] for e in expected_val]
    assert [item.label for item in dataset.train_x] == [e[1] for e in expected_train]
    assert len(dataset.test) == len(split["test"])

    cache = json.loads((published_root / name / "split_fewshot" / f"shot_{num_shots}-seed_{seed}.json").read_text())
    assert cache["split_sha256"] == file_sha256(str(published_root / name / f"split_{name}.json"))
    assert cache["train"] == expected_train and cache["val"] == expected_val
    assert not list(published_root.rglob("*.pkl"))

    set_random_seed(seed)
    state = random.getstate()
    again = build_dataset(make_cfg(published_root, name, num_shots=num_shots, seed=seed))
    assert random.getstate() == state  # served from the cache: no draw
    assert [item.impath for item in again.train_x] == [item.impath for item in dataset.train_x]


def test_small_classes_are_kept_whole_without_a_draw(published_root):
    split, image_dir = published(published_root, "BUSI")
    dataset = build(make_cfg(published_root, "BUSI", num_shots=100))
    normal = [e[0] for e in split["train"] if e[1] == 2]  # 66 images < 100
    assert [p for p, item in zip(relpaths(dataset.train_x, image_dir), dataset.train_x) if item.label == 2] == normal
    assert [len([i for i in dataset.train_x if i.label == label]) for label in range(3)] == [100, 100, 66]
    assert [len([i for i in dataset.val if i.label == label]) for label in range(3)] == [4, 4, 4]


@pytest.mark.parametrize("name, subsample, classnames, num_test", [
    ("BUSI", "base", ["benign tumor", "malignant tumor"], 195),
    ("BUSI", "new", ["normal scan"], 41),
    ("RETINA", "base", ["diabetic retinopathy", "glaucoma"], 633),
    ("RETINA", "new", ["cataract", "normal retina"], 635),
])
def test_base_new_subsampling_follows_fewshot_sampling(published_root, name, subsample, classnames, num_test):
    published(published_root, name)
    all_classes = build(make_cfg(published_root, name, num_shots=16))
    dataset = build(make_cfg(published_root, name, num_shots=16, subsample=subsample))
    assert dataset.classnames == classnames and dataset.num_classes == len(classnames)
    assert len(dataset.test) == num_test
    assert {item.label for item in dataset.test} == set(range(len(classnames)))
    offset = 0 if subsample == "base" else len(all_classes.classnames) - len(classnames)
    for part in ("train_x", "val"):
        kept = [(i.impath, i.label - offset) for i in getattr(all_classes, part) if i.classname in classnames]
        assert [(i.impath, i.label) for i in getattr(dataset, part)] == kept


# ----------------------------------------------------------------------------------- few-shot cache
@pytest.fixture
def synthetic_root(tmp_path):
    write_synthetic_dataset(str(tmp_path), "BTMRI", per_class=10, size=8)
    return tmp_path


def cache_file(root, num_shots=2, seed=1):
    return root / "BTMRI" / "split_fewshot" / f"shot_{num_shots}-seed_{seed}.json"


def train_paths(dataset):
    return [item.impath for item in dataset.train_x]


def test_cache_is_rebuilt_when_the_split_file_changes(synthetic_root, capsys):
    build(make_cfg(synthetic_root, "BTMRI", num_shots=2))
    split_path = synthetic_root / "BTMRI" / "split_BTMRI.json"
    split = json.loads(split_path.read_text())
    split["test"] += split["train"][:3]  # the published format allows this edit; the subset must follow it
    del split["train"][:3]
    split_path.write_text(json.dumps(split))
    capsys.readouterr()

    dataset = build(make_cfg(synthetic_root, "BTMRI", num_shots=2))
    out = capsys.readouterr().out
    assert "Not using the few-shot cache" in out and "different split file" in out
    assert json.loads(cache_file(synthetic_root).read_text())["split_sha256"] == file_sha256(str(split_path))
    random.seed(1)
    expected = dassl_fewshot([tuple(e) for e in split["train"]], 2)
    assert [Path(p).name for p in train_paths(dataset)] == [Path(e[0]).name for e in expected]


@pytest.mark.parametrize("damage, reason", [
    (lambda cache: "{truncated", "not valid JSON"),
    (lambda cache: json.dumps({**cache, "train": cache["train"][1:]}), "does not hold 2 items of every class"),
    (lambda cache: json.dumps({**cache, "train": [["x/forged.png", 0, "glioma tumor"]] + cache["train"][1:]}),
     "not in the split file"),
    (lambda cache: json.dumps({**cache, "seed": 7}), "seed 7"),
])
def test_damaged_cache_is_detected_and_rebuilt(synthetic_root, capsys, damage, reason):
    first = build(make_cfg(synthetic_root, "BTMRI", num_shots=2))
    path = cache_file(synthetic_root)
    path.write_text(damage(json.loads(path.read_text())))
    capsys.readouterr()
    again = build(make_cfg(synthetic_root, "BTMRI", num_shots=2))
    out = capsys.readouterr().out
    assert "Not using the few-shot cache" in out and reason in out
    assert train_paths(again) == train_paths(first)  # same seed, same draw
    rewritten = [entry[0] for entry in json.loads(path.read_text())["train"]]
    assert rewritten == relpaths(again.train_x, synthetic_root / "BTMRI" / "BTMRI")


def test_unseeded_runs_warn_and_use_the_dassl_file_name(synthetic_root, capsys):
    dataset = build(make_cfg(synthetic_root, "BTMRI", num_shots=2, seed=-1))
    assert "unseeded" in capsys.readouterr().out
    assert cache_file(synthetic_root, seed=-1).is_file()
    assert len(dataset.train_x) == 8


def test_unwritable_cache_only_warns(synthetic_root, capsys):
    (synthetic_root / "BTMRI" / "split_fewshot").write_text("a file where the cache folder should be")
    dataset = build(make_cfg(synthetic_root, "BTMRI", num_shots=2))
    assert "could not write the few-shot cache" in capsys.readouterr().out
    assert len(dataset.train_x) == 8


def test_dataset_root_expands_the_home_folder(synthetic_root, monkeypatch):
    monkeypatch.setenv("HOME", str(synthetic_root))
    assert build(make_cfg("~", "BTMRI")).dataset_dir == str(synthetic_root / "BTMRI")


# ------------------------------------------------------------------------------------ error messages
def test_missing_dataset_names_the_paths_and_the_download_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        build(make_cfg(tmp_path, "Kvasir"))
    message = str(error.value)
    assert str(tmp_path / "Kvasir" / "split_Kvasir.json") in message
    assert f"python -m clip_biomed.data_tools download Kvasir --root {tmp_path}" in message


def test_missing_images_are_counted_and_named(synthetic_root):
    removed = sorted((synthetic_root / "BTMRI" / "BTMRI" / "glioma_tumor").iterdir())[:2]
    for path in removed:
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"BTMRI: 2 of the 40 images") as error:
        build(make_cfg(synthetic_root, "BTMRI"))
    assert f"glioma_tumor/{removed[0].name}" in str(error.value)
    assert f"data_tools verify BTMRI --root {synthetic_root}" in str(error.value)


def test_invalid_split_file_names_the_file(synthetic_root):
    (synthetic_root / "BTMRI" / "split_BTMRI.json").write_text('{"train": []}')
    with pytest.raises(SplitFileError, match="split_BTMRI.json: expected a JSON object with the keys"):
        build(make_cfg(synthetic_root, "BTMRI"))


# --------------------------------------------------------------------------------------- FolderDataset
def test_folder_dataset_from_class_folders(tmp_path, capsys):
    write_synthetic_dataset(str(tmp_path / "raw"), "skin", ["naevus", "melanoma", "keratosis"], layout="folder",
                            per_class=10, size=8)
    cfg = make_cfg(tmp_path / "work", "FolderDataset", num_shots=2, name="Skin",
                   image_dir=str(tmp_path / "raw" / "skin"))
    dataset = build(cfg)
    split_path = tmp_path / "work" / "Skin" / "split_Skin.json"
    assert "Wrote a new split of 3 classes (train 15, val 6, test 9)" in capsys.readouterr().out
    assert dataset.classnames == ["keratosis", "melanoma", "naevus"]  # sorted folder names
    assert len(dataset.train_x) == 6 and len(dataset.val) == 6 and len(dataset.test) == 9
    assert (tmp_path / "work" / "Skin" / "split_fewshot" / "shot_2-seed_1.json").is_file()
    assert all(Path(item.impath).is_relative_to(tmp_path / "raw" / "skin") for item in dataset.test)

    split_bytes = split_path.read_bytes()
    cfg.SEED = 5
    again = build(cfg)
    assert "Using the existing split file" in capsys.readouterr().out
    assert split_path.read_bytes() == split_bytes  # the split does not depend on SEED
    assert train_paths(again) != train_paths(dataset)  # the few-shot draw does

    new = build(make_cfg(tmp_path / "work", "FolderDataset", num_shots=2, subsample="new", name="Skin",
                         image_dir=str(tmp_path / "raw" / "skin")))
    assert new.classnames == ["naevus"] and {item.label for item in new.test} == {0}


def test_folder_split_creation_draws_nothing_from_the_global_rng(tmp_path):
    write_synthetic_dataset(str(tmp_path), "Mine", ["b", "a"], layout="folder", per_class=10, size=8)
    cfg = make_cfg(tmp_path, "FolderDataset", num_shots=2, name="Mine", image_dir="Mine",  # relative to ROOT
                   classnames=["b", "a"])
    fresh = build(cfg)  # writes the split, then samples
    existing = build(cfg)  # split already there
    assert fresh.classnames == ["b", "a"]
    assert train_paths(fresh) == train_paths(existing)


def test_folder_dataset_from_a_csv(tmp_path):
    write_synthetic_dataset(str(tmp_path), "Chest", ["normal", "pneumonia"], layout="csv", per_class=10, size=8)
    dataset = build(make_cfg(tmp_path, "FolderDataset", name="ChestCSV", csv="Chest/labels.csv",
                             split_ratios=[0.6, 0.2, 0.2]))
    assert dataset.classnames == ["normal", "pneumonia"]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (12, 4, 4)
    assert all(Path(item.impath).parent == tmp_path / "Chest" / "images" for item in dataset.train_x)
    assert (tmp_path / "ChestCSV" / "split_ChestCSV.json").is_file()


def test_folder_dataset_defaults_to_the_published_layout(tmp_path):
    write_synthetic_dataset(str(tmp_path), "BUSI", per_class=10, size=8)
    (tmp_path / "BUSI" / "split_BUSI.json").unlink()
    dataset = build(make_cfg(tmp_path, "FolderDataset", name="BUSI"))
    assert dataset.classnames == ["benign tumor", "malignant tumor", "normal scan"]  # sorted folders
    assert (tmp_path / "BUSI" / "split_BUSI.json").is_file()


@pytest.mark.parametrize("folder, message", [
    ({}, "DATASET.FOLDER.NAME is ''"),
    ({"name": "X", "image_dir": "a", "csv": "b.csv"}, "Set only one of"),
    ({"name": "X"}, "no split file .*split_X.json and no image folder"),
])
def test_folder_dataset_config_errors(tmp_path, folder, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build(make_cfg(tmp_path, "FolderDataset", **folder))


# ---------------------------------------------------------------------------------- configs, registry
def test_dataset_configs_set_the_registered_names():
    for entry in PUBLISHED_DATASETS:
        cfg = make_cfg("", "")
        cfg.merge_from_file(str(REPO_ROOT / "configs" / "datasets" / f"{entry.config}.yaml"))
        assert cfg.DATASET.NAME == entry.name
        assert entry.name in DATASET_REGISTRY.registered_names()
    expected = {f"{entry.config}.yaml" for entry in PUBLISHED_DATASETS} | {"folder.yaml"}
    # a user's own configs/datasets/mydata.yaml may sit beside them
    assert expected <= {path.name for path in (REPO_ROOT / "configs" / "datasets").glob("*.yaml")}


def test_folder_config_template_and_opts_merge(tmp_path):
    write_synthetic_dataset(str(tmp_path), "Mine", ["x", "y"], layout="folder", per_class=5, size=8)
    cfg = make_cfg(tmp_path, "")
    cfg.merge_from_file(str(REPO_ROOT / "configs" / "datasets" / "folder.yaml"))
    cfg.merge_from_list(["DATASET.FOLDER.NAME", "Mine", "DATASET.FOLDER.IMAGE_DIR", "Mine",
                         "DATASET.FOLDER.SPLIT_RATIOS", "[0.4, 0.2, 0.4]"])
    assert build(cfg).classnames == ["x", "y"]


def test_data_manager_loads_batches_of_a_synthetic_dataset(synthetic_root):
    cfg = make_cfg(synthetic_root, "BTMRI", num_shots=2)
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.TRANSFORMS = ("normalize",)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    set_random_seed(1)
    manager = DataManager(cfg)
    batch = next(iter(manager.train_loader_x))
    assert tuple(batch["img"].shape) == (4, 3, 8, 8)
    assert manager.num_classes == 4 and manager.dataset.classnames[3] == "normal brain"


def test_classes_with_fewer_images_than_the_shots_are_named(tmp_path, capsys):
    write_synthetic_dataset(str(tmp_path), "Mine", ["big", "small", "tiny"], layout="folder", per_class=10, size=8)
    for name in sorted((tmp_path / "Mine" / "tiny").iterdir())[4:]:
        name.unlink()  # "tiny" keeps 4 images: 2 of them train (50%)
    cfg = make_cfg(tmp_path, "FolderDataset", num_shots=4, name="Mine", image_dir="Mine")
    dataset = build(cfg)
    out = capsys.readouterr().out
    assert ("Warning: DATASET.NUM_SHOTS is 4, but 1 of the 3 classes of Mine have fewer training images, so their "
            "few-shot sets are smaller (all their images): 'tiny' (2)") in out
    assert sum(item.classname == "tiny" for item in dataset.train_x) == 2
    build(make_cfg(tmp_path, "FolderDataset", num_shots=2, name="Mine", image_dir="Mine"))
    assert "Warning: DATASET.NUM_SHOTS" not in capsys.readouterr().out
