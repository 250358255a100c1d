"""Files the project writes get the permissions the umask gives any new file (they were 0600: the
private temporary file of an atomic write kept its mode through the rename), so a shared data folder
stays readable by colleagues."""
import os
import stat

import pytest
import torch

from clip_biomed.data_tools.files import atomic_write
from clip_biomed.data_tools.splits import Entry, write_fewshot_cache, write_split_file
from clip_biomed.engine.checkpoint import save_checkpoint
from clip_biomed.prompts import PromptEnsemble, save_prompt_file


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_writer_honours_the_umask(tmp_path, umask):
    split = {key: [Entry(f"a/{key}.png", 0, "a")] for key in ("train", "val", "test")}
    write_split_file(split, str(tmp_path / "split_X.json"))
    write_fewshot_cache(str(tmp_path / "split_fewshot" / "shot_1-seed_1.json"), {"train": split["train"]},
                        split_file="split_X.json", split_sha256="0" * 64, shots={"train": 1}, seed=1)
    save_checkpoint({"state_dict": {"ctx": torch.zeros(2)}, "epoch": 1}, str(tmp_path / "prompt_learner"))
    save_prompt_file(PromptEnsemble("X", "", {"a": ["an a"]}), tmp_path / "prompts.json")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 5 and {mode(p) for p in written} == {0o666 & ~umask}
    assert not [p for p in tmp_path.rglob(".*")], "no temporary file is left behind"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "cache.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["cache.json"]
