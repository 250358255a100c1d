"""``python -m clip_biomed.results OUTPUT_DIR``: the paper's tables and few-shot curves, from the runs' logs.

    python -m clip_biomed.results output                            # print the tables
    python -m clip_biomed.results output --out results --paper      # + Markdown, CSV and PNG files
    python -m clip_biomed.results output --metric macro_f1          # any `* <name>: X%` of the result block

Reads every run folder (one with a ``log.txt``) under OUTPUT_DIR in the published layout
(reference/biomedcoop.md §5, ecosystem.md §5.1):

    <ds>/shots_<K>/<Method>_<Backbone>[/<variant>...]/seed<S>              few-shot (K shots)
    <ds>/<Method>_<Backbone>[/<variant>...][/seed<S>]                      zero-shot (K = 0)
    <ds>/<Trainer>/<cfg>_<K>shots/<variant>/seed<S>                         CoOp's few-shot layout
    base2new/{train_base,test_base,test_new}/<ds>[/shots_<K>]/<Method>_<Backbone>[/...][/seed<S>]

``<variant>`` levels (``nctx4_cscFalse_ctpend``, ``vit_b16``) tell experiments of one method apart.
A run's value is its final result (``clip_biomed.run_logs``): for a training run, the test after
"Finish(ed) training", for an evaluation-only run the "=> result" block.  Base accuracy comes from
``train_base`` (the training run's final test) or ``test_base`` (an evaluation of base classes,
e.g. of released checkpoints), novel accuracy from ``test_new``.

Tables: mean +- std (population std, as parse_test_res.py) over seeds; a cell with fewer seeds than
the table's seeds says so ("2/3 seeds"), an average over datasets that misses a dataset or has an
incomplete cell says so too: nothing is averaged silently.  Base-to-novel averages are given in both
conventions of the literature, each labelled: the harmonic mean of the dataset-averaged base and
novel accuracies, and the mean of the per-dataset harmonic means.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import os.path as osp
import re
import sys
from dataclasses import dataclass, field
from statistics import fmean, pstdev
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from clip_biomed import paper_results
from clip_biomed.run_logs import FINISHED_METRIC, LOG_NAME, run_result

PROTOCOLS = ("few_shot", "base2new")
BASE2NEW_PARTS = {"train_base": "base", "test_base": "base", "test_new": "novel"}
_SHOTS = re.compile(r"shots_(\d+)$")
_SEED = re.compile(r"seed(\d+)$")
_COOP_SHOTS = re.compile(r"_(\d+)shots$")


# --- reading the output tree -------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Row:
    """One line of a table: a method on a backbone, in one configuration (``variant``)."""

    method: str
    backbone: str
    variant: str = ""


@dataclass(frozen=True)
class RunValue:
    protocol: str
    part: str  # "" (few-shot), "base" or "novel"
    dataset: str
    shots: int
    row: Row
    seed: Optional[int]  # None: the layout has no seed level (zero-shot)
    value: float
    log: str
    source: str = ""  # base2new: train_base, test_base or test_new


_PAPER_BACKBONE_SUFFIX = re.compile(rf"(.+?)_?({'|'.join(paper_results.PAPER_BACKBONES)})")


def split_trainer(folder: str, methods: Iterable[str] = ()) -> Tuple[str, str]:
    """(method, backbone) of a trainer folder ``<Method>_<Backbone>``.  Method names may hold ``_``
    (published ``LinearProbe_P2_BiomedCLIP``) and published zero-shot folders have none
    (``ZeroshotBiomedCLIP``), so: a known method name that is a prefix wins, then a paper backbone
    that ends the name, then the first ``_``; a name without either is the method alone."""
    known = [m for m in methods if folder.startswith(m + "_") and len(folder) > len(m) + 1]
    if known:
        method = max(known, key=len)
        return method, folder[len(method) + 1:]
    paper = _PAPER_BACKBONE_SUFFIX.fullmatch(folder)
    if paper:
        return paper.group(1), paper.group(2)
    method, _, backbone = folder.partition("_")
    return method, backbone


def parse_run_path(relative: str, methods: Iterable[str] = ()) -> Optional[dict]:
    """The protocol, dataset, K, row and seed a run folder's path (relative to the output root) says,
    or None when it is not in the published layout."""
    parts = relative.replace(os.sep, "/").split("/")
    protocol, part, source = "few_shot", "", ""
    if parts[0] == "base2new":
        if len(parts) < 2 or parts[1] not in BASE2NEW_PARTS:
            return None
        protocol, part, source, parts = "base2new", BASE2NEW_PARTS[parts[1]], parts[1], parts[2:]
    if len(parts) < 2:
        return None
    dataset, rest = parts[0], parts[1:]
    shots_match = _SHOTS.match(rest[0])
    shots = int(shots_match.group(1)) if shots_match else 0
    if shots_match:
        rest = rest[1:]
    if not rest:
        return None
    seed_match = _SEED.match(rest[-1])
    seed = int(seed_match.group(1)) if seed_match else None
    levels = rest[1:-1] if seed_match else rest[1:]
    coop_shots = [int(m.group(1)) for m in map(_COOP_SHOTS.search, levels) if m]
    if not shots_match and coop_shots:  # CoOp's <ds>/<Trainer>/<cfg>_<K>shots/... layout
        shots = coop_shots[0]
    method, backbone = split_trainer(rest[0], methods)
    return {"protocol": protocol, "part": part, "source": source, "dataset": dataset, "shots": shots,
            "row": Row(method, backbone, "/".join(levels)), "seed": seed}


def backbone_tag(name: str) -> str:
    """The run-folder name of a backbone (``scripts/common.sh``'s ``backbone_tag``): a local-dir:/path
    or hf-hub:org/name backbone is named after its last path part."""
    name = name.strip()
    for prefix in ("local-dir:", "hf-hub:"):
        name = name[len(prefix):] if name.startswith(prefix) else name
    return re.sub(r"[^A-Za-z0-9._-]", "_", name.rstrip("/").rsplit("/", 1)[-1])


def _row_from_run_info(directory: str, row: Row, methods: Iterable[str]) -> Row:
    """The run's own record (``run_info.json``, written by train.py) names its trainer and backbone
    exactly, whatever the folder's naming (``Zeroshot<backbone>2``); the folder name is the fallback."""
    path = osp.join(directory, "run_info.json")
    if not osp.isfile(path):
        return row
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        trainer, configured = info["trainer"], info["config"]["MODEL"]["BACKBONE"]["NAME"]
    except (OSError, ValueError, KeyError, TypeError):
        return row
    method, fixed = split_trainer(trainer, methods)
    return Row(method, fixed or backbone_tag(configured) or row.backbone, row.variant)


@dataclass
class Collected:
    values: List[RunValue] = field(default_factory=list)
    unfinished: List[str] = field(default_factory=list)    # run folders without a final result
    unrecognised: List[str] = field(default_factory=list)  # folders with a log outside the layout


def collect(output_dir: str, metric: str = FINISHED_METRIC, methods: Iterable[str] = ()) -> Collected:
    """Every run folder's final ``metric`` under ``output_dir``."""
    if not osp.isdir(output_dir):
        raise FileNotFoundError(f"{output_dir} is not a directory: give the OUTPUT folder of the runs")
    methods = list(methods)
    found = Collected()
    for directory, subdirs, files in os.walk(output_dir):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        if not any(f == LOG_NAME or f.startswith(LOG_NAME + "-") for f in files):
            continue
        relative = osp.relpath(directory, output_dir)
        where = parse_run_path(relative, methods)
        if where is None:
            found.unrecognised.append(directory)
            continue
        result = run_result(directory, metric)
        if result is None:
            found.unfinished.append(directory)
            continue
        where["row"] = _row_from_run_info(directory, where["row"], methods)
        found.values.append(RunValue(value=result[0], log=result[1], **where))
    return found


# --- cells -------------------------------------------------------------------------------------------

@dataclass
class Cell:
    """The values of one table cell by seed, and how many seeds the table expects."""

    by_seed: Dict[Optional[int], float]
    expected: int

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float:
        return fmean(self.by_seed.values())

    @property
    def std(self) -> float:
        return pstdev(self.by_seed.values())

    @property
    def complete(self) -> bool:
        return self.n >= self.expected

    def text(self) -> str:
        shown = f"{self.mean:.2f} ± {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"
        return shown if self.complete else f"{shown} ({self.n}/{self.expected} seeds)"


def make_cells(values: Sequence[RunValue], key, expected_seeds: Optional[Sequence[int]]) -> Dict[tuple, Cell]:
    """Cells of ``values`` grouped by ``key(value)``; a cell of seeded runs expects the table's seeds
    (``expected_seeds``, default: every seed found in ``values``), a seedless one (zero-shot) one value."""
    seeds = set(expected_seeds or [v.seed for v in values if v.seed is not None])
    cells: Dict[tuple, Cell] = {}
    for value in values:
        cell = cells.setdefault(key(value), Cell({}, 1 if value.seed is None else max(1, len(seeds))))
        cell.by_seed.setdefault(value.seed, value.value)  # test_base sorts before train_base: it wins
    return cells


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


@dataclass
class Average:
    """A mean over datasets, with what it misses."""

    value: Optional[float]
    n: int          # datasets averaged
    total: int      # datasets of the table
    incomplete: int = 0  # averaged datasets whose cell lacks seeds

    @property
    def complete(self) -> bool:
        return self.n == self.total and not self.incomplete

    def text(self) -> str:
        if self.value is None:
            return "—"
        notes = []
        if self.n < self.total:
            notes.append(f"{self.n}/{self.total} datasets")
        if self.incomplete:
            notes.append(f"{self.incomplete} with missing seeds")
        return f"{self.value:.2f}" + (f" ({', '.join(notes)})" if notes else "")


def _datasets(names: Sequence[str]) -> str:
    return f"{len(names)} dataset{'s' if len(names) != 1 else ''} ({', '.join(names)})"


def _label(row: Row, rows: Sequence[Row]) -> str:
    """The method's name, with its variant when the table has several for the same method and backbone."""
    siblings = {r.variant for r in rows if (r.method, r.backbone) == (row.method, row.backbone)}
    return f"{row.method} [{row.variant}]" if len(siblings) > 1 and row.variant else row.method


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _seeds_note(values: Sequence[RunValue], expected_seeds) -> str:
    seeds = sorted(set(expected_seeds or [v.seed for v in values if v.seed is not None]))
    return (f"mean ± std over {len(seeds)} seeds ({', '.join(map(str, seeds))}); a cell with fewer says so"
            if seeds else "one run per cell")


# --- few-shot ----------------------------------------------------------------------------------------

@dataclass
class FewShot:
    metric: str
    cells: Dict[tuple, Cell]  # (row, dataset, shots)
    rows: List[Row]
    datasets: List[str]
    shots: List[int]
    note: str

    def average(self, row: Row, shots: int) -> Average:
        present = [self.cells[(row, d, shots)] for d in self.datasets if (row, d, shots) in self.cells]
        return Average(fmean(c.mean for c in present) if present else None, len(present), len(self.datasets),
                       sum(not c.complete for c in present))


def few_shot_results(values: Sequence[RunValue], metric: str, expected_seeds=None) -> Optional[FewShot]:
    values = [v for v in values if v.protocol == "few_shot"]
    if not values:
        return None
    cells = make_cells(values, lambda v: (v.row, v.dataset, v.shots), expected_seeds)
    return FewShot(metric, cells, sorted({v.row for v in values}), sorted({v.dataset for v in values}),
                   sorted({v.shots for v in values}), _seeds_note(values, expected_seeds))


def _shots_header(shots: Sequence[int]) -> List[str]:
    return [f"K={k}" + (" (zero-shot)" if k == 0 else "") for k in shots]


def few_shot_markdown(fs: FewShot, paper: bool = False) -> str:
    rows = [[_label(r, fs.rows), r.backbone or "—", *[fs.average(r, k).text() for k in fs.shots]] for r in fs.rows]
    if paper:
        table = paper_results.FEW_SHOT
        for label, backbone in paper_results.paper_rows(table, [(r.method, r.backbone) for r in fs.rows]):
            values = table[(label, backbone)]
            rows.append([f"{label} (paper)", backbone, *[f"{values[k]:.2f}" if k in values else "" for k in fs.shots]])
    header = ["Method", "Backbone", *_shots_header(fs.shots)]
    per_dataset = [[d, _label(r, fs.rows), r.backbone or "—",
                    *[fs.cells[(r, d, k)].text() if (r, d, k) in fs.cells else "" for k in fs.shots]]
                   for d in fs.datasets for r in fs.rows if any((r, d, k) in fs.cells for k in fs.shots)]
    parts = [f"### Few-shot {fs.metric} (%), mean over {_datasets(fs.datasets)}",
             markdown_table(header, rows)]
    if paper:
        parts.append(f"(paper): {paper_results.SOURCE}.")
    parts += [f"### Few-shot {fs.metric} (%) per dataset: {fs.note}",
              markdown_table(["Dataset", *header], per_dataset)]
    return "\n\n".join(parts) + "\n"


def few_shot_csv(fs: FewShot) -> Tuple[str, str]:
    """(per-cell CSV, per-method average CSV)."""
    cells, averages = io.StringIO(), io.StringIO()
    writer = csv.writer(cells)
    writer.writerow(["dataset", "method", "backbone", "variant", "shots", "metric", "mean", "std", "n_seeds",
                     "expected_seeds", "seeds", "complete"])
    for (row, dataset, shots), cell in sorted(fs.cells.items()):
        writer.writerow([dataset, row.method, row.backbone, row.variant, shots, fs.metric, f"{cell.mean:.4f}",
                         f"{cell.std:.4f}", cell.n, cell.expected,
                         " ".join(str(s) for s in sorted(s for s in cell.by_seed if s is not None)), cell.complete])
    writer = csv.writer(averages)
    writer.writerow(["method", "backbone", "variant", "shots", "metric", "mean_over_datasets", "n_datasets",
                     "datasets", "datasets_with_missing_seeds", "complete"])
    for row in fs.rows:
        for shots in fs.shots:
            avg = fs.average(row, shots)
            if avg.value is not None:
                writer.writerow([row.method, row.backbone, row.variant, shots, fs.metric, f"{avg.value:.4f}", avg.n,
                                 avg.total, avg.incomplete, avg.complete])
    return cells.getvalue(), averages.getvalue()


def plot_few_shot(fs: FewShot, path: str, paper: bool = False) -> str:
    """Accuracy against K: the mean over datasets, then one panel per dataset; methods run only at
    K = 0 (zero-shot) are dashed horizontal lines; hollow markers are incomplete averages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["average", *fs.datasets] if len(fs.datasets) > 1 else ["average"]
    columns = min(4, len(panels))
    n_rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.4 * n_rows), squeeze=False)
    trained = [k for k in fs.shots if k > 0] or [0]
    for ax, panel in zip(axes.flat, panels):
        for index, row in enumerate(fs.rows):
            colour = f"C{index % 10}"
            label = f"{_label(row, fs.rows)} ({row.backbone})" if row.backbone else _label(row, fs.rows)
            if panel == "average":
                points = [(k, fs.average(row, k)) for k in fs.shots if fs.average(row, k).value is not None]
                xs, ys = [k for k, _ in points], [a.value for _, a in points]
                filled = [a.complete for _, a in points]
            else:
                points = [(k, fs.cells[(row, panel, k)]) for k in fs.shots if (row, panel, k) in fs.cells]
                xs, ys, filled = [k for k, _ in points], [c.mean for _, c in points], [c.complete for _, c in points]
            if not xs:
                continue
            if xs == [0]:
                ax.axhline(ys[0], color=colour, linestyle="--", label=label)
                continue
            ax.plot(xs, ys, color=colour, label=label)
            for x, y, full in zip(xs, ys, filled):
                ax.plot([x], [y], "o", color=colour, markerfacecolor=colour if full else "white")
        if paper and panel == "average":
            for name, backbone in paper_results.paper_rows(paper_results.FEW_SHOT, [(r.method, r.backbone)
                                                                                    for r in fs.rows]):
                values = paper_results.FEW_SHOT[(name, backbone)]
                colour = f"C{next(i for i, r in enumerate(fs.rows) if paper_results.paper_label(r.method) == name) % 10}"
                ks = [k for k in sorted(values) if k in fs.shots] or sorted(values)
                style = dict(color=colour, linestyle=":", label=f"{name} ({backbone}, paper)")
                if ks == [0]:
                    ax.axhline(values[0], **style)
                else:
                    ax.plot([k for k in ks if k > 0], [values[k] for k in ks if k > 0], marker="x", **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(trained, [str(k) for k in trained])
        ax.minorticks_off()
        ax.set_xlabel("shots per class (K)")
        ax.set_ylabel(f"{fs.metric} (%)")
        ax.set_title(f"mean of {len(fs.datasets)} datasets" if panel == "average" else panel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.tight_layout()
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(labels)),
                  fontsize=8, frameon=False)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


# --- base-to-novel -----------------------------------------------------------------------------------

@dataclass
class BaseToNovel:
    metric: str
    base: Dict[tuple, Cell]   # (row, dataset)
    novel: Dict[tuple, Cell]
    rows: List[Row]
    datasets: List[str]
    note: str

    def datasets_of(self, row: Row) -> List[str]:
        return [d for d in self.datasets if (row, d) in self.base or (row, d) in self.novel]

    def per_dataset_hm(self, row: Row, dataset: str) -> Optional[float]:
        if (row, dataset) in self.base and (row, dataset) in self.novel:
            return harmonic_mean(self.base[(row, dataset)].mean, self.novel[(row, dataset)].mean)
        return None

    def averages(self, row: Row) -> Dict[str, Average]:
        """base, novel, hm_of_averages (convention 1), mean_of_hms (convention 2), over the datasets
        that have both a base and a novel value."""
        both = [d for d in self.datasets if self.per_dataset_hm(row, d) is not None]
        total = len(self.datasets)
        incomplete = sum(not (self.base[(row, d)].complete and self.novel[(row, d)].complete) for d in both)
        if not both:
            return {k: Average(None, 0, total) for k in ("base", "novel", "hm_of_averages", "mean_of_hms")}
        base = fmean(self.base[(row, d)].mean for d in both)
        novel = fmean(self.novel[(row, d)].mean for d in both)
        mean_hm = fmean(self.per_dataset_hm(row, d) for d in both)
        return {"base": Average(base, len(both), total, incomplete),
                "novel": Average(novel, len(both), total, incomplete),
                "hm_of_averages": Average(harmonic_mean(base, novel), len(both), total, incomplete),
                "mean_of_hms": Average(mean_hm, len(both), total, incomplete)}


HM_OF_AVERAGES = "HM of the averaged base and novel"
MEAN_OF_HMS = "mean of per-dataset HMs"


def base_to_novel_results(values: Sequence[RunValue], metric: str, expected_seeds=None) -> Optional[BaseToNovel]:
    values = sorted((v for v in values if v.protocol == "base2new"), key=lambda v: v.source != "test_base")
    if not values:
        return None
    seeds = expected_seeds or sorted({v.seed for v in values if v.seed is not None})  # the same for both parts
    base = make_cells([v for v in values if v.part == "base"], lambda v: (v.row, v.dataset), seeds)
    novel = make_cells([v for v in values if v.part == "novel"], lambda v: (v.row, v.dataset), seeds)
    return BaseToNovel(metric, base, novel, sorted({v.row for v in values}), sorted({v.dataset for v in values}),
                       _seeds_note(values, expected_seeds))


def base_to_novel_markdown(b2n: BaseToNovel, paper: bool = False) -> str:
    summary = []
    for row in b2n.rows:
        avg = b2n.averages(row)
        summary.append([_label(row, b2n.rows), row.backbone or "—", avg["base"].text(), avg["novel"].text(),
                        avg["hm_of_averages"].text(), avg["mean_of_hms"].text()])
    if paper:
        table = paper_results.BASE_TO_NOVEL
        for label, backbone in paper_results.paper_rows(table, [(r.method, r.backbone) for r in b2n.rows]):
            b, n, printed = table[(label, backbone)]
            summary.append([f"{label} (paper)", backbone, f"{b:.2f}", f"{n:.2f}", f"{harmonic_mean(b, n):.2f}",
                            f"n/a (the README prints HM {printed:.2f})"])
    header = ["Method", "Backbone", "Base", "Novel", f"HM ({HM_OF_AVERAGES})", f"HM ({MEAN_OF_HMS})"]
    detail = []
    for row in b2n.rows:
        for dataset in b2n.datasets_of(row):
            hm = b2n.per_dataset_hm(row, dataset)
            base, novel = b2n.base.get((row, dataset)), b2n.novel.get((row, dataset))
            detail.append([dataset, _label(row, b2n.rows), row.backbone or "—", base.text() if base else "missing",
                           novel.text() if novel else "missing", f"{hm:.2f}" if hm is not None else "—"])
        avg = b2n.averages(row)
        for name, key in ((HM_OF_AVERAGES, "hm_of_averages"), (MEAN_OF_HMS, "mean_of_hms")):
            detail.append([f"**Average, HM = {name}**", _label(row, b2n.rows), row.backbone or "—",
                           avg["base"].text(), avg["novel"].text(), avg[key].text()])
    parts = [f"### Base-to-novel {b2n.metric} (%), mean over {_datasets(b2n.datasets)}",
             markdown_table(header, summary),
             "Two harmonic means: of the dataset-averaged base and novel accuracies (convention 1), and the "
             "mean of the per-dataset harmonic means (convention 2); the literature uses both."]
    if paper:
        parts.append(f"(paper): {paper_results.SOURCE} (base-to-novel: 10 datasets). Its HM is recomputed here "
                     "as convention 1 from its base and novel; the README prints convention 1 for BiomedCoOp but "
                     "1.5-2.3 points less for its baselines, and no per-dataset values for convention 2.")
    parts += [f"### Base-to-novel {b2n.metric} (%) per dataset: {b2n.note}; HM of the seed-mean base and novel",
              markdown_table(["Dataset", "Method", "Backbone", "Base", "Novel", "HM"], detail)]
    return "\n\n".join(parts) + "\n"


def base_to_novel_csv(b2n: BaseToNovel) -> Tuple[str, str]:
    cells, averages = io.StringIO(), io.StringIO()
    writer = csv.writer(cells)
    writer.writerow(["dataset", "method", "backbone", "variant", "metric", "base_mean", "base_std", "base_seeds",
                     "novel_mean", "novel_std", "novel_seeds", "expected_seeds", "hm", "complete"])
    for row in b2n.rows:
        for dataset in b2n.datasets_of(row):
            base, novel = b2n.base.get((row, dataset)), b2n.novel.get((row, dataset))
            hm = b2n.per_dataset_hm(row, dataset)
            stats = [value for cell in (base, novel)
                     for value in ((f"{cell.mean:.4f}", f"{cell.std:.4f}", cell.n) if cell else ("", "", 0))]
            writer.writerow([dataset, row.method, row.backbone, row.variant, b2n.metric, *stats,
                             (base or novel).expected, f"{hm:.4f}" if hm is not None else "",
                             bool(base and novel and base.complete and novel.complete)])
    writer = csv.writer(averages)
    writer.writerow(["method", "backbone", "variant", "metric", "base", "novel", "hm_of_averages", "mean_of_hms",
                     "n_datasets", "datasets", "datasets_with_missing_seeds", "complete"])
    for row in b2n.rows:
        avg = b2n.averages(row)
        if avg["base"].value is None:
            continue
        writer.writerow([row.method, row.backbone, row.variant, b2n.metric,
                         *(f"{avg[k].value:.4f}" for k in ("base", "novel", "hm_of_averages", "mean_of_hms")),
                         avg["base"].n, avg["base"].total, avg["base"].incomplete, avg["base"].complete])
    return cells.getvalue(), averages.getvalue()


# --- command line ------------------------------------------------------------------------------------

def _known_methods() -> List[str]:
    from clip_biomed.sweep import discover_methods

    return list(discover_methods())


def write_results(output_dir: str, out: Optional[str] = None, protocols: Sequence[str] = PROTOCOLS,
                  metric: str = FINISHED_METRIC, expected_seeds=None, paper: bool = False) -> Dict[str, str]:
    """Print the tables; with ``out`` also write them (Markdown, CSV) and the few-shot curves (PNG).
    Returns {what: path} of the files written."""
    found = collect(output_dir, metric, _known_methods())
    written: Dict[str, str] = {}
    if out:
        os.makedirs(out, exist_ok=True)

    def save(name, text):
        if out:
            written[name] = osp.join(out, name)
            with open(written[name], "w", encoding="utf-8", newline="") as f:
                f.write(text)

    shown = 0
    for protocol, build, markdown, table in (("few_shot", few_shot_results, few_shot_markdown, few_shot_csv),
                                             ("base2new", base_to_novel_results, base_to_novel_markdown,
                                              base_to_novel_csv)):
        summary = build(found.values, metric, expected_seeds) if protocol in protocols else None
        if summary is None:
            continue
        text = markdown(summary, paper)
        print(text)
        cells, averages = table(summary)
        for name, content in ((".md", text), (".csv", cells), ("_average.csv", averages)):
            save(f"{protocol}_{metric}{name}", content)
        if out and protocol == "few_shot":
            written[f"{protocol}_{metric}.png"] = plot_few_shot(summary, osp.join(out, f"{protocol}_{metric}.png"),
                                                                paper)
        shown += 1
    for what, folders in (("without a final result (unfinished or failed; not counted)", found.unfinished),
                          ("with a log outside the published layout (not counted)", found.unrecognised)):
        if folders:
            print(f"{len(folders)} run folders {what}:\n" + "\n".join(f"  {f}" for f in folders))
    if not shown:
        raise LookupError(f"No {' or '.join(protocols)} run under {output_dir} has a '* {metric}: X%' line in its "
                          "result block" + (f"; {len(found.unfinished)} runs have not finished" if found.unfinished
                                            else "") + (" (is the metric's name right?)" if metric != FINISHED_METRIC
                                                        else ""))
    for path in written.values():
        print(f"Wrote {path}")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_biomed.results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the runs' output root (the sweep's --output)")
    parser.add_argument("--protocol", choices=(*PROTOCOLS, "all"), default="all")
    parser.add_argument("--out", help="write Markdown, CSV and PNG files into this folder")
    parser.add_argument("--metric", default=FINISHED_METRIC,
                        help="the `* <name>: X%%` line of the result block to table (default %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="the seeds every cell should have (default: every seed found)")
    parser.add_argument("--paper", action="store_true", help="add the paper's numbers (tables and plot)")
    args = parser.parse_args(argv)
    protocols = PROTOCOLS if args.protocol == "all" else (args.protocol,)
    try:
        write_results(args.output_dir, args.out, protocols, args.metric, args.seeds, args.paper)
    except (FileNotFoundError, LookupError) as error:
        print(f"clip_biomed.results: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
