"""Data tools without the network: unpacking and verifying local archives, the resumable HTTP
download (with a fake server), the command line, and the synthetic dataset writer."""
import io
import json
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_biomed.data_tools import download as download_module
from clip_biomed.data_tools.__main__ import main
from clip_biomed.data_tools.catalog import published_dataset
from clip_biomed.data_tools.download import download_dataset, unpack_archive, verify_dataset
from clip_biomed.data_tools.splits import read_split_file
from clip_biomed.data_tools.synthetic import write_synthetic_dataset


@pytest.fixture
def busi_files(tmp_path):
    """{archive member path: bytes} of a small BUSI archive in the published layout."""
    source = Path(write_synthetic_dataset(str(tmp_path / "source"), "BUSI", per_class=5, size=8))
    return {f"BUSI/{path.relative_to(source).as_posix()}": path.read_bytes()
            for path in sorted(source.rglob("*")) if path.is_file()}


def make_zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def listed_images(root, name):
    split = read_split_file(str(root / name / f"split_{name}.json"))
    return [root / name / name / e.path for part in split.values() for e in part]


def test_download_from_a_local_archive_unpacks_and_verifies(tmp_path, busi_files):
    archive = make_zip(tmp_path / "BUSI.zip", {**busi_files, "__MACOSX/BUSI/._split_BUSI.json": b"junk"})
    check = download_dataset("BUSI", str(tmp_path / "data"), archive=str(archive))
    assert check.ok and check.counts == {"train": 6, "val": 3, "test": 6}
    assert all(path.is_file() for path in listed_images(tmp_path / "data", "BUSI"))
    assert not (tmp_path / "data" / "__MACOSX").exists()
    assert archive.is_file()  # an archive the user gave is never deleted
    assert "BUSI: OK, 15 images listed" in check.report()


def test_archive_without_top_folder_and_file_url(tmp_path, busi_files):
    flat = {name[len("BUSI/"):]: data for name, data in busi_files.items()}
    archive = make_zip(tmp_path / "flat.zip", flat)
    check = download_dataset("BUSI", str(tmp_path / "data"), archive=archive.as_uri())
    assert check.ok
    assert (tmp_path / "data" / "BUSI" / "split_BUSI.json").is_file()


def test_verify_reports_missing_and_unreadable_images(tmp_path, busi_files, capsys):
    split = json.loads(busi_files["BUSI/split_BUSI.json"])
    missing = split["test"][0][0]
    corrupt = split["train"][0][0]
    files = {name: data for name, data in busi_files.items() if name != f"BUSI/BUSI/{missing}"}
    files[f"BUSI/BUSI/{corrupt}"] = b"not a png"
    check = download_dataset("BUSI", str(tmp_path / "data"), archive=str(make_zip(tmp_path / "BUSI.zip", files)))
    assert not check.ok and check.missing == [missing] and check.unreadable == []
    report = check.report()
    assert "1 of 15 images listed in the split file are missing" in report and missing in report
    assert f"fix: python -m clip_biomed.data_tools download BUSI --root {tmp_path / 'data'}" in report

    assert verify_dataset("BUSI", str(tmp_path / "data"), check_images=True).unreadable == [corrupt]
    assert main(["verify", "BUSI", "--root", str(tmp_path / "data")]) == 1
    assert missing in capsys.readouterr().out


@pytest.mark.parametrize("files, message", [
    ({"BUSI/BUSI/a.png": b""}, "should hold exactly one split_BUSI.json"),
    ({"BUSI/split_BUSI.json": b"{}", "BUSI/../../evil.txt": b""}, "unsafe member path"),
])
def test_bad_archives_are_refused(tmp_path, files, message):
    with pytest.raises(ValueError, match=message):
        unpack_archive(str(make_zip(tmp_path / "x.zip", files)), "BUSI", str(tmp_path / "data"))
    assert not (tmp_path / "evil.txt").exists()


def test_not_a_zip_and_missing_split(tmp_path):
    (tmp_path / "BUSI.zip").write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(ValueError, match="is not a zip archive"):
        unpack_archive(str(tmp_path / "BUSI.zip"), "BUSI", str(tmp_path))
    check = verify_dataset("RETINA", str(tmp_path))
    assert not check.ok and "split file not found" in check.report()


class FakeResponse(io.BytesIO):
    def __init__(self, data, status):
        super().__init__(data)
        self.status = status
        self.headers = {"Content-Length": str(len(data))}


def test_http_download_resumes_a_part_file_and_removes_the_archive(tmp_path, busi_files, monkeypatch):
    archive_bytes = make_zip(tmp_path / "served.zip", busi_files).read_bytes()
    root = tmp_path / "data"
    root.mkdir()
    (root / "BUSI.zip.part").write_bytes(archive_bytes[:100])
    requests = []

    def fake_urlopen(request, timeout):
        requests.append(request)
        start = int(request.get_header("Range", "bytes=0-")[len("bytes="):-1])
        return FakeResponse(archive_bytes[start:], 206 if start else 200)

    monkeypatch.setattr(download_module.urllib.request, "urlopen", fake_urlopen)
    check = download_dataset("BUSI", str(root))
    assert check.ok
    assert requests[0].full_url == published_dataset("BUSI").hf_url
    assert requests[0].get_header("Range") == "bytes=100-"
    assert not (root / "BUSI.zip").exists() and not (root / "BUSI.zip.part").exists()
    assert download_dataset("BUSI", str(root)).ok and len(requests) == 1  # complete: nothing fetched


def test_offline_download_error_names_the_archive_alternative(tmp_path, monkeypatch, capsys):
    def no_network(request, timeout):
        raise download_module.urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download_module.urllib.request, "urlopen", no_network)
    assert main(["download", "BUSI", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "BUSI: FAILED: <urlopen error [Errno -3] Temporary failure in name resolution>" in out
    assert (f"download {published_dataset('BUSI').hf_url} on a machine that has it, copy the file over and run: "
            f"python -m clip_biomed.data_tools download BUSI --root {tmp_path} --archive /path/to/BUSI.zip") in out


def test_cli_download_and_argument_errors(tmp_path, busi_files, capsys):
    archive = make_zip(tmp_path / "BUSI.zip", busi_files)
    assert main(["download", "BUSI", "--root", str(tmp_path / "data"), "--archive", str(archive)]) == 0
    assert "BUSI: OK" in capsys.readouterr().out
    assert main(["verify", "BUSI", "--root", str(tmp_path / "data")]) == 0
    assert main(["download", "BUS", "--root", str(tmp_path)]) == 2
    assert "the published datasets are: BTMRI, BUSI" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="give a dataset name"):
        main(["download", "all", "--root", str(tmp_path), "--archive", str(archive)])


@pytest.mark.parametrize("layout, expected", [
    ("published", ["BTMRI/split_BTMRI.json", "BTMRI/BTMRI/glioma_tumor/glioma_tumor_0000.png"]),
    ("folder", ["BTMRI/normal_brain/normal_brain_0004.png"]),
    ("csv", ["BTMRI/labels.csv", "BTMRI/images/pituitary_tumor_0000.png"]),
])
def test_synthetic_layouts(tmp_path, layout, expected):
    assert main(["synthetic", "--out", str(tmp_path), "--name", "BTMRI", "--layout", layout,
                 "--per-class", "5", "--size", "16"]) == 0
    assert all((tmp_path / path).is_file() for path in expected)
    assert len(list(tmp_path.rglob("*.png"))) == 20
    assert Image.open(tmp_path / expected[-1]).size == (16, 16)


def test_synthetic_split_is_published_format_with_custom_classes(tmp_path):
    main(["synthetic", "--out", str(tmp_path), "--name", "Toy", "--classes", "b cls, a cls", "--per-class", "10"])
    split = read_split_file(str(tmp_path / "Toy" / "split_Toy.json"))
    assert {key: Counter(e.classname for e in entries) for key, entries in split.items()} == {
        "train": {"b cls": 5, "a cls": 5}, "val": {"b cls": 2, "a cls": 2}, "test": {"b cls": 3, "a cls": 3}}
    assert split["train"][0].label == 0 and split["train"][0].classname == "b cls"
    assert split["train"][0].path.startswith("b_cls/")
    assert main(["synthetic", "--out", str(tmp_path), "--name", "Toy"]) == 2  # unknown name, no --classes


def test_synthetic_classes_are_learnable_and_images_differ(tmp_path):
    root = Path(write_synthetic_dataset(str(tmp_path), "CHMNIST", per_class=10, size=24))
    split = read_split_file(str(root / "split_CHMNIST.json"))

    def features(entries):  # per-channel mean and 95th percentile: a nearest-centroid classifier
        arrays = [np.asarray(Image.open(root / "CHMNIST" / e.path), dtype=float).reshape(-1, 3) for e in entries]
        return np.array([np.concatenate([a.mean(0), np.percentile(a, 95, axis=0)]) for a in arrays])

    train, test = features(split["train"]), features(split["test"])
    train_labels = np.array([e.label for e in split["train"]])
    centroids = np.array([train[train_labels == label].mean(0) for label in range(8)])
    predicted = np.argmin(((test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == np.array([e.label for e in split["test"]])).mean() >= 0.9
    first_class = [np.asarray(Image.open(root / "CHMNIST" / e.path)) for e in split["train"][:2]]
    assert not np.array_equal(*first_class)


def test_overlap_makes_the_synthetic_classes_hard_to_separate():
    """A linear classifier on the pixels separates overlap-0 classes perfectly, not overlap-0.6 ones."""
    from sklearn.linear_model import LogisticRegression

    from clip_biomed.data_tools.synthetic import synthetic_image

    def pixels(overlap, seed):
        rng = np.random.default_rng(seed)
        return np.array([synthetic_image(label, 4, 16, rng, overlap).reshape(-1) / 255.0
                         for label in range(4) for _ in range(50)]), np.repeat(np.arange(4), 50)

    def accuracy(overlap):
        return LogisticRegression(max_iter=2000).fit(*pixels(overlap, 0)).score(*pixels(overlap, 1))

    assert accuracy(0.0) == 1.0
    assert 0.5 < accuracy(0.6) < 0.97
    with pytest.raises(ValueError, match="overlap must be between 0 and 1"):
        write_synthetic_dataset("unused", "BTMRI", overlap=1.5)
