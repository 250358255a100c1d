"""Dassl-compatible data pipeline: datasets, transforms, samplers, loaders (dassl.md §4-§5)."""
from clip_biomed.engine.data.data_manager import DataManager, DatasetWrapper, build_data_loader
from clip_biomed.engine.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
from clip_biomed.engine.data.samplers import build_sampler
from clip_biomed.engine.data.transforms import INTERPOLATION_MODES, build_transform

__all__ = [
    "Datum", "DatasetBase", "DATASET_REGISTRY", "build_dataset", "build_transform", "INTERPOLATION_MODES",
    "build_sampler", "DataManager", "DatasetWrapper", "build_data_loader",
]
