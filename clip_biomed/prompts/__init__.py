"""LLM prompt ensembles: the packaged ``<DATASET>.json`` files, their loader and their validator.

BiomedCoOp's teacher (and the zero-shot ensembles) encode, for every class, N_PROMPTS descriptive
sentences written by an LLM. Sentence i of every class forms "prompt i", so the loader returns
the first ``n_prompts`` sentences of each class in the order the file lists them.

File format (docs/prompts.md)::

    {"dataset": "BTMRI", "modality": "brain MRI",
     "prompts": {"glioma tumor": ["sentence 1", ...], ...}}

A plain ``{"classname": ["sentence", ...]}`` object is accepted too, for users' own files.

This module stays free of torch so that the CLI and the validator start fast.
"""
import importlib.resources
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from clip_biomed.data_tools.files import atomic_write

__all__ = [
    "PromptEnsemble", "PromptFileError", "load_prompt_file", "validate_prompt_file", "find_problems",
    "save_prompt_file", "packaged_datasets", "normalise_sentence", "has_words", "match_classnames",
    "sentences_for", "generate_command",
]


# Where a trainer's PROMPTS / N_PROMPTS keys live, for error messages (BiomedCoOp's by default).
DEFAULT_CONFIG_NODE = "TRAINER.BIOMEDCOOP"


class PromptFileError(ValueError):
    """A prompt file cannot be read, or cannot serve the classes asked of it."""


def normalise_sentence(sentence):
    """The form under which two sentences count as duplicates: case, runs of whitespace and
    trailing punctuation do not make a sentence new."""
    return " ".join(sentence.split()).lower().rstrip(" .,;:!?")


def has_words(sentence):
    """True when the sentence contains at least one letter (not only spaces, digits or marks)."""
    return re.search(r"[^\W\d_]", sentence) is not None


def _loose_classname(name):
    return " ".join(name.replace("_", " ").split()).lower()


def match_classnames(classnames, keys):
    """Map each class name to the key of ``keys`` that holds its prompts, or None.

    An exact key wins; otherwise a key equal up to case, underscores and whitespace
    ("Glioma_Tumor" for "glioma tumor") is used when it is the only such key.
    """
    keys = list(keys)
    loose_index = {}
    for key in keys:
        loose_index.setdefault(_loose_classname(key), []).append(key)
    matches = {}
    for name in classnames:
        if name in keys:
            matches[name] = name
        else:
            candidates = loose_index.get(_loose_classname(name), [])
            matches[name] = candidates[0] if len(candidates) == 1 else None
    return matches


@dataclass
class PromptEnsemble:
    """The LLM sentences of one dataset. ``source`` names the file, for error messages."""

    dataset: str
    modality: str
    prompts: dict  # classname -> list of sentences
    source: str = field(default="", compare=False)

    def for_classes(self, classnames, n_prompts, config_node=DEFAULT_CONFIG_NODE):
        """The first ``n_prompts`` sentences of every class, in the order of ``classnames``.

        Raises one PromptFileError that lists every class without prompts and every class with
        fewer than ``n_prompts`` sentences, and says how to fix the file (``config_node``: where
        the caller's PROMPTS and N_PROMPTS keys are, for the message).
        """
        if n_prompts < 1:
            raise PromptFileError(f"n_prompts must be at least 1, got {n_prompts} "
                                  f"({config_node}.N_PROMPTS).")
        matches = match_classnames(classnames, self.prompts)
        shortfalls = []
        for name, key in matches.items():
            if key is None:
                shortfalls.append(f"  - {name!r}: no prompts (no key matches it)")
            elif len(self.prompts[key]) < n_prompts:
                shortfalls.append(f"  - {name!r}: only {len(self.prompts[key])} sentences "
                                  f"under key {key!r}, {n_prompts} needed")
        if shortfalls:
            raise PromptFileError(self._shortfall_message(classnames, n_prompts, shortfalls, config_node))
        return [list(self.prompts[matches[name]][:n_prompts]) for name in classnames]

    def _shortfall_message(self, classnames, n_prompts, shortfalls, config_node):
        generate = generate_command(classnames, self.dataset, self.modality, n_prompts, "my_prompts.json")
        return "\n".join([
            f"Prompt file {self.source or '<in memory>'} (dataset {self.dataset!r}) cannot give "
            f"{n_prompts} prompts to {len(shortfalls)} of {len(classnames)} classes:",
            *shortfalls,
            f"Keys in the file: {', '.join(map(repr, self.prompts)) or '(none)'}.",
            f"Fix: set {config_node}.PROMPTS to a JSON file with {n_prompts} sentences for every "
            "class (format: docs/prompts.md), for example one generated with",
            f"  {generate}",
            f"or lower {config_node}.N_PROMPTS.",
        ])


def generate_command(classnames, dataset, modality, n_prompts, out):
    """The ``generate`` command writing ``n_prompts`` sentences for each of ``classnames``."""
    return (f"python -m clip_biomed.prompts generate --classes {shlex.quote(','.join(classnames))} "
            f"--dataset {shlex.quote(dataset or '<NAME>')} "
            f"--modality {shlex.quote(modality or '<imaging modality, e.g. chest X-ray>')} --n {n_prompts} "
            f"--out {shlex.quote(out)} --base-url <your server, e.g. http://localhost:8000/v1> --model <model name>")


def sentences_for(source, dataset, classnames, n_prompts):
    """The first ``n_prompts`` sentences of every class (``[n_cls][n_prompts]``), from ``source`` (a
    path or packaged dataset name) or, when it is empty, from the packaged file of ``dataset``.

    Without a source and without a packaged file (your own data), the error lists the classes and
    gives the command that writes their prompts and the option that uses them.
    """
    packaged = {name.lower() for name in packaged_datasets()}
    if not source and dataset.lower() not in packaged:
        out = f"prompts/{dataset}.json"
        raise PromptFileError("\n".join([
            f"No prompt ensemble for dataset {dataset!r}: BiomedCoOp's teacher needs {n_prompts} LLM-written "
            f"sentences for each of its {len(classnames)} classes ({', '.join(map(repr, classnames))}), and "
            f"only the 11 published datasets come with packaged ones. Write them with any OpenAI-compatible "
            "LLM server (docs/prompts.md):",
            f"  {generate_command(classnames, dataset, '', n_prompts, out)}",
            f"then add the options  TRAINER.BIOMEDCOOP.PROMPTS {out}",
        ]))
    return load_prompt_file(source or dataset).for_classes(classnames, n_prompts)


def packaged_datasets():
    """Names of the datasets that ship a prompt file with the package."""
    folder = importlib.resources.files(__name__)
    return sorted(entry.name[:-len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json"))


def _locate(path_or_dataset_name, config_node=DEFAULT_CONFIG_NODE):
    """The file behind a path, or behind a packaged dataset name (case-insensitive)."""
    text = os.fspath(path_or_dataset_name)
    looks_like_path = (isinstance(path_or_dataset_name, os.PathLike) or text.endswith(".json")
                       or "/" in text or os.sep in text or os.path.isfile(text))
    if looks_like_path:
        if not os.path.isfile(text):
            raise PromptFileError(f"Prompt file {text} does not exist. Give the path of a JSON prompt "
                                  f"file, or one of the packaged dataset names: {', '.join(packaged_datasets())}.")
        return Path(text)
    by_lower_name = {name.lower(): name for name in packaged_datasets()}
    name = text if text in by_lower_name.values() else by_lower_name.get(text.lower())
    if name is None:
        raise PromptFileError(
            f"No packaged prompt file for dataset {text!r}; packaged: {', '.join(packaged_datasets())}. "
            f"Set {config_node}.PROMPTS to your own JSON file (docs/prompts.md) or create one with "
            "`python -m clip_biomed.prompts generate`.")
    return importlib.resources.files(__name__) / f"{name}.json"


def _read(path_or_dataset_name, config_node=DEFAULT_CONFIG_NODE):
    """(dataset, modality, raw prompts object, source) of a file, without checking the sentences."""
    file = _locate(path_or_dataset_name, config_node)
    source = str(file)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PromptFileError(f"Prompt file {source} is not valid JSON: {err}. "
                              "See docs/prompts.md for the format.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PromptFileError(f"Cannot read prompt file {source}: {err}") from None
    if not isinstance(data, dict):
        raise PromptFileError(f"Prompt file {source} holds a JSON {type(data).__name__}; expected an object "
                              '{"dataset", "modality", "prompts": {classname: [sentences]}} or '
                              "{classname: [sentences]} (docs/prompts.md).")
    if isinstance(data.get("prompts"), dict):
        return data.get("dataset", file.name.rsplit(".", 1)[0]), data.get("modality", ""), data["prompts"], source
    return file.name.rsplit(".", 1)[0], "", data, source


def _field_problems(dataset, modality):
    return [f"{field_name!r} must be a string, got {type(value).__name__}"
            for field_name, value in (("dataset", dataset), ("modality", modality))
            if not isinstance(value, str)]


def _structure_problems(prompts):
    """Problems that make the prompts unusable: wrong types, empty sentences."""
    problems = []
    for classname, sentences in prompts.items():
        if not classname.strip():
            problems.append("an empty class name is a key of the prompts")
        if not isinstance(sentences, list):
            problems.append(f"class {classname!r}: expected a list of sentences, got {type(sentences).__name__}")
            continue
        for number, sentence in enumerate(sentences, start=1):
            if not isinstance(sentence, str):
                problems.append(f"class {classname!r}: sentence #{number} is a {type(sentence).__name__}, "
                                "not a string")
            elif not has_words(sentence):
                problems.append(f"class {classname!r}: sentence #{number} is empty ({sentence!r})")
    return problems


def find_problems(prompts, classnames=None, n_prompts=50):
    """Every problem of a ``{classname: [sentences]}`` object, as readable lines.

    Checks types and empty sentences; that every class of ``classnames`` has a key (matched as
    the loader matches); that every checked class has exactly ``n_prompts`` sentences (None: any
    number); duplicates within a class and sentences shared by classes (compared normalised).
    """
    problems = _structure_problems(prompts)
    if classnames is None:
        checked = [key for key in prompts if isinstance(prompts[key], list)]
    else:
        matches = match_classnames(classnames, prompts)
        problems += [f"class {name!r}: missing (no key matches it; keys: {', '.join(map(repr, prompts))})"
                     for name, key in matches.items() if key is None]
        checked = [key for key in matches.values() if key is not None and isinstance(prompts[key], list)]
    owners = {}  # normalised sentence -> classes using it
    for key in checked:
        sentences = prompts[key]
        if n_prompts is not None and len(sentences) != n_prompts:
            problems.append(f"class {key!r}: {len(sentences)} sentences, expected {n_prompts}")
        first_number = {}
        for number, sentence in enumerate(sentences, start=1):
            if not isinstance(sentence, str) or not has_words(sentence):
                continue
            normalised = normalise_sentence(sentence)
            if normalised in first_number:
                problems.append(f"class {key!r}: sentence #{number} repeats #{first_number[normalised]}: "
                                f"{sentence!r}")
                continue
            first_number[normalised] = number
            owners.setdefault(normalised, []).append(key)
    problems += [f"sentence shared by classes {', '.join(map(repr, classes))}: {normalised!r}"
                 for normalised, classes in owners.items() if len(classes) > 1]
    return problems


def validate_prompt_file(path, classnames=None, n_prompts=50):
    """Problems of a prompt file (a path or a packaged dataset name); an empty list means valid.

    Never raises for a bad file: unreadable or malformed files give one problem line.
    """
    try:
        dataset, modality, prompts, _source = _read(path)
    except PromptFileError as err:
        return [str(err)]
    return _field_problems(dataset, modality) + find_problems(prompts, classnames, n_prompts)


def load_prompt_file(path_or_dataset_name, config_node=DEFAULT_CONFIG_NODE):
    """Load a prompt file: a path to a user JSON file, or a packaged dataset name ("BTMRI").

    Raises PromptFileError for files that cannot be used at all (wrong types, empty sentences);
    coverage of the classes is checked by ``PromptEnsemble.for_classes``.  ``config_node`` names
    the caller's PROMPTS key in the message when there is no such file.
    """
    dataset, modality, prompts, source = _read(path_or_dataset_name, config_node)
    problems = _field_problems(dataset, modality) + _structure_problems(prompts)
    if problems:
        raise PromptFileError(f"Prompt file {source} is malformed:\n" + "\n".join(f"  - {p}" for p in problems)
                              + "\nSee docs/prompts.md for the format.")
    return PromptEnsemble(dataset=dataset, modality=modality,
                          prompts={name: list(sentences) for name, sentences in prompts.items()}, source=source)


def save_prompt_file(ensemble, path, **fields):
    """Write an ensemble in the project format (UTF-8, indent 2, non-ASCII kept as is); ``fields``
    are extra top-level entries (e.g. where the sentences come from), ignored by the loader."""
    data = {"dataset": ensemble.dataset, "modality": ensemble.modality, **fields, "prompts": ensemble.prompts}
    with atomic_write(path, encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
