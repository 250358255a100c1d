"""Batch index samplers (dassl.md §4.4). CoOp-style training uses torch's Random/SequentialSampler.

The domain/class samplers draw from python ``random`` (and numpy for small classes), and compute
their length by running one pass at construction, exactly as Dassl does, so they consume RNG there.
"""
import random
from collections import defaultdict

import numpy as np
from torch.utils.data.sampler import RandomSampler, Sampler, SequentialSampler

__all__ = ["build_sampler", "RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler"]

SAMPLER_TYPES = ["RandomSampler", "SequentialSampler", "RandomDomainSampler", "SeqDomainSampler",
                 "RandomClassSampler"]


def _indices_by(data_source, key):
    """{key(item): [dataset indices]} in first-appearance order."""
    groups = defaultdict(list)
    for index, item in enumerate(data_source):
        groups[key(item)].append(index)
    return groups


class _DomainSampler(Sampler):
    """Each round picks some domains and ``batch_size // n_domain`` unused indices from each; stops
    after the round in which a domain is left with fewer than that."""

    sort_domains = False  # else first-appearance order

    def __init__(self, data_source, batch_size, n_domain):
        self.domain_indices = _indices_by(data_source, lambda item: item.domain)
        self.domains = sorted(self.domain_indices) if self.sort_domains else list(self.domain_indices)
        if n_domain is None or n_domain <= 0:
            n_domain = len(self.domains)
        assert batch_size % n_domain == 0, (
            f"batch_size ({batch_size}) must be divisible by the number of domains per batch ({n_domain})"
        )
        self.n_domain = n_domain
        self.n_img_per_domain = batch_size // n_domain
        self.length = len(list(self.__iter__()))

    def _domains_of_round(self):
        raise NotImplementedError

    def __iter__(self):
        remaining = {domain: list(indices) for domain, indices in self.domain_indices.items()}
        final_indices = []
        exhausted = False
        while not exhausted:
            for domain in self._domains_of_round():
                selected = random.sample(remaining[domain], self.n_img_per_domain)
                final_indices.extend(selected)
                for index in selected:
                    remaining[domain].remove(index)
                exhausted = exhausted or len(remaining[domain]) < self.n_img_per_domain
        return iter(final_indices)

    def __len__(self):
        return self.length


class RandomDomainSampler(_DomainSampler):
    """``n_domain`` randomly chosen domains per batch (all domains if ``n_domain`` <= 0)."""

    def _domains_of_round(self):
        return random.sample(self.domains, self.n_domain)


class SeqDomainSampler(_DomainSampler):
    """Every domain, in sorted order, in every batch."""

    sort_domains = True

    def __init__(self, data_source, batch_size):
        super().__init__(data_source, batch_size, n_domain=0)

    def _domains_of_round(self):
        return self.domains


class RandomClassSampler(Sampler):
    """Batches of ``batch_size // n_ins`` random labels with ``n_ins`` instances each."""

    def __init__(self, data_source, batch_size, n_ins):
        if batch_size < n_ins:
            raise ValueError(f"batch_size={batch_size} must be no less than n_ins={n_ins}")
        self.n_ins = n_ins
        self.ncls_per_batch = batch_size // n_ins
        self.label_indices = _indices_by(data_source, lambda item: item.label)
        self.labels = list(self.label_indices)
        assert len(self.labels) >= self.ncls_per_batch, (
            f"{len(self.labels)} labels cannot fill batches of {self.ncls_per_batch} labels: "
            f"lower batch_size or raise n_ins"
        )
        self.length = len(list(self.__iter__()))

    def __iter__(self):
        chunks = defaultdict(list)
        for label in self.labels:
            indices = list(self.label_indices[label])
            if len(indices) < self.n_ins:
                indices = [int(i) for i in np.random.choice(indices, size=self.n_ins, replace=True)]
            random.shuffle(indices)
            usable = len(indices) - len(indices) % self.n_ins
            chunks[label] = [indices[i:i + self.n_ins] for i in range(0, usable, self.n_ins)]
        available = list(self.labels)
        final_indices = []
        while len(available) >= self.ncls_per_batch:
            for label in random.sample(available, self.ncls_per_batch):
                final_indices.extend(chunks[label].pop(0))
                if not chunks[label]:
                    available.remove(label)
        return iter(final_indices)

    def __len__(self):
        return self.length


def build_sampler(sampler_type, cfg=None, data_source=None, batch_size=32, n_domain=0, n_ins=16):
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type == "RandomDomainSampler":
        return RandomDomainSampler(data_source, batch_size, n_domain)
    if sampler_type == "SeqDomainSampler":
        return SeqDomainSampler(data_source, batch_size)
    if sampler_type == "RandomClassSampler":
        return RandomClassSampler(data_source, batch_size, n_ins)
    raise ValueError(f"Unknown sampler type: {sampler_type} (choose one of {SAMPLER_TYPES})")
