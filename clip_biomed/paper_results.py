"""The numbers the BiomedCoOp paper's repository reports (reference/biomedcoop.md §8), as data.

All on the 11-dataset benchmark (base-to-novel: 10 datasets), mean of 3 seeds, accuracy in %.
``python -m clip_biomed.results --paper`` puts them next to a sweep's averages; a method of the
results is matched to a paper row by its name with case and punctuation ignored (``PAPER_NAMES``).
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Tuple

SOURCE = "BiomedCoOp paper (its README and overview figure): mean of 11 datasets, 3 seeds"

# (paper label, backbone) -> {K: accuracy}; K = 0 is the zero-shot model (§8.1, §8.3)
FEW_SHOT: Dict[Tuple[str, str], Dict[int, float]] = {
    ("Zero-shot", "BiomedCLIP"): {0: 42.05},
    ("Zero-shot", "CLIP"): {0: 24.42},
    ("Zero-shot", "PubMedCLIP"): {0: 27.24},
    ("Zero-shot", "PMCCLIP"): {0: 20.92},
    ("CLIP-Adapter", "BiomedCLIP"): {1: 44.66, 2: 43.91, 4: 44.36, 8: 45.42, 16: 46.69},
    ("Tip-Adapter", "BiomedCLIP"): {1: 49.19, 2: 52.36, 4: 57.33, 8: 61.98, 16: 67.15},
    ("Tip-Adapter-F", "BiomedCLIP"): {1: 51.17, 2: 52.74, 4: 61.23, 8: 65.91, 16: 70.91},
    ("Standard LP", "BiomedCLIP"): {1: 47.25, 2: 54.21, 4: 61.00, 8: 65.85, 16: 69.40},
    ("LP++", "BiomedCLIP"): {1: 47.24, 2: 53.18, 4: 59.02, 8: 63.69, 16: 68.35},
    ("CoOp", "BiomedCLIP"): {1: 50.16, 2: 54.18, 4: 59.75, 8: 65.84, 16: 69.62},
    ("CoCoOp", "BiomedCLIP"): {1: 48.49, 2: 51.28, 4: 54.69, 8: 61.08, 16: 65.09},
    ("KgCoOp", "BiomedCLIP"): {1: 50.85, 2: 53.18, 4: 57.82, 8: 62.08, 16: 62.84},
    ("ProGrad", "BiomedCLIP"): {1: 51.88, 2: 54.71, 4: 60.42, 8: 65.61, 16: 67.13},
    ("BiomedCoOp", "BiomedCLIP"): {1: 57.03, 2: 59.13, 4: 63.95, 8: 68.32, 16: 72.42},
    ("BiomedCoOp", "CLIP"): {1: 42.11, 2: 44.52, 4: 53.48, 8: 56.36, 16: 62.37},
    ("BiomedCoOp", "PubMedCLIP"): {1: 44.54, 2: 47.76, 4: 55.68, 8: 61.78, 16: 67.3},
    ("BiomedCoOp", "PMCCLIP"): {1: 35.3, 2: 39.77, 4: 44.46, 8: 47.21, 16: 52.42},
}

# (paper label, backbone) -> (base, novel, HM) (§8.2; the README's HM column as printed)
BASE_TO_NOVEL: Dict[Tuple[str, str], Tuple[float, float, float]] = {
    ("Zero-shot", "BiomedCLIP"): (47.84, 65.42, 53.81),
    ("CoOp", "BiomedCLIP"): (73.85, 64.75, 67.23),
    ("CoCoOp", "BiomedCLIP"): (72.26, 67.03, 67.22),
    ("KgCoOp", "BiomedCLIP"): (68.36, 64.08, 64.61),
    ("ProGrad", "BiomedCLIP"): (71.67, 66.93, 67.43),
    ("BiomedCoOp", "BiomedCLIP"): (76.26, 73.92, 75.07),
}

# method name (lower case, letters and digits only) -> paper label
PAPER_NAMES = {
    "zeroshot": "Zero-shot", "clipadapter": "CLIP-Adapter", "tipadapter": "Tip-Adapter",
    "tipadapterf": "Tip-Adapter-F", "linearprobe": "Standard LP", "lp": "Standard LP", "linearprobep2": "LP++",
    "lpplusplus": "LP++", "lppp": "LP++", "coop": "CoOp", "cocoop": "CoCoOp", "kgcoop": "KgCoOp",
    "prograd": "ProGrad", "biomedcoop": "BiomedCoOp",
}


# the backbones of the paper's tables, by their names in this project
PAPER_BACKBONES = tuple(dict.fromkeys(backbone for _, backbone in FEW_SHOT))


def paper_label(method: str) -> Optional[str]:
    """The paper's name of ``method`` (e.g. ``ClipAdapter`` -> ``CLIP-Adapter``), or None."""
    return PAPER_NAMES.get(re.sub(r"[^a-z0-9]", "", method.lower()))


def paper_rows(table: Dict[Tuple[str, str], object], rows: Iterable[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """The keys of ``table`` to show next to result rows ``(method, backbone)``: the paper's row of the
    same method and backbone; for a backbone the paper does not have (a local copy, a newer model),
    its BiomedCLIP row."""
    wanted = set()
    for method, backbone in rows:
        label = paper_label(method)
        wanted.add((label, backbone if backbone in PAPER_BACKBONES else "BiomedCLIP"))
    return [key for key in table if key in wanted]
