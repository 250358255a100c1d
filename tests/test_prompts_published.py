"""`python -m clip_biomed.prompts from-published`: the published prompt_templates.py (a Python file of dict
literals) converted to the project's prompt JSON without executing it, on a small file in that format."""
import json

import pytest

from clip_biomed.data_tools.catalog import PUBLISHED_DATASETS
from clip_biomed.prompts import PromptFileError, load_prompt_file
from clip_biomed.prompts.generate import main
from clip_biomed.prompts.published import convert_published, read_published_templates

BTMRI = [d for d in PUBLISHED_DATASETS if d.name == "BTMRI"][0]


def sentences(classname, n, repeat_from=None):
    """n sentences for a class; from index ``repeat_from`` on, the first one is repeated."""
    return [f"{classname} on MRI, finding {i}." if repeat_from is None or i < repeat_from else
            f"{classname} on MRI, finding 0." for i in range(n)]


def published_file(tmp_path, canary):
    """A prompt_templates.py laid out as the published one, whose non-literal code would leave ``canary``."""
    coop = {name: sentences(name, 4) for name in BTMRI.classnames}
    coop["pituitary tumor"] = sentences("pituitary tumor", 4, repeat_from=2)  # 2 duplicates of sentence 0
    coop["brain hemorrhage"] = sentences("brain hemorrhage", 4)  # a class no dataset uses
    dpt = {name: sentences(f"DPT {name}", 5) for name in BTMRI.classnames}
    body = ",\n".join(f"    {name!r}: [\n" + "".join(f"        {s!r},\n" for s in values) + "    ]"
                      for name, values in coop.items())
    path = tmp_path / "prompt_templates.py"
    path.write_text(
        "# source: https://github.com/openai/CLIP/blob/main/notebooks/Prompt_Engineering_for_ImageNet.ipynb\n"
        f"import pathlib\npathlib.Path({str(canary)!r}).write_text('executed')\n\n"
        'CUSTOM_TEMPLATES = {\n    "BTMRI": "a photo of a {}.",\n}\n\n'
        'IMAGENET_TEMPLATES = [\n    "a bad photo of a {}.",\n]\n\n'
        f"BIOMEDCOOP_TEMPLATES = {{\n{body}\n}}\n\n"
        f"BIOMEDDPT_TEMPLATES = {dpt!r}\n", encoding="utf-8")
    return path, coop, dpt


def test_converts_one_dataset_in_order_with_duplicates_and_never_executes_the_file(tmp_path, capsys):
    canary = tmp_path / "canary.txt"
    path, coop, _ = published_file(tmp_path, canary)
    out = tmp_path / "btmri_published.json"
    assert main(["from-published", str(path), "--dataset", "BTMRI", "--n", "4", "--out", str(out)]) == 0
    assert not canary.exists(), "the published file was executed"
    report = capsys.readouterr().out
    assert "BTMRI: 4 classes x 4 sentences" in report
    assert "KEPT" in report and "pituitary tumor (BTMRI): 2 of 4 repeat an earlier sentence" in report
    data = json.loads(out.read_text())
    assert data["dataset"] == "BTMRI" and data["modality"] == BTMRI.modality
    assert data["published_source"]["variable"] == "BIOMEDCOOP_TEMPLATES" and len(data["published_source"]["sha256"]) == 64
    assert data["prompts"] == {name: coop[name] for name in BTMRI.classnames}  # same sentences, same order
    loaded = load_prompt_file(str(out)).for_classes(list(BTMRI.classnames), 4)
    assert loaded == [coop[name] for name in BTMRI.classnames]
    assert f"TRAINER.BIOMEDCOOP.PROMPTS {out}" in report


def test_all_datasets_need_every_class_and_nothing_is_written_otherwise(tmp_path, capsys):
    path, _, _ = published_file(tmp_path, tmp_path / "canary.txt")
    out = tmp_path / "all.json"
    assert main(["from-published", str(path), "--n", "4", "--out", str(out)]) == 1
    report = capsys.readouterr().out
    assert not out.exists() and "nothing written" in report
    assert "BUSI: class 'benign tumor' has no key in BIOMEDCOOP_TEMPLATES" in report
    assert "BTMRI" not in report.split("nothing written")[1]  # BTMRI is complete
    assert main(["from-published", str(path), "--dataset", "BTMRI", "--n", "5", "--out", str(out)]) == 1
    assert "has 4 sentences, 5 needed" in capsys.readouterr().out


def test_one_file_for_several_datasets_keeps_every_published_class(tmp_path):
    path, coop, _ = published_file(tmp_path, tmp_path / "canary.txt")
    conversion = convert_published(path, dataset_names=["BTMRI"], n_prompts=4)
    assert conversion.unused == []  # one dataset: only its classes are written
    both = convert_published(path, dataset_names=["btmri", "BTMRI"], n_prompts=4)
    assert both.ensemble.prompts == coop and both.unused == ["brain hemorrhage"]
    assert both.duplicates == {"pituitary tumor": 2}


def test_biomed_dpt_variable_and_classes_longer_than_needed(tmp_path, capsys):
    path, _, dpt = published_file(tmp_path, tmp_path / "canary.txt")
    out = tmp_path / "dpt.json"
    assert main(["from-published", str(path), "--variable", "BIOMEDDPT_TEMPLATES", "--dataset", "BTMRI",
                 "--n", "4", "--out", str(out)]) == 0
    assert "(the first 4 are used): glioma tumor (5)" in capsys.readouterr().out
    assert json.loads(out.read_text())["prompts"] == dpt
    assert load_prompt_file(str(out)).for_classes(["normal brain"], 4) == [dpt["normal brain"][:4]]


def test_unreadable_inputs_are_clear_errors(tmp_path, capsys):
    path, _, _ = published_file(tmp_path, tmp_path / "canary.txt")
    with pytest.raises(PromptFileError, match=r"defines no BIOMEDCOOP_PROMPTS; its top-level dicts: "
                                              r"BIOMEDCOOP_TEMPLATES, BIOMEDDPT_TEMPLATES, CUSTOM_TEMPLATES"):
        read_published_templates(path, "BIOMEDCOOP_PROMPTS")
    with pytest.raises(PromptFileError, match=r"CUSTOM_TEMPLATES\['BTMRI'\] is not a list of sentences"):
        read_published_templates(path, "CUSTOM_TEMPLATES")
    computed = tmp_path / "computed.py"
    computed.write_text("BIOMEDCOOP_TEMPLATES = {'glioma tumor': ['a' + 'b']}\n")
    with pytest.raises(PromptFileError, match=r"\(line 1\) is not a plain literal; .*never executed"):
        read_published_templates(computed)
    (tmp_path / "broken.py").write_text("BIOMEDCOOP_TEMPLATES = {\n")
    with pytest.raises(PromptFileError, match="is not valid Python"):
        read_published_templates(tmp_path / "broken.py")
    assert main(["from-published", str(path), "--dataset", "MyData", "--out", str(tmp_path / "x.json")]) == 1
    assert "Unknown dataset(s) MyData; valid: BTMRI, BUSI" in capsys.readouterr().err
