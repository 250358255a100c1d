"""Datum, DatasetBase (class facts, grouping, few-shot vectors of dassl.md §5.3) and build_dataset."""
import random
from pathlib import Path

import pytest

from clip_biomed.engine.config import get_cfg_default
from clip_biomed.engine.data import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
from clip_biomed.engine.utils import set_random_seed

# dassl.md §5.3: labels interleaved in the order 2,0,1,3 with counts {2: 7, 0: 5, 1: 3, 3: 1}.
COUNTS = {2: 7, 0: 5, 1: 3, 3: 1}


@pytest.fixture
def make_datum(tmp_path):
    def make(label, index=0, domain=0, classname=None):
        path = tmp_path / f"c{label}_{index}.png"
        path.touch()  # Datum only checks that the file exists
        return Datum(str(path), label, domain, classname or f"class{label}")
    return make


@pytest.fixture
def interleaved(make_datum):
    items = []
    for i in range(max(COUNTS.values())):
        items += [make_datum(label, i) for label in COUNTS if i < COUNTS[label]]
    return items


def names(items):
    return " ".join(Path(item.impath).stem for item in items)


def test_interleaved_list_matches_the_reference_order(interleaved):
    assert names(interleaved) == ("c2_0 c0_0 c1_0 c3_0 c2_1 c0_1 c1_1 c2_2 c0_2 c1_2 c2_3 c0_3 c2_4 c0_4 "
                                  "c2_5 c2_6")


ROW_SEED1_K4 = "c2_1 c2_4 c2_0 c2_2 c0_0 c0_3 c0_1 c0_2 c1_0 c1_1 c1_2 c3_0"


def test_fewshot_seed1_two_calls_continue_the_rng(interleaved, capsys):
    base = DatasetBase(train_x=interleaved)
    set_random_seed(1)
    assert names(base.generate_fewshot_dataset(interleaved, num_shots=4)) == ROW_SEED1_K4
    assert names(base.generate_fewshot_dataset(interleaved, num_shots=4)) == (
        "c2_5 c2_3 c2_1 c2_0 c0_3 c0_0 c0_1 c0_2 c1_0 c1_1 c1_2 c3_0")
    assert capsys.readouterr().out == "Creating a 4-shot dataset\n" * 2


def test_fewshot_seed1_repeat_fills_small_classes(interleaved):
    set_random_seed(1)
    result = DatasetBase(train_x=interleaved).generate_fewshot_dataset(interleaved, num_shots=4, repeat=True)
    assert names(result) == "c2_1 c2_4 c2_0 c2_2 c0_0 c0_3 c0_1 c0_2 c1_1 c1_2 c1_0 c1_0 c3_0 c3_0 c3_0 c3_0"


def test_fewshot_seed1_two_sources(interleaved, capsys):
    set_random_seed(1)
    first, second = DatasetBase(train_x=interleaved).generate_fewshot_dataset(interleaved, interleaved, num_shots=2)
    assert names(first) == "c2_1 c2_4 c0_0 c0_2 c1_0 c1_1 c3_0"
    assert names(second) == "c2_6 c2_3 c0_3 c0_4 c1_0 c1_2 c3_0"
    assert capsys.readouterr().out == "Creating a 2-shot dataset\n"  # once per call, not per source


def test_fewshot_seed2_two_calls(interleaved):
    base = DatasetBase(train_x=interleaved)
    set_random_seed(2)
    assert names(base.generate_fewshot_dataset(interleaved, num_shots=4)) == (
        "c2_6 c2_0 c2_5 c2_4 c0_2 c0_1 c0_4 c0_3 c1_0 c1_1 c1_2 c3_0")
    assert names(base.generate_fewshot_dataset(interleaved, num_shots=4)) == (
        "c2_2 c2_4 c2_1 c2_0 c0_4 c0_1 c0_3 c0_2 c1_0 c1_1 c1_2 c3_0")


def test_fewshot_small_class_without_repeat_draws_nothing(make_datum):
    items = [make_datum(0, 0), make_datum(0, 1)]
    random.seed(5)
    state = random.getstate()
    assert DatasetBase(train_x=items).generate_fewshot_dataset(items, num_shots=3) == items
    assert random.getstate() == state


def test_fewshot_class_of_exactly_k_items_is_still_sampled(make_datum):
    items = [make_datum(0, i) for i in range(5)]
    set_random_seed(0)
    result = DatasetBase(train_x=items).generate_fewshot_dataset(items, num_shots=5)
    assert result == random.Random(0).sample(items, 5) and result != items  # permuted by random.sample


def test_fewshot_disabled_returns_inputs_unchanged(interleaved, capsys):
    base = DatasetBase(train_x=interleaved)
    state = random.getstate()
    assert base.generate_fewshot_dataset(interleaved, num_shots=-1) is interleaved
    both = base.generate_fewshot_dataset(interleaved, interleaved, num_shots=0)
    assert isinstance(both, tuple) and both[0] is interleaved and both[1] is interleaved
    assert random.getstate() == state
    assert capsys.readouterr().out == ""


def test_classes_come_from_train_x_only_and_sorted_by_label(make_datum):
    train_x = [make_datum(2, classname="two"), make_datum(0, classname="zero"), make_datum(2, 1, classname="two")]
    test = [make_datum(5, classname="five")]
    dataset = DatasetBase(train_x=train_x, test=test)
    assert dataset.num_classes == 3  # max label + 1, although label 1 is absent
    assert dataset.classnames == ["zero", "two"]
    assert list(dataset.lab2cname.items()) == [(0, "zero"), (2, "two")]
    assert dataset.test is test and dataset.val is None and dataset.train_u is None


def test_empty_train_x_is_a_clear_error():
    with pytest.raises(ValueError, match="train_x is empty"):
        DatasetBase(train_x=[])


def test_split_by_label_and_domain_keep_first_appearance_order(make_datum):
    items = [make_datum(3, 0, domain=1), make_datum(1, 1, domain=0), make_datum(3, 2, domain=0)]
    by_label = DatasetBase.split_dataset_by_label(items)
    assert list(by_label) == [3, 1] and by_label[3] == [items[0], items[2]]
    by_domain = DatasetBase.split_dataset_by_domain(items)
    assert list(by_domain) == [1, 0] and by_domain[0] == [items[1], items[2]]


def test_datum_checks_its_file_and_is_read_only(tmp_path, make_datum):
    with pytest.raises(AssertionError, match="Image file not found"), pytest.warns(UserWarning, match="No file found"):
        Datum(str(tmp_path / "missing.png"))
    with pytest.raises(AssertionError, match="must be a str"):
        Datum(tmp_path / "c0_0.png")
    datum = make_datum(1, domain=2, classname="cat")
    assert (datum.label, datum.domain, datum.classname) == (1, 2, "cat")
    assert set(vars(datum)) == {"_impath", "_label", "_domain", "_classname"}  # Dassl's pickled state
    with pytest.raises(AttributeError):
        datum.label = 3


def test_input_domains_are_checked(make_datum):
    class TwoDomains(DatasetBase):
        domains = ["photo", "sketch"]

    dataset = TwoDomains(train_x=[make_datum(0)])
    dataset.check_input_domains(["photo"], ["sketch"])
    with pytest.raises(ValueError, match=r"must belong to \['photo', 'sketch'\], but got \[art\]"):
        dataset.check_input_domains(["photo"], ["art"])
    with pytest.raises(AssertionError, match="source_domains"):
        dataset.check_input_domains([], ["sketch"])


def test_build_dataset_prints_and_instantiates(make_datum, capsys):
    datum = make_datum(0)

    @DATASET_REGISTRY.register(force=True)
    class EngineDataToyDataset(DatasetBase):
        def __init__(self, cfg):
            super().__init__(train_x=[datum], test=[datum])

    cfg = get_cfg_default()
    cfg.DATASET.NAME = "EngineDataToyDataset"
    assert isinstance(build_dataset(cfg), EngineDataToyDataset)
    assert capsys.readouterr().out == "Loading dataset: EngineDataToyDataset\n"
    cfg.DATASET.NAME = "EngineDataToyDatset"
    with pytest.raises(ValueError, match=r"expected to belong to .*EngineDataToyDataset.*do you mean"):
        build_dataset(cfg)
