"""Loader, name matching, error messages and validator of clip_biomed.prompts (no network, no torch)."""
import json

import pytest

from clip_biomed.prompts import (PromptEnsemble, PromptFileError, load_prompt_file, normalise_sentence,
                                 packaged_datasets, save_prompt_file, validate_prompt_file)


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def sentences(tag, count):
    return [f"{tag} finding number {i} on the scan." for i in range(count)]


@pytest.fixture
def full_file(tmp_path):
    return write_json(tmp_path / "toy.json", {
        "dataset": "TOY", "modality": "brain MRI",
        "prompts": {"glioma tumor": sentences("glioma", 5), "normal brain": sentences("normal", 5)},
    })


def test_full_format_gives_sentences_in_requested_class_order(full_file):
    ensemble = load_prompt_file(full_file)
    assert (ensemble.dataset, ensemble.modality, ensemble.source) == ("TOY", "brain MRI", str(full_file))
    assert ensemble.for_classes(["normal brain", "glioma tumor"], 3) == [
        sentences("normal", 3), sentences("glioma", 3)]


def test_plain_dict_format_takes_dataset_from_file_name(tmp_path):
    path = write_json(tmp_path / "MyData.json", {"lesion": sentences("lesion", 2)})
    ensemble = load_prompt_file(str(path))
    assert (ensemble.dataset, ensemble.modality) == ("MyData", "")
    assert ensemble.for_classes(["lesion"], 2) == [sentences("lesion", 2)]


def test_names_match_exactly_first_then_ignoring_case_underscores_and_spaces():
    ensemble = PromptEnsemble("TOY", "x", {
        "Glioma_Tumor": ["loose glioma"], "normal   Brain": ["loose normal"],
        "polyps": ["exact polyps"], "Polyps": ["loose polyps"],
    })
    assert ensemble.for_classes(["glioma tumor", "normal brain", "polyps"], 1) == [
        ["loose glioma"], ["loose normal"], ["exact polyps"]]


def test_ambiguous_loose_match_counts_as_missing():
    ensemble = PromptEnsemble("TOY", "x", {"kidney_stone": ["a"], "Kidney Stone": ["b"]})
    with pytest.raises(PromptFileError, match="'kidney stone': no prompts"):
        ensemble.for_classes(["kidney stone"], 1)


def test_one_error_lists_every_missing_and_short_class_names_file_and_fix(full_file):
    ensemble = load_prompt_file(full_file)
    with pytest.raises(PromptFileError) as caught:
        ensemble.for_classes(["glioma tumor", "pituitary tumor", "normal brain", "meningioma tumor"], 5)
    message = str(caught.value)
    assert "2 of 4 classes" in message
    assert "'pituitary tumor': no prompts" in message and "'meningioma tumor': no prompts" in message
    assert "'glioma tumor'" not in message.split("Keys in the file")[0]  # it has its 5
    assert str(full_file) in message
    assert "TRAINER.BIOMEDCOOP.PROMPTS" in message
    assert "python -m clip_biomed.prompts generate --classes" in message and "--modality 'brain MRI'" in message

    with pytest.raises(PromptFileError) as caught:
        ensemble.for_classes(["glioma tumor", "normal brain"], 7)
    message = str(caught.value)
    assert "'glioma tumor': only 5 sentences" in message and "'normal brain': only 5 sentences" in message
    assert "7 needed" in message and "N_PROMPTS" in message


def test_n_prompts_must_be_positive(full_file):
    with pytest.raises(PromptFileError, match="at least 1"):
        load_prompt_file(full_file).for_classes(["glioma tumor"], 0)


def test_packaged_dataset_name_resolves_case_insensitively():
    assert "BTMRI" in packaged_datasets()
    exact, lower = load_prompt_file("BTMRI"), load_prompt_file("btmri")
    assert exact == lower and exact.dataset == "BTMRI"
    assert exact.source.endswith("BTMRI.json")


def test_unknown_dataset_name_and_missing_path_say_what_to_do(tmp_path):
    with pytest.raises(PromptFileError) as caught:
        load_prompt_file("NoSuchData")
    assert "NoSuchData" in str(caught.value)
    assert all(name in str(caught.value) for name in packaged_datasets())
    assert "TRAINER.BIOMEDCOOP.PROMPTS" in str(caught.value)
    with pytest.raises(PromptFileError, match="does not exist"):
        load_prompt_file(tmp_path / "absent.json")


def test_malformed_files_are_refused_with_the_reason(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": [', encoding="utf-8")
    with pytest.raises(PromptFileError, match="not valid JSON"):
        load_prompt_file(broken)
    with pytest.raises(PromptFileError, match="holds a JSON list"):
        load_prompt_file(write_json(tmp_path / "list.json", ["a"]))
    bad_types = write_json(tmp_path / "types.json", {"a": ["fine sentence", 3], "b": "not a list", "c": ["  "]})
    with pytest.raises(PromptFileError) as caught:
        load_prompt_file(bad_types)
    message = str(caught.value)
    assert "'a': sentence #2 is a int" in message
    assert "'b': expected a list" in message
    assert "'c': sentence #1 is empty" in message


def test_normalised_sentences_ignore_case_spacing_and_trailing_punctuation():
    assert normalise_sentence("  The  lesion is BRIGHT. ") == normalise_sentence("the lesion is bright!")
    assert normalise_sentence("The lesion is bright") != normalise_sentence("The lesion is dark")


def test_validator_reports_every_kind_of_problem(tmp_path):
    path = write_json(tmp_path / "bad.json", {"dataset": "TOY", "modality": "x", "prompts": {
        "cyst": ["A round cyst.", "a  round CYST", "Shared sentence here.", "", 7],
        "stone": ["shared sentence here", "A bright stone.", "Another stone."],
        "extra": ["Extra class sentence.", "Second extra sentence.", "Third extra sentence."],
    }})
    problems = validate_prompt_file(path, classnames=["cyst", "stone", "tumor"], n_prompts=3)
    expected = [
        "class 'cyst': sentence #4 is empty",
        "class 'cyst': sentence #5 is a int",
        "class 'tumor': missing",
        "class 'cyst': 5 sentences, expected 3",
        "class 'cyst': sentence #2 repeats #1",
        "sentence shared by classes 'cyst', 'stone'",
    ]
    for line in expected:
        assert sum(problem.startswith(line) for problem in problems) == 1, (line, problems)
    assert len(problems) == len(expected), problems  # 'stone' is fine and 'extra' is not asked for
    # without class names every class of the file is checked
    assert any(problem.startswith("class 'extra'") for problem in
               validate_prompt_file(path, n_prompts=2))


def test_validator_accepts_a_good_file_and_reports_unreadable_ones(full_file, tmp_path):
    assert validate_prompt_file(full_file, ["glioma tumor", "normal brain"], n_prompts=5) == []
    assert validate_prompt_file(full_file, n_prompts=None) == []
    (problem,) = validate_prompt_file(tmp_path / "absent.json")
    assert "does not exist" in problem


def test_saved_file_round_trips_in_project_format(tmp_path):
    ensemble = PromptEnsemble("TOY", "dermoscopy", {"nævus": ["A brown nævus with regular borders."]})
    path = tmp_path / "sub" / "toy.json"
    save_prompt_file(ensemble, path)
    text = path.read_text(encoding="utf-8")
    assert "nævus" in text and '\n  "dataset": "TOY"' in text  # ensure_ascii=False, indent 2
    assert load_prompt_file(path) == ensemble
