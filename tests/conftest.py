"""Shared test setup: offline hub, repo root importable (trainers/ and datasets/ live there)."""
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CLIP_BIOMED_ENGINE", "builtin")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SPLITS = REPO_ROOT.parent / "shared" / "splits"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def feature_cache_dir(tmp_path_factory):
    """The frozen-feature cache of every run in the session (train.py subprocesses inherit it): never
    the user's own cache folder."""
    path = tmp_path_factory.mktemp("feature_cache")
    os.environ["CLIP_BIOMED_FEATURE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_biomedclip(tmp_path_factory):
    """A tiny random BiomedCLIP-shaped model in the on-disk format of a real offline copy."""
    from clip_biomed.backbones.testing import make_tiny

    return make_tiny("biomedclip", tmp_path_factory.mktemp("tiny_biomedclip"))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A DATASET.ROOT holding a small synthetic BTMRI in the published layout (24 images per class)."""
    from clip_biomed.data_tools.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("data")
    write_synthetic_dataset(str(root), "BTMRI", per_class=24, size=32)
    return root


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """Tiny models of the biomedclip, pubmedclip and pmcclip families under one folder (read-only:
    tests that change files copy a family's folder first)."""
    from clip_biomed.backbones.testing import make_tiny

    root = tmp_path_factory.mktemp("tiny_models")
    for family in ("biomedclip", "pubmedclip", "pmcclip"):
        make_tiny(family, root / family)
    return root


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random OpenAI-CLIP-shaped model in open_clip's layout (~13 MB: the real BPE vocabulary)."""
    from clip_biomed.backbones.testing import make_tiny

    return make_tiny("clip", tmp_path_factory.mktemp("tiny_clip"))


class _Unclosable:
    """A stream whose close() does nothing (real Dassl's stdout tee closes the console it wraps)."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def close(self):
        pass


@pytest.fixture
def train_main_in_process(capsys, monkeypatch):
    """Lets a test run train.py's main() in this process: the stdout tee it installs is removed after
    the test and never closes pytest's capture, whichever engine provides setup_logger."""
    import clip_biomed.dassl as seam

    real_setup_logger = seam.setup_logger

    def setup_logger(output=None):
        console = sys.stdout
        real_setup_logger(output)
        if sys.stdout is not console:
            sys.stdout.console = _Unclosable(console)

    monkeypatch.setattr(seam, "setup_logger", setup_logger)
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # undone at teardown, before capsys's own
    return capsys
