"""The published prompt sentences, read from a user's copy of the published repository.

The published code keeps its LLM sentences in ``trainers/prompt_templates.py``: a Python module whose
dict literals map each class name to its sentences (``BIOMEDCOOP_TEMPLATES``; Biomed-DPT's copy of the
file adds ``BIOMEDDPT_TEMPLATES``).  The file is parsed, never executed: the dict is read from the
syntax tree with ``ast.literal_eval``, so only plain literals are accepted.

The project does not ship these sentences (its packaged ensembles are new ones), so reproducing the
paper's numbers needs this conversion: the converted JSON keeps every sentence in its published
order, duplicates included, because sentence i of every class forms "prompt i" of the pruning rule.

    python -m clip_biomed.prompts from-published BiomedCoOp/trainers/prompt_templates.py --out published.json
"""
import ast
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

from clip_biomed.data_tools.catalog import PUBLISHED_DATASETS, PublishedDataset
from clip_biomed.prompts import PromptEnsemble, PromptFileError, match_classnames, normalise_sentence

__all__ = ["PUBLISHED_VARIABLES", "read_published_templates", "convert_published", "Conversion"]

# The dicts of sentences the published files define, and whose they are.
PUBLISHED_VARIABLES = {
    "BIOMEDCOOP_TEMPLATES": "BiomedCoOp (HealthX-Lab/BiomedCoOp, trainers/prompt_templates.py)",
    "BIOMEDDPT_TEMPLATES": "Biomed-DPT (its trainers/prompt_templates.py)",
}


def _assigned_names(tree: ast.Module) -> Dict[str, ast.expr]:
    """Top-level ``NAME = value`` (and ``NAME: T = value``) assignments; a later one replaces an earlier."""
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            values[node.target.id] = node.value
    return values


def read_published_templates(path, variable: str = "BIOMEDCOOP_TEMPLATES") -> Dict[str, List[str]]:
    """``{class name: [sentences]}`` of the dict literal ``variable`` in the Python file ``path``."""
    try:
        source = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PromptFileError(f"Cannot read {path}: {err}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as err:
        raise PromptFileError(f"{path} is not valid Python (line {err.lineno}: {err.msg}); expected the "
                              "published trainers/prompt_templates.py") from None
    assigned = _assigned_names(tree)
    if variable not in assigned:
        dicts = sorted(name for name, value in assigned.items() if isinstance(value, ast.Dict))
        raise PromptFileError(f"{path} defines no {variable}; its top-level dicts: {', '.join(dicts) or 'none'}. "
                              "Pass the dict with --variable (e.g. BIOMEDDPT_TEMPLATES for Biomed-DPT's file)")
    node = assigned[variable]
    try:
        value = ast.literal_eval(node)
    except ValueError:
        raise PromptFileError(f"{path}: {variable} (line {node.lineno}) is not a plain literal; only dict, list "
                              "and string literals are read (the file is never executed)") from None
    if not isinstance(value, dict):
        raise PromptFileError(f"{path}: {variable} is a {type(value).__name__}, expected a dict "
                              "{class name: [sentences]}")
    for classname, sentences in value.items():
        if not (isinstance(classname, str) and isinstance(sentences, list)
                and all(isinstance(s, str) for s in sentences)):
            raise PromptFileError(f"{path}: {variable}[{classname!r}] is not a list of sentences")
    return value


def repeated_sentences(sentences: Sequence[str]) -> int:
    """How many sentences repeat an earlier one (compared as the validator compares them)."""
    return len(sentences) - len({normalise_sentence(s) for s in sentences})


@dataclass
class Conversion:
    """A converted file: the ensemble to write, what was checked, and what does not fit."""

    ensemble: PromptEnsemble
    datasets: List[PublishedDataset]
    provenance: Dict[str, str]  # file, variable and sha256 of the published file, written into the JSON
    problems: List[str] = field(default_factory=list)  # classes a dataset needs that the file cannot serve
    duplicates: Dict[str, int] = field(default_factory=dict)  # class -> sentences repeating an earlier one
    unused: List[str] = field(default_factory=list)  # classes of no converted dataset
    longer: Dict[str, int] = field(default_factory=dict)  # class -> sentences beyond the n_prompts used

    def report(self, n_prompts: int) -> List[str]:
        owner = {name: d.name for d in self.datasets for name in d.classnames}
        lines = [f"{d.name}: {len(d.classnames)} classes x {n_prompts} sentences" for d in self.datasets]
        if self.longer:
            lines.append(f"More than {n_prompts} sentences (the first {n_prompts} are used): "
                         + ", ".join(f"{name} ({count})" for name, count in self.longer.items()))
        if self.duplicates:
            lines.append("Duplicate sentences within a class, KEPT: reproducing the paper needs the same sentences "
                         "in the same order (sentence i of every class is prompt i of the pruning rule):")
            lines += [f"  {name}{f' ({owner[name]})' if name in owner else ''}: {count} of "
                      f"{len(self.ensemble.prompts[name])} repeat an earlier sentence"
                      for name, count in self.duplicates.items()]
        if self.unused:
            lines.append(f"Classes of none of these datasets (kept): {', '.join(self.unused)}")
        return lines


def convert_published(path, variable: str = "BIOMEDCOOP_TEMPLATES", dataset_names: Sequence[str] = (),
                      n_prompts: int = 50) -> Conversion:
    """Read ``variable`` of the published file and check it against the datasets' class names.

    ``dataset_names``: published datasets to serve (default all 11).  One dataset gives a file of its
    classes, named after it; several give one file with every class of the published dict, usable
    for all of them (the loader picks each dataset's classes by name).
    """
    by_name = {d.name.lower(): d for d in PUBLISHED_DATASETS}
    unknown = [name for name in dataset_names if name.lower() not in by_name]
    if unknown:
        raise PromptFileError(f"Unknown dataset(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(d.name for d in PUBLISHED_DATASETS)}")
    datasets = [by_name[name.lower()] for name in dataset_names] or list(PUBLISHED_DATASETS)
    templates = read_published_templates(path, variable)
    problems, used = [], {}
    for dataset in datasets:
        for classname, key in match_classnames(dataset.classnames, templates).items():
            if key is None:
                problems.append(f"{dataset.name}: class {classname!r} has no key in {variable}")
            elif len(templates[key]) < n_prompts:
                problems.append(f"{dataset.name}: class {classname!r} has {len(templates[key])} sentences, "
                                f"{n_prompts} needed")
            else:
                used[key] = classname
    if len(datasets) == 1:
        dataset = datasets[0]
        prompts = {classname: list(templates[key]) for key, classname in used.items()}
        name, modality = dataset.name, dataset.modality
    else:
        prompts = {key: list(sentences) for key, sentences in templates.items()}
        name, modality = f"published {variable}", ""
    provenance = {"file": Path(path).name, "variable": variable,
                  "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    return Conversion(
        ensemble=PromptEnsemble(dataset=name, modality=modality, prompts=prompts, source=str(path)),
        datasets=datasets, provenance=provenance, problems=problems,
        duplicates={k: n for k, n in ((k, repeated_sentences(v)) for k, v in prompts.items()) if n},
        unused=[k for k in prompts if k not in used],
        longer={k: len(v) for k, v in prompts.items() if k in used and len(v) > n_prompts},
    )
