"""The feature-based methods (CLIP-Adapter, Tip-Adapter(-F), linear probe, LP++): each learns from
separable synthetic features, each published defect's fix (and the key that restores the published
behaviour) is checked, and every launch script runs one seed through train.py and is parsed."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import train
from clip_biomed.backbones.testing import tiny_name
from clip_biomed.dassl import TRAINER_REGISTRY, build_trainer
from clip_biomed.feature_trainer import BestOnVal
from trainers.linear_probe import search_c
from trainers.linear_probe_p2 import alpha_step_size, class_centroids, initial_alpha
from trainers.tip_adapter import search_beta_alpha, search_grid, tip_logits

PLUGINS = train.import_plugins([])
FAST = ["INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "10"]
CONFIGS = {"ClipAdapter": "ClipAdapter", "TIPAdapter": "TIPAdapter", "TIPAdapterTrainingFree": "TIPAdapter",
           "LinearProbe": "LinearProbe", "LinearProbe_P2": "LinearProbe_P2"}
N_SHOTS, N_CLASSES, DIM = 4, 4, 32  # 4-shot synthetic BTMRI, the tiny models' feature width


def make_feature_trainer(root, model_dir, out_dir, method, *opts, seed=1, shots=N_SHOTS):
    """A trainer of ``method`` on the synthetic dataset and a tiny model, built as train.py builds it."""
    args = train.build_parser().parse_args([
        "--root", str(root), "--trainer", method, "--seed", str(seed), "--output-dir", str(out_dir),
        "--dataset-config-file", os.path.join(train.REPO_ROOT, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(train.REPO_ROOT, f"configs/trainers/{CONFIGS.get(method, method)}/few_shot.yaml"),
        "MODEL.BACKBONE.NAME", tiny_name(model_dir), "DATASET.NUM_SHOTS", str(shots), *FAST, *opts,
    ])
    return build_trainer(train.setup_cfg(args, PLUGINS))


# -- separable synthetic features ------------------------------------------------------------------

def _features(labels, means, generator, noise=0.3):
    return F.normalize(means[labels] + noise * torch.randn(len(labels), means.shape[1], generator=generator), dim=-1)


@pytest.fixture(scope="module")
def separable():
    """Class means in R^32, features around them; the text classifier is random (zero-shot at chance),
    so a method must learn from the training features to beat chance."""
    g = torch.Generator().manual_seed(0)
    means = F.normalize(torch.randn(N_CLASSES, DIM, generator=g), dim=-1)
    train_labels = torch.arange(N_CLASSES).repeat_interleave(N_SHOTS)
    val_labels, test_labels = (torch.arange(N_CLASSES).repeat_interleave(k) for k in (10, 50))
    return {
        "views": [_features(train_labels, means, g) for _ in range(64)],
        "train_labels": train_labels,
        "val": (_features(val_labels, means, g), val_labels),
        "test": (_features(test_labels, means, g), test_labels),
        "text": F.normalize(torch.randn(N_CLASSES, DIM, generator=g), dim=-1),
    }


def on_features(trainer, data):
    """Feed ``trainer.fit()`` the synthetic features instead of encoded images."""
    trainer.train_view = lambda view: data["views"][view]
    trainer.train_labels = lambda: data["train_labels"]
    trainer.split_features = lambda split: data[split]
    trainer.text_weights = lambda: data["text"]
    return trainer


def accuracy_on_test(trainer, data):
    features, labels = data["test"]
    with torch.no_grad():
        return (trainer.logits_from_features(features).argmax(1) == labels).float().mean().item()


@pytest.mark.parametrize("method,opts", [
    ("ClipAdapter", ["OPTIM.LR", "1.0", "OPTIM.MAX_EPOCH", "30"]),
    ("TIPAdapter", ["OPTIM.MAX_EPOCH", "3", "TRAINER.TIPADAPTER.INIT_ALPHA_SCALE", "3",
                    "TRAINER.TIPADAPTER.SEARCH_STEP", "[20, 20]"]),
    ("TIPAdapterTrainingFree", ["TRAINER.TIPADAPTER.SEARCH_STEP", "[20, 20]"]),
    ("LinearProbe", ["TRAINER.LINEARPROBE.NUM_STEP", "2"]),
    ("LinearProbe_P2", ["OPTIM.MAX_EPOCH", "30"]),
])
def test_each_method_learns_separable_features(method, opts, separable, synthetic_root, tiny_biomedclip, tmp_path):
    zero_shot = (separable["test"][0] @ separable["text"].t()).argmax(1).eq(separable["test"][1]).float().mean()
    assert zero_shot < 0.5, "the text classifier must not already solve the task"
    trainer = on_features(make_feature_trainer(synthetic_root, tiny_biomedclip, tmp_path, method, *opts), separable)
    trainer.fit()
    assert accuracy_on_test(trainer, separable) > 0.75  # chance: 0.25


def test_published_names_are_aliases():
    for alias, method in [("ClipAdapter_BiomedCLIP", "ClipAdapter"), ("TIPAdapter_PMCCLIP", "TIPAdapter"),
                          ("LinearProbe_CLIP", "LinearProbe"), ("LinearProbe_P2_PubMedCLIP", "LinearProbe_P2")]:
        registered = TRAINER_REGISTRY.get(alias)
        assert issubclass(registered, TRAINER_REGISTRY.get(method)) and registered.backbone_name == alias.split("_")[-1]


def test_best_on_val_tie_rules():
    module = torch.nn.Linear(1, 1, bias=False)
    first, last = BestOnVal(), BestOnVal(ties_to_later=True)
    for value, score in [(1.0, 2), (2.0, 3), (3.0, 3), (4.0, 1)]:
        module.weight.data.fill_(value)
        first.offer(score, module)
        last.offer(score, module)
    first.restore(module)
    assert module.weight.item() == 2.0
    last.restore(module)
    assert module.weight.item() == 3.0


def test_augmented_views_are_computed_once_per_seed_and_view(synthetic_root, tiny_biomedclip, tmp_path, monkeypatch):
    cache = ["FEATURE_CACHE.DIR", str(tmp_path / "cache")]
    adapter = make_feature_trainer(synthetic_root, tiny_biomedclip, tmp_path / "a", "ClipAdapter", *cache)
    state = torch.get_rng_state()
    view0, view1 = adapter.train_view(0), adapter.train_view(1)
    assert torch.equal(torch.get_rng_state(), state), "computing views leaves the RNG alone"
    assert view0.shape == (N_SHOTS * N_CLASSES, DIM) and not torch.allclose(view0, view1), "two augmentations"
    assert adapter.train_view(0) is view0

    tip = make_feature_trainer(synthetic_root, tiny_biomedclip, tmp_path / "b", "TIPAdapter", *cache)
    calls = []
    encode = tip.backbone.encode_image
    monkeypatch.setattr(tip.backbone, "encode_image", lambda x: calls.append(1) or encode(x))
    assert torch.equal(tip.train_view(1), view1) and not calls, "another method of the seed reads the view"
    other_seed = make_feature_trainer(synthetic_root, tiny_biomedclip, tmp_path / "c", "TIPAdapter", *cache, seed=2)
    assert not torch.equal(other_seed.train_view(0), view0)


# -- CLIP-Adapter: per-epoch schedule, best-val adapter tested (reference §9 row 15) ---------------

def _clip_adapter(data, root, model_dir, tmp_path, *opts):
    # 16 training features in batches of 4: four steps per epoch
    return on_features(make_feature_trainer(root, model_dir, tmp_path, "ClipAdapter", "OPTIM.MAX_EPOCH", "4",
                                            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", *opts), data)


def test_clip_adapter_lr_steps_per_epoch_and_published_per_batch(separable, synthetic_root, tiny_biomedclip, tmp_path):
    fixed = _clip_adapter(separable, synthetic_root, tiny_biomedclip, tmp_path / "a")
    fixed.fit()
    lrs = [entry["lrs"] for entry in fixed.fit_history]
    # Dassl's rule: 1e-5 in the warm-up epoch, then LR * (1 + cos(pi * (e - 1) / MAX_EPOCH)) / 2
    cosine = [0.01 * 0.5 * (1 + math.cos(math.pi * (e - 1) / 4)) for e in range(1, 4)]
    assert [len(set(epoch)) for epoch in lrs] == [1, 1, 1, 1]
    assert [epoch[0] for epoch in lrs] == pytest.approx([1e-5] + cosine)

    published = _clip_adapter(separable, synthetic_root, tiny_biomedclip, tmp_path / "b",
                              "TRAINER.CLIPADAPTER.LR_PER_ITERATION", "True")
    published.fit()
    steps = [lr for entry in published.fit_history for lr in entry["lrs"]]
    assert steps[:4] == pytest.approx([1e-5] + cosine), "the same curve, one step per batch"
    assert len(set(published.fit_history[1]["lrs"])) == 4, "the published schedule moves every batch"


@pytest.mark.parametrize("select_best, deployed_epoch", [("True", 1), ("False", 3)])
def test_clip_adapter_tests_the_best_val_adapter(select_best, deployed_epoch, separable, synthetic_root,
                                                 tiny_biomedclip, tmp_path):
    trainer = _clip_adapter(separable, synthetic_root, tiny_biomedclip, tmp_path,
                            "TRAINER.CLIPADAPTER.SELECT_BEST_VAL", select_best)
    scores, states = iter([5, 9, 7, 9]), []  # epoch 1 is the best; epoch 3 ties with it

    def scripted_val_correct(logits_fn):
        states.append({k: v.clone() for k, v in trainer.head.state_dict().items()})
        return next(scores)

    trainer.val_correct = scripted_val_correct
    trainer.fit()
    deployed = trainer.head.state_dict()
    assert all(torch.equal(deployed[k], states[deployed_epoch][k]) for k in deployed)
    assert not all(torch.equal(states[1][k], states[3][k]) for k in deployed)


# -- Tip-Adapter: the selected adapter is the one fine-tuned; the scale is the backbone's (row 14) --

def test_tip_logits_and_search_follow_the_published_formula():
    g = torch.Generator().manual_seed(1)
    features = F.normalize(torch.randn(12, 8, generator=g), dim=-1)
    keys = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    values = F.one_hot(torch.arange(6) % 3, 3).float()
    text = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    labels = torch.arange(12) % 3
    expected = 7.0 * features @ text.t() + 2.0 * ((-1) * (0.5 - 0.5 * (features @ keys.t()))).exp() @ values
    assert torch.allclose(tip_logits(features, keys, values, text, 7.0, 0.5, 2.0), expected)
    assert search_grid(50, 200)[:2] == pytest.approx([0.1, 0.1 + 49.9 / 200]) and len(search_grid(50, 200)) == 200

    best, choice = 0, (0.0, 0.0)  # the published double loop: beta outer, alpha inner, strictly better
    for beta in search_grid(5, 7):
        for alpha in search_grid(5, 7):
            correct = int((tip_logits(features, keys, values, text, 7.0, beta, alpha).argmax(1) == labels).sum())
            if correct > best:
                best, choice = correct, (beta, alpha)
    assert search_beta_alpha(features, labels, keys, values, text, 7.0, [5, 5], [7, 7]) == pytest.approx(choice)


def _recorded_train_adapter(trainer):
    calls = []
    original = trainer.train_adapter

    def record(adapter, alpha, stage, best=None):
        start = adapter.weight.detach().clone()
        original(adapter, alpha, stage, best)
        calls.append({"adapter": adapter, "stage": stage, "start": start, "end": adapter.weight.detach().clone()})

    trainer.train_adapter = record
    return calls


@pytest.mark.parametrize("published", ["False", "True"])
def test_tip_adapter_f_fine_tunes_the_adapter_it_selected(published, separable, synthetic_root, tiny_biomedclip,
                                                          tmp_path):
    trainer = on_features(make_feature_trainer(
        synthetic_root, tiny_biomedclip, tmp_path, "TIPAdapter", "OPTIM.MAX_EPOCH", "2",
        "TRAINER.TIPADAPTER.INIT_ALPHA_SCALE", "3", "TRAINER.TIPADAPTER.SEARCH_STEP", "[10, 10]",
        "TRAINER.TIPADAPTER.PUBLISHED_GRID_SEARCH", published), separable)
    calls = _recorded_train_adapter(trainer)
    trainer.fit()
    keys = F.normalize(separable["views"][0], dim=-1)
    grid = [c for c in calls if c["stage"].startswith("grid")]
    assert len(grid) == 3
    if published == "False":
        assert all(torch.allclose(c["start"], keys) for c in grid), "every grid-search adapter starts from K"
        assert len({id(c["adapter"]) for c in grid}) == 3
        (fine_tune,) = [c for c in calls if c["stage"] == "fine-tune"]
        assert any(fine_tune["adapter"] is c["adapter"] for c in grid), "the selected adapter is fine-tuned"
        assert not torch.equal(fine_tune["start"], fine_tune["end"])
    else:  # one shared adapter, each run continuing the previous one; no fine-tuning afterwards
        assert len({id(c["adapter"]) for c in grid}) == 1
        assert torch.equal(grid[1]["start"], grid[0]["end"]) and torch.equal(grid[2]["start"], grid[1]["end"])
        assert len(calls) == 3 and torch.equal(trainer.head.keys.detach(), grid[2]["end"])


def test_tip_adapter_scale_is_the_backbones_unless_set(synthetic_root, tiny_biomedclip, tmp_path):
    trainer = make_feature_trainer(synthetic_root, tiny_biomedclip, tmp_path / "a", "TIPAdapterTrainingFree")
    assert torch.equal(trainer.scale(), trainer.backbone.logit_scale)
    published = make_feature_trainer(synthetic_root, tiny_biomedclip, tmp_path / "b", "TIPAdapterTrainingFree",
                                     "TRAINER.TIPADAPTER.LOGIT_SCALE", "85.2323")
    assert published.scale().item() == pytest.approx(85.2323)


# -- linear probe: the published C search ----------------------------------------------------------

def test_linear_probe_c_search_is_the_published_bisection():
    """A fake classifier whose val score peaks at C = 3: the grid finds C* = 1, the bisection closes in."""
    def fit(c):
        return c

    def score(c):
        return -abs(math.log10(c) - math.log10(3.0))

    chosen, c = search_c(fit, score, [1e6, 1e4, 1e2, 1.0, 1e-2], num_step=8)
    left, right = 0.1, 10.0  # around C* = 1, then halved in log space towards the better end
    for _ in range(8):
        middle = 10 ** ((math.log10(left) + math.log10(right)) / 2)
        expected = right if score(left) < score(right) else left
        left, right = (middle, right) if score(left) < score(right) else (left, middle)
    assert c == pytest.approx(expected) and chosen == c
    assert abs(math.log10(c / 3.0)) < 0.05


# -- LP++: alpha's gradient cleared, class means (row 16) ------------------------------------------

def test_lp_plus_plus_starts_from_class_means_or_published_sums():
    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert torch.equal(class_centroids(features, labels, 2), torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    assert torch.equal(class_centroids(features, labels, 2, sums=True), torch.tensor([[4.0, 0.0], [0.0, 6.0]]))


@pytest.mark.parametrize("accumulate", ["False", "True"])
def test_lp_plus_plus_alpha_step_uses_the_current_gradient(accumulate, separable, synthetic_root, tiny_biomedclip,
                                                           tmp_path):
    """After 10 epochs alpha takes its first step: with the fix, along the gradient of the 10th epoch;
    published, along the sum of all 10 epochs' gradients."""
    trainer = on_features(make_feature_trainer(
        synthetic_root, tiny_biomedclip, tmp_path, "LinearProbe_P2", "OPTIM.MAX_EPOCH", "10",
        "TRAINER.LINEARPROBE_P2.ACCUMULATE_ALPHA_GRAD", accumulate), separable)
    trainer.val_correct = lambda logits_fn: 0  # every epoch ties: the last one is deployed
    gradients = []
    trainer.head.alpha.register_hook(lambda grad: gradients.append(grad.clone()))
    trainer.fit()
    features, labels, text = separable["views"][0], separable["train_labels"], separable["text"]
    start = initial_alpha(features, labels, N_CLASSES, text, 250.0)
    used = torch.stack(gradients).sum(0) if accumulate == "True" else gradients[-1]
    assert len(gradients) == 10
    assert torch.allclose(trainer.head.alpha.detach(), start - alpha_step_size(features, text) * used, atol=1e-6)
    assert not torch.allclose(gradients[-1], torch.stack(gradients).sum(0), atol=1e-3)


# -- the launch scripts: one seed each, through train.py, parsed ------------------------------------

SCRIPT_RUNS = [
    ("clip_adapter/few_shot.sh", "ClipAdapter", ["OPTIM.MAX_EPOCH", "2"]),
    ("tip_adapter/few_shot.sh", "TIPAdapter", ["OPTIM.MAX_EPOCH", "2", "TRAINER.TIPADAPTER.INIT_ALPHA_SCALE", "2",
                                               "TRAINER.TIPADAPTER.SEARCH_STEP", "[10, 10]"]),
    ("linear_probe/few_shot.sh", "LinearProbe", ["TRAINER.LINEARPROBE.NUM_STEP", "2"]),
    ("linear_probe2/few_shot.sh", "LinearProbe_P2", ["OPTIM.MAX_EPOCH", "20"]),
]


def test_every_feature_method_script_runs_a_seed_and_is_parsed(synthetic_root, tiny_biomedclip, tmp_path):
    """The four scripts run at once (two at a time per core), sharing one feature cache: they also
    write the same test-set entry concurrently."""
    repo = train.REPO_ROOT
    env = {**os.environ, "DATA": str(synthetic_root), "OUTPUT": str(tmp_path / "output"), "PYTHON": sys.executable,
           "SEEDS": "1", "CLIP_BIOMED_FEATURE_CACHE": str(tmp_path / "cache")}
    runs = [subprocess.Popen(["bash", os.path.join(repo, "scripts", script), "btmri", "2", tiny_name(tiny_biomedclip),
                              *FAST, *opts], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for script, _, opts in SCRIPT_RUNS]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for (script, method, _), run, output in zip(SCRIPT_RUNS, runs, outputs):
        assert run.returncode == 0, f"{script} failed:\n{output[-3000:]}"
        runs_dir = tmp_path / "output" / "btmri" / "shots_2" / f"{method}_{tiny_biomedclip.name}"
        assert (runs_dir / "seed1" / "log.txt").is_file()
        parsed = subprocess.run([sys.executable, os.path.join(repo, "parse_test_res.py"), str(runs_dir)],
                                capture_output=True, text=True)
        assert parsed.returncode == 0, parsed.stdout + parsed.stderr
        assert "Number of seeds (log files): 1" in parsed.stdout
        assert "* accuracy:" in parsed.stdout
    assert not list((tmp_path / "cache").rglob("*.partial"))
