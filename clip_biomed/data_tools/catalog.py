"""The 11 published BiomedCoOp datasets: names, class names in label order, archive sources.

This is the single source of these facts for the downloader, the verifier and the synthetic
writer; the dataset classes in the repository's ``datasets/`` package read class names from the
split files themselves and are checked against this table by the tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

HF_ARCHIVE_BASE = "https://huggingface.co/datasets/TahaKoleilat/BiomedCoOp/resolve/main"


@dataclass(frozen=True)
class PublishedDataset:
    name: str  # DATASET.NAME, the registered class name and the folder name under DATASET.ROOT
    config: str  # configs/datasets/<config>.yaml
    modality: str
    classnames: Tuple[str, ...]  # in label order (not always alphabetical)
    gdrive_id: str

    @property
    def hf_url(self) -> str:
        return f"{HF_ARCHIVE_BASE}/{self.name}.zip"


def class_folder(classname: str) -> str:
    """The image sub-folder of a class in the published archives ("normal OCT scan" -> normal_OCT_scan)."""
    return classname.replace(" ", "_")


PUBLISHED_DATASETS: Tuple[PublishedDataset, ...] = (
    PublishedDataset(
        "BTMRI", "btmri", "brain tumour MRI",
        ("glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"),
        "1_lJLZRUmczqZqoN-dNqkAzGzmi4ONoU5"),
    PublishedDataset(
        "BUSI", "busi", "breast ultrasound",
        ("benign tumor", "malignant tumor", "normal scan"),
        "1hB5M7wcAUTV9EtiYrijACoQ36R6VmQaa"),
    PublishedDataset(
        "CHMNIST", "chmnist", "colorectal histology",
        ("adipose tissue", "complex stroma", "debris", "empty background", "immune cells",
         "normal mucosal glands", "simple stroma", "tumour epithelium"),
        "1tyQiYQmqAGNaY4SCK_8U5vEbbaa1AD-g"),
    PublishedDataset(
        "COVID_19", "covid", "chest X-ray",
        ("covid lungs", "lung opacity lungs", "viral pneumonia lungs", "normal lungs"),
        "1zMLN5q5e_tmH-deSZQiY4Xq0M1EqCrML"),
    PublishedDataset(
        "CTKidney", "ctkidney", "kidney CT",
        ("cyst kidney", "kidney stone", "kidney tumor", "normal kidney"),
        "1PBZ299k--mZL8JU7nhC1Wy8yEmlqmVDh"),
    PublishedDataset(
        "DermaMNIST", "dermamnist", "dermatoscopy",
        ("actinic keratosis", "basal cell carcinoma", "benign keratosis", "dermatofibroma", "melanoma",
         "melanocytic nevus", "vascular lesion"),
        "1Jxd1-DWljunRDZ8fY80dl5zUMefriQXt"),
    PublishedDataset(
        "KneeXray", "kneexray", "knee X-ray",
        ("healthy knee", "doubtful osteoarthritis", "minimal osteoarthritis", "moderate osteoarthritis",
         "severe osteoarthritis"),
        "1DBVraYJmxy2UcQ_nGLYvTB2reITOm453"),
    PublishedDataset(
        "Kvasir", "kvasir", "gastrointestinal endoscopy",
        ("dyed lifted polyps", "dyed resection margins", "esophagitis", "normal cecum", "normal pylorus",
         "normal z line", "polyps", "ulcerative colitis"),
        "1T_cqnNIjmGazNeg6gziarvCNWGsFEkRi"),
    PublishedDataset(
        "LungColon", "lungcolon", "lung and colon histopathology",
        ("colon adenocarcinoma", "colon benign tissue", "lung adenocarcinoma", "lung benign tissue",
         "lung squamous cell carcinoma"),
        "1YIu5fqMXgyemisiL1L1HCvES2nVpCtun"),
    PublishedDataset(
        "OCTMNIST", "octmnist", "retinal OCT",
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal OCT scan"),
        "1mYZNWxbPxnnVvcwHQYybA8gdMzQAoOem"),
    PublishedDataset(
        "RETINA", "retina", "retinal fundus photography",
        ("diabetic retinopathy", "glaucoma", "cataract", "normal retina"),
        "18U-Gc22h5QryomNNzY4r4Qfrq52yf5EO"),
)

_BY_NAME = {entry.name: entry for entry in PUBLISHED_DATASETS}


def published_dataset(name: str) -> PublishedDataset:
    """Look a published dataset up by DATASET.NAME; the error lists the valid names."""
    if name not in _BY_NAME:
        raise ValueError(f"Unknown dataset {name!r}; the published datasets are: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def is_published(name: str) -> bool:
    return name in _BY_NAME
