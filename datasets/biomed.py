"""The 11 datasets of BiomedCoOp. Each is a published archive in the layout SplitJSONDataset reads,
so a dataset is only its registered name (= DATASET.NAME = its folder under DATASET.ROOT)."""
from clip_biomed.dassl import DATASET_REGISTRY

from .base import SplitJSONDataset


@DATASET_REGISTRY.register()
class BTMRI(SplitJSONDataset):
    """Brain tumour MRI: 4 classes."""


@DATASET_REGISTRY.register()
class BUSI(SplitJSONDataset):
    """Breast ultrasound: 3 classes (not part of the base-to-novel benchmark)."""


@DATASET_REGISTRY.register()
class CHMNIST(SplitJSONDataset):
    """Colorectal histology (Kather): 8 classes."""


@DATASET_REGISTRY.register()
class COVID_19(SplitJSONDataset):
    """Chest X-ray (COVID-QU-Ex): 4 classes."""


@DATASET_REGISTRY.register()
class CTKidney(SplitJSONDataset):
    """Kidney CT: 4 classes."""


@DATASET_REGISTRY.register()
class DermaMNIST(SplitJSONDataset):
    """Dermatoscopy (MedMNIST): 7 classes."""


@DATASET_REGISTRY.register()
class KneeXray(SplitJSONDataset):
    """Knee X-ray, Kellgren-Lawrence grades: 5 classes."""


@DATASET_REGISTRY.register()
class Kvasir(SplitJSONDataset):
    """Gastrointestinal endoscopy: 8 classes."""


@DATASET_REGISTRY.register()
class LungColon(SplitJSONDataset):
    """Lung and colon histopathology (LC25000): 5 classes."""


@DATASET_REGISTRY.register()
class OCTMNIST(SplitJSONDataset):
    """Retinal OCT (MedMNIST): 4 classes."""


@DATASET_REGISTRY.register()
class RETINA(SplitJSONDataset):
    """Retinal fundus photographs: 4 classes."""
