"""Dataset records, the dataset base class and its few-shot sampler (dassl.md §4.1, §5.1-§5.3).

Few-shot subsets must come out exactly as Dassl draws them, so ``generate_fewshot_dataset`` uses
python's global ``random`` in the same order (labels in first-appearance order, ``random.sample``
even when a class has exactly K items).
"""
import random
from collections import defaultdict

from clip_biomed.engine.registry import Registry, build_registered
from clip_biomed.engine.utils import check_isfile

__all__ = ["Datum", "DatasetBase", "DATASET_REGISTRY", "build_dataset"]

DATASET_REGISTRY = Registry("DATASET")


def build_dataset(cfg):
    """Instantiate the dataset class registered under ``cfg.DATASET.NAME``."""
    return build_registered(DATASET_REGISTRY, cfg.DATASET.NAME, "dataset", cfg.VERBOSE, cfg)


class Datum:
    """One labelled image. The private attribute names match Dassl's (its pickles store them)."""

    def __init__(self, impath="", label=0, domain=0, classname=""):
        assert isinstance(impath, str), f"Datum impath must be a str path, got {type(impath).__name__}"
        assert check_isfile(impath), (
            f'Image file not found: "{impath}" (check DATASET.ROOT and that the dataset is fully extracted)'
        )
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self):
        return self._impath

    @property
    def label(self):
        return self._label

    @property
    def domain(self):
        return self._domain

    @property
    def classname(self):
        return self._classname


class DatasetBase:
    """Holds the train_x/train_u/val/test lists of ``Datum``.

    ``num_classes``, ``lab2cname`` and ``classnames`` come from ``train_x`` alone, as in Dassl.
    """

    dataset_dir = ""  # the dataset's folder under DATASET.ROOT
    domains = []  # domain names, for multi-domain datasets

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self._classnames

    @property
    def num_classes(self):
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source):
        """Largest label + 1 (not the number of distinct labels)."""
        if not data_source:
            raise ValueError("train_x is empty: the dataset needs at least one training item to know its classes")
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source):
        """Return ({label: classname} in sorted-label order, [classnames in sorted-label order]).

        Dassl builds the dict from a set, so its order (and the winner when one label has two
        names) varies between runs; here the order is sorted and the first name seen wins.
        """
        first_name = {}
        for item in data_source:
            first_name.setdefault(item.label, item.classname)
        lab2cname = {label: first_name[label] for label in sorted(first_name)}
        return lab2cname, list(lab2cname.values())

    def check_input_domains(self, source_domains, target_domains):
        assert len(source_domains) > 0, "source_domains (list) is empty: set DATASET.SOURCE_DOMAINS"
        assert len(target_domains) > 0, "target_domains (list) is empty: set DATASET.TARGET_DOMAINS"
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains):
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def download_data(self, url, dst, from_gdrive=True):
        raise NotImplementedError(
            "DatasetBase.download_data is not provided by the built-in engine; download datasets with "
            "the project's downloader in clip_biomed.data_tools (see the README's data section)"
        )

    @staticmethod
    def split_dataset_by_label(data_source):
        """{label: [items]} with labels in first-appearance order and items in their original order."""
        return _group_by(data_source, lambda item: item.label)

    @staticmethod
    def split_dataset_by_domain(data_source):
        """{domain: [items]} with domains in first-appearance order and items in their original order."""
        return _group_by(data_source, lambda item: item.domain)

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False):
        """Keep ``num_shots`` items per label of each source, drawn with python's global ``random``.

        A class with fewer items is kept whole (no draw) unless ``repeat``, which fills it up by
        sampling with replacement. ``num_shots < 1`` returns the input unchanged.
        """
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            subset = []
            for items in self.split_dataset_by_label(data_source).values():
                if len(items) >= num_shots:
                    subset.extend(random.sample(items, num_shots))
                elif repeat:
                    subset.extend(random.choices(items, k=num_shots))
                else:
                    subset.extend(items)
            output.append(subset)
        return output[0] if len(output) == 1 else output


def _group_by(data_source, key):
    groups = defaultdict(list)
    for item in data_source:
        groups[key(item)].append(item)
    return groups
