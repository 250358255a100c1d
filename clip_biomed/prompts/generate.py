"""Write a prompt ensemble with any OpenAI-compatible chat-completions server, and validate files.

    python -m clip_biomed.prompts generate --classes "glioma tumor,normal brain" --dataset BTMRI \\
        --modality "brain MRI" --n 50 --out btmri.json [--base-url URL] [--model NAME]
    python -m clip_biomed.prompts validate btmri.json [--dataset BTMRI | --classes ... | --split-file ...]
    python -m clip_biomed.prompts from-published BiomedCoOp/trainers/prompt_templates.py --out published.json

The server is reached with plain urllib (POST {base_url}/chat/completions, Bearer key), so vLLM,
Ollama, llama.cpp, LM Studio and hosted APIs all work without extra packages. For every class the
model is asked for a JSON array of sentences; replies are parsed leniently, cleaned, de-duplicated
(also against the other classes) and the model is asked again for the missing count.
"""
import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from clip_biomed.prompts import (PromptEnsemble, PromptFileError, has_words, load_prompt_file,
                                 normalise_sentence, packaged_datasets, save_prompt_file, validate_prompt_file)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_HTTP_HINTS = {
    401: "check --api-key / OPENAI_API_KEY",
    403: "check --api-key / OPENAI_API_KEY",
    404: "check that --base-url ends with the API root (often /v1) and that --model exists on the server",
    429: "the server is rate-limiting; wait, or lower the load",
}


class GenerationError(RuntimeError):
    """The server could not be used, or it did not give enough distinct sentences."""


def _excerpt(raw, limit=300):
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class ChatClient:
    """Minimal client of an OpenAI-compatible ``/chat/completions`` endpoint."""

    base_url: str
    model: str
    api_key: str = ""
    timeout: float = 60.0  # seconds per network operation, so a dead server never hangs a run

    @property
    def url(self):
        return self.base_url.rstrip("/") + "/chat/completions"

    def complete(self, messages, temperature):
        """The text of the first choice of one chat completion."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": temperature}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:  # local servers usually need none
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            hint = _HTTP_HINTS.get(err.code, "see the server's log")
            raise GenerationError(f"{self.url} answered HTTP {err.code} {err.reason}: {_excerpt(err.read())} "
                                  f"({hint})") from None
        except (TimeoutError, urllib.error.URLError, OSError) as err:
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            if isinstance(reason, TimeoutError):
                raise GenerationError(f"No answer from {self.url} within {self.timeout:g} s; the server may be "
                                      "overloaded or the model still loading (raise --timeout).") from None
            raise GenerationError(f"Could not reach {self.url}: {reason}. Check --base-url / OPENAI_BASE_URL "
                                  "and that the server is running.") from None
        try:
            return json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise GenerationError(f"{self.url} did not answer with a chat completion: {_excerpt(raw)}") from None


_FENCE_LINE = re.compile(r"^\s*```.*$", re.MULTILINE)
_LIST_MARKER = re.compile(r"^(?:[-*\u2022]|\(?\d+[.):]|\d+\s*-)\s*")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"


def _json_items(text):
    """The strings of a JSON array in the text (or of the first list in a JSON object), else None."""
    candidates = [text]
    if "[" in text and "]" in text:
        candidates.append(text[text.index("["):text.rindex("]") + 1])
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):  # e.g. {"sentences": [...]}
            data = next((value for value in data.values() if isinstance(value, list)), None)
        if isinstance(data, list):
            return [item for item in data if isinstance(item, str)]
    return None


def _line_items(text):
    """Sentences written one per line, with or without numbers, bullets, quotes or commas."""
    items = []
    for line in text.splitlines():
        line = _LIST_MARKER.sub("", line.strip()).strip().rstrip(",").strip(_QUOTES)
        if line and not line.endswith(":"):  # "Here are 10 sentences:" introduces, it is not one
            items.append(line)
    return items


def parse_sentences(reply):
    """Sentences in a model reply: a JSON array (in code fences or not), else one per line."""
    text = _FENCE_LINE.sub("", reply).strip()
    items = _json_items(text)
    if items is None:
        items = _line_items(text)
    return [" ".join(item.split()).strip(_QUOTES) for item in items]


def _messages(classname, classnames, dataset, modality, count, accepted):
    others = [name for name in classnames if name != classname]
    lines = [
        f"Dataset: {dataset}. Imaging modality: {modality}.",
        f"Classes of this dataset: {', '.join(classnames)}.",
        f'Write {count} different sentences describing how the class "{classname}" looks in a {modality} '
        "image: shape, texture, intensity, location, borders and other visible findings.",
        f'Each sentence must be one complete sentence about "{classname}" (6 to 40 words), different from '
        "the others, and must not describe " + (", ".join(others) if others else "other classes") + ".",
    ]
    if accepted:
        lines.append("These sentences are already written; do not repeat them:")
        lines += [f"- {sentence}" for sentence in accepted]
    lines.append(f"Answer with a JSON array of {count} strings and nothing else.")
    return [
        {"role": "system", "content": "You are a radiologist and pathologist who writes precise visual "
                                      "descriptions of medical images, used as text prompts for a "
                                      "biomedical vision-language model."},
        {"role": "user", "content": "\n".join(lines)},
    ]


def generate_ensemble(client, classnames, dataset, modality, n=50, temperature=0.8, max_rounds=5,
                      log=lambda message: print(message, file=sys.stderr)):
    """Ask the model for ``n`` distinct sentences per class; a sentence used by an earlier class
    or repeated within one (compared normalised) is dropped and the missing count asked again."""
    repeated = sorted({name for name in classnames if classnames.count(name) > 1})
    if not classnames or repeated:
        raise GenerationError(f"Give each class once (no classes, or repeated: {', '.join(repeated)}).")
    owner = {}  # normalised sentence -> class that already has it
    prompts = {}
    for classname in classnames:
        accepted = []
        for round_number in range(1, max_rounds + 1):
            missing = n - len(accepted)
            reply = client.complete(_messages(classname, classnames, dataset, modality, missing, accepted),
                                    temperature)
            offered = parse_sentences(reply)
            for sentence in offered:
                normalised = normalise_sentence(sentence)
                if len(accepted) < n and has_words(sentence) and normalised not in owner:
                    owner[normalised] = classname
                    accepted.append(sentence)
            log(f"[{dataset}] {classname}: round {round_number}: {len(offered)} offered, "
                f"{len(accepted)}/{n} kept so far")
            if len(accepted) == n:
                break
        else:
            raise GenerationError(
                f"Class {classname!r}: only {len(accepted)}/{n} distinct sentences after {max_rounds} rounds "
                f"from model {client.model!r}. Raise --max-rounds or --temperature, or try another --model.")
        prompts[classname] = accepted
    return PromptEnsemble(dataset=dataset, modality=modality, prompts=prompts)


def classnames_from_split(path):
    """Class names of a Dassl/CoOp split file (entries [impath, label, classname]), in label order."""
    try:
        split = json.loads(Path(path).read_text(encoding="utf-8"))
        names = {}
        for items in split.values():
            for _impath, label, classname in items:
                if names.setdefault(int(label), classname) != classname:
                    raise GenerationError(f"Split file {path}: label {label} is named both "
                                          f"{names[int(label)]!r} and {classname!r}.")
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise GenerationError(f"Cannot read class names from split file {path}: {err}. Expected "
                              '{"train": [[impath, label, classname], ...], "val": [...], "test": [...]}.') from None
    return [names[label] for label in sorted(names)]


def dataset_from_config(path):
    """DATASET.NAME of a dataset config YAML (configs/datasets/<name>.yaml)."""
    try:
        name = yaml.safe_load(Path(path).read_text(encoding="utf-8"))["DATASET"]["NAME"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise GenerationError(f"Cannot read DATASET.NAME from dataset config {path}: {err!r}.") from None
    return str(name)


def _packaged_classnames(dataset):
    if dataset not in packaged_datasets():
        raise GenerationError(f"Dataset {dataset!r} has no packaged prompt file to take class names from; "
                              "give --classes or --split-file.")
    return list(load_prompt_file(dataset).prompts)


def _target(args):
    """(dataset name, class names) from the class-source options; (None, None) when none is given."""
    if args.split_file:
        stem = re.fullmatch(r"split_(.+)\.json", Path(args.split_file).name)
        return args.dataset or (stem.group(1) if stem else None), classnames_from_split(args.split_file)
    if args.classes:
        return args.dataset, [name.strip() for name in args.classes.split(",") if name.strip()]
    dataset = args.dataset or (dataset_from_config(args.dataset_config) if args.dataset_config else None)
    return dataset, (_packaged_classnames(dataset) if dataset else None)


def _run_generate(args):
    dataset, classnames = _target(args)
    if not dataset:
        raise GenerationError("Name the dataset with --dataset (it is written into the file).")
    modality = args.modality or (load_prompt_file(dataset).modality if dataset in packaged_datasets() else "")
    if not modality:
        raise GenerationError('Give the imaging modality with --modality (e.g. "brain MRI").')
    if not args.model:
        raise GenerationError("Give the model name with --model or OPENAI_MODEL.")
    client = ChatClient(base_url=args.base_url, model=args.model, api_key=args.api_key, timeout=args.timeout)
    ensemble = generate_ensemble(client, classnames, dataset, modality, n=args.n,
                                 temperature=args.temperature, max_rounds=args.max_rounds)
    save_prompt_file(ensemble, args.out)
    print(f"Wrote {args.out}: {len(classnames)} classes x {args.n} sentences.")
    return 0


def _run_validate(args):
    _dataset, classnames = _target(args)
    problems = validate_prompt_file(args.file, classnames=classnames, n_prompts=args.n)
    if problems:
        print(f"{args.file}: {len(problems)} problem(s):")
        print("\n".join(f"  - {problem}" for problem in problems))
        return 1
    print(f"{args.file}: OK")
    return 0


def _run_from_published(args):
    from clip_biomed.prompts.published import convert_published

    datasets = [] if args.dataset == "all" else [name.strip() for name in args.dataset.split(",") if name.strip()]
    conversion = convert_published(args.file, args.variable, datasets, n_prompts=args.n)
    print(f"Read {args.variable} from {args.file} (parsed, not executed; sha256 {conversion.provenance['sha256']}): "
          f"{len(conversion.ensemble.prompts)} classes")
    if conversion.problems:
        print(f"{args.file} cannot serve every class ({len(conversion.problems)} problem(s)); nothing written:")
        print("\n".join(f"  - {problem}" for problem in conversion.problems))
        return 1
    print("\n".join(conversion.report(args.n)))
    save_prompt_file(conversion.ensemble, args.out, published_source=conversion.provenance)
    print(f"Wrote {args.out}. Train with the published sentences by adding TRAINER.BIOMEDCOOP.PROMPTS {args.out} "
          f"(and TRAINER.BIOMEDCOOP.N_PROMPTS {args.n}) to the train.py or script options.")
    return 0


def _positive(convert):
    def parse(text):
        value = convert(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _add_class_source(parser):
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--classes", help='comma-separated class names, e.g. "glioma tumor,normal brain"')
    source.add_argument("--split-file", help="a split_<NAME>.json file; its class names, in label order")
    source.add_argument("--dataset-config", help="a dataset YAML (DATASET.NAME); class names of its packaged file")
    parser.add_argument("--dataset", help="dataset name (default: from --dataset-config or split_<NAME>.json); "
                                          "alone, the class names of its packaged prompt file")
    parser.add_argument("--n", type=_positive(int), default=50, help="sentences per class (default 50)")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m clip_biomed.prompts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write a prompt file with an LLM")
    _add_class_source(generate)
    generate.add_argument("--modality", help='imaging modality, e.g. "brain MRI" (default: the packaged file\'s)')
    generate.add_argument("--out", required=True, help="JSON file to write")
    generate.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
                          help=f"API root, e.g. http://127.0.0.1:8000/v1 (env OPENAI_BASE_URL; "
                               f"default {DEFAULT_BASE_URL})")
    generate.add_argument("--model", default=os.environ.get("OPENAI_MODEL"), help="model name (env OPENAI_MODEL)")
    generate.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""),
                          help="API key sent as Bearer token (env OPENAI_API_KEY; prefer the env variable)")
    generate.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    generate.add_argument("--max-rounds", type=_positive(int), default=5,
                          help="requests per class before giving up (default 5)")
    generate.add_argument("--timeout", type=_positive(float), default=60.0,
                          help="seconds to wait for the server per request (default 60)")
    generate.set_defaults(run=_run_generate)

    validate = commands.add_parser("validate", help="check a prompt file; exit status 1 if it has problems")
    validate.add_argument("file", help="prompt JSON file, or a packaged dataset name")
    _add_class_source(validate)
    validate.set_defaults(run=_run_validate)

    from clip_biomed.prompts.published import PUBLISHED_VARIABLES

    published = commands.add_parser(
        "from-published", help="convert the published trainers/prompt_templates.py (parsed, never executed)")
    published.add_argument("file", help="prompt_templates.py of your copy of the published repository")
    published.add_argument("--out", required=True, help="JSON file to write")
    published.add_argument("--variable", default="BIOMEDCOOP_TEMPLATES",
                           help="the dict to read: " + "; ".join(f"{k} = {v}" for k, v in PUBLISHED_VARIABLES.items())
                                + " (default BIOMEDCOOP_TEMPLATES)")
    published.add_argument("--dataset", default="all",
                           help="published dataset(s) to check and serve, comma-separated (default all: one file "
                                "with every class, usable for each of the 11 datasets)")
    published.add_argument("--n", type=_positive(int), default=50,
                           help="sentences each class must have (TRAINER.BIOMEDCOOP.N_PROMPTS, default 50)")
    published.set_defaults(run=_run_from_published)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (GenerationError, PromptFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
