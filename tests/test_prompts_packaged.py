"""Every packaged prompt file: the exact class names of its dataset, 50 distinct sentences per
class, no sentence shared by classes, the project's JSON layout, and CLIP's 77-token context."""
import json
from pathlib import Path

import pytest

from clip_biomed.prompts import load_prompt_file, packaged_datasets, validate_prompt_file
from clip_biomed.prompts.generate import classnames_from_split

SPLITS = Path(__file__).resolve().parents[1].parent / "shared" / "splits"

# Class names in label order (team brief; the published split files where they exist).
CLASSNAMES = {
    "BTMRI": ["glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"],
    "BUSI": ["benign tumor", "malignant tumor", "normal scan"],
    "CHMNIST": ["adipose tissue", "complex stroma", "debris", "empty background", "immune cells",
                "normal mucosal glands", "simple stroma", "tumour epithelium"],
    "COVID_19": ["covid lungs", "lung opacity lungs", "viral pneumonia lungs", "normal lungs"],
    "CTKidney": ["cyst kidney", "kidney stone", "kidney tumor", "normal kidney"],
    "DermaMNIST": ["actinic keratosis", "basal cell carcinoma", "benign keratosis", "dermatofibroma", "melanoma",
                   "melanocytic nevus", "vascular lesion"],
    "KneeXray": ["healthy knee", "doubtful osteoarthritis", "minimal osteoarthritis", "moderate osteoarthritis",
                 "severe osteoarthritis"],
    "Kvasir": ["dyed lifted polyps", "dyed resection margins", "esophagitis", "normal cecum", "normal pylorus",
               "normal z line", "polyps", "ulcerative colitis"],
    "LungColon": ["colon adenocarcinoma", "colon benign tissue", "lung adenocarcinoma", "lung benign tissue",
                  "lung squamous cell carcinoma"],
    "OCTMNIST": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal OCT scan"],
    "RETINA": ["diabetic retinopathy", "glaucoma", "cataract", "normal retina"],
}
N_PROMPTS = 50  # TRAINER.BIOMEDCOOP.N_PROMPTS in every published config


def test_exactly_the_eleven_datasets_are_packaged():
    packaged = set(packaged_datasets())
    assert packaged == set(CLASSNAMES), (f"missing: {sorted(set(CLASSNAMES) - packaged)}, "
                                         f"unexpected: {sorted(packaged - set(CLASSNAMES))}")


@pytest.mark.parametrize("dataset", sorted(set(CLASSNAMES) | set(packaged_datasets())))
def test_packaged_file_is_complete_and_valid(dataset):
    assert dataset in CLASSNAMES, f"{dataset}.json is packaged but is not one of the 11 datasets"
    ensemble = load_prompt_file(dataset)
    assert ensemble.dataset == dataset and ensemble.modality.strip()
    assert sorted(ensemble.prompts) == sorted(CLASSNAMES[dataset])  # exact spelling of every key
    assert validate_prompt_file(dataset, CLASSNAMES[dataset], n_prompts=N_PROMPTS) == []
    assert [len(s) for s in ensemble.for_classes(CLASSNAMES[dataset], N_PROMPTS)] == [N_PROMPTS] * len(
        CLASSNAMES[dataset])


@pytest.mark.parametrize("dataset", sorted(CLASSNAMES))
def test_packaged_file_layout(dataset):
    text = Path(load_prompt_file(dataset).source).read_text(encoding="utf-8")
    data = json.loads(text)
    assert list(data) == ["dataset", "modality", "prompts"]
    assert text.strip() == json.dumps(data, indent=2, ensure_ascii=False).strip()


@pytest.mark.parametrize("dataset", sorted(CLASSNAMES))
def test_class_names_agree_with_the_published_split(dataset):
    split = SPLITS / f"split_{dataset}.json"
    if not split.is_file():
        pytest.skip(f"{split} is not available")
    assert classnames_from_split(split) == CLASSNAMES[dataset]


def test_every_sentence_fits_the_clip_context():
    """CLIP and PubMedCLIP read 77 tokens; a longer sentence would be cut silently."""
    tokenizer = pytest.importorskip("open_clip.tokenizer").SimpleTokenizer()
    too_long = [(dataset, sentence) for dataset in packaged_datasets()
                for sentences in load_prompt_file(dataset).prompts.values() for sentence in sentences
                if len(tokenizer.encode(sentence)) + 2 > 77]  # + start and end tokens
    assert too_long == []
