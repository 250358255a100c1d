"""The prompt-learning baselines (trainers/zeroshot.py, coop.py, cocoop.py, kgcoop.py, prograd.py) on
tiny models of the four backbone families and synthetic data: their math against independent
computations on fixed tensors, what trains, checkpoints, base-to-new, precisions and names."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from clip_biomed.backbones.testing import tiny_name
from clip_biomed.dassl import TRAINER_REGISTRY, build_trainer, set_random_seed
from clip_biomed.method import PAPER_BACKBONES
from clip_biomed.precision import Precision
from trainers.cocoop import per_image_logits
from trainers.kgcoop import knowledge_distance
from trainers.prograd import distillation_loss, project_gradient
from trainers.zeroshot import ensemble_classifier

PLUGINS = train.import_plugins([])
TRAINED = ("CoOp", "CoCoOp", "KgCoOp", "ProGrad")
ZERO_SHOT = ("Zeroshot", "ZeroshotEnsemble")
CONFIG_FOLDER = {"ZeroshotEnsemble": "Zeroshot"}
FAMILIES = ("biomedclip", "clip", "pubmedclip", "pmcclip")
FAST = ["OPTIM.MAX_EPOCH", "1", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TEST.BATCH_SIZE", "50", "TRAINER.ZEROSHOT_ENSEMBLE.N_PROMPTS", "4"]
BTMRI = ["glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"]


def method_config(method, kind="few_shot"):
    """The config a launch script picks for btmri (scripts/common.sh: method_config)."""
    folder = os.path.join(train.REPO_ROOT, "configs/trainers", CONFIG_FOLDER.get(method, method))
    specific = os.path.join(folder, kind, "btmri.yaml")
    return specific if os.path.isfile(specific) else os.path.join(folder, f"{kind}.yaml")


def make_trainer(method, root, model_dir, out_dir, *opts, kind="few_shot", shots=2):
    """A trainer (``method``: a method or a published name) on btmri, as a launch script configures it."""
    args = train.build_parser().parse_args([
        "--root", str(root), "--trainer", method, "--seed", "1", "--output-dir", str(out_dir),
        "--dataset-config-file", os.path.join(train.REPO_ROOT, "configs/datasets/btmri.yaml"),
        "--config-file", method_config(TRAINER_REGISTRY.get(method).METHOD, kind),
        "MODEL.BACKBONE.NAME", tiny_name(model_dir), "DATASET.NUM_SHOTS", str(shots), *FAST, *opts,
    ])
    set_random_seed(1)  # as train.py does: random initialisations (CoCoOp's meta-net) repeat
    return build_trainer(train.setup_cfg(args, PLUGINS))


@pytest.fixture(scope="module")
def models(tiny_biomedclip, tiny_clip, tiny_root):
    return {"biomedclip": tiny_biomedclip, "clip": tiny_clip, "pubmedclip": tiny_root / "pubmedclip",
            "pmcclip": tiny_root / "pmcclip"}


def fixed_batch(n_classes=4, size=32):
    generator = torch.Generator().manual_seed(0)
    return {"img": torch.randn(n_classes, 3, size, size, generator=generator), "label": torch.arange(n_classes)}


def encode(backbone, sentences):
    """Normalised features of sentences, straight from the backbone (the independent computation)."""
    with torch.no_grad():
        return F.normalize(backbone.encode_text(backbone.tokenize(sentences)), dim=-1)


# -- the math on fixed tensors ----------------------------------------------------------------------


@pytest.mark.parametrize("kd, conflicting", [
    ([-1.0, 1.0, 0.0], True),    # cos(g_ce, g_kd) < 0: the conflicting component is removed
    ([1.0, 2.0, -0.5], False),   # cos >= 0: g_ce is kept
    ([0.0, 1.0, 0.0], False),    # orthogonal (cos = 0): kept
])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_prograd_projection_matches_the_rule(kd, conflicting, strength):
    ce = np.array([1.0, 0.0, 2.0])
    kd = np.array(kd)
    cos = ce @ kd / (np.linalg.norm(ce) * np.linalg.norm(kd))
    assert (cos < 0) == conflicting
    expected = ce - strength * (ce @ kd) / (kd @ kd) * kd if cos < 0 else ce
    got = project_gradient(torch.tensor(ce), torch.tensor(kd), strength)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    if conflicting and strength == 1.0:
        assert abs(got.numpy() @ kd) < 1e-12  # nothing left against the KD direction
    hand = {(True, 1.0): [0.5, 0.5, 2.0], (True, 0.5): [0.75, 0.25, 2.0]}  # worked out on paper
    if conflicting:
        np.testing.assert_allclose(got.numpy(), hand[(True, strength)], rtol=1e-12)


def test_prograd_projection_without_a_kd_direction_keeps_the_ce_gradient():
    ce = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    assert torch.equal(project_gradient(ce, torch.zeros(2, 2), 1.0), ce)
    assert torch.equal(project_gradient(ce, torch.full((2, 2), float("inf")), 1.0), ce)


def test_prograd_kd_loss_is_the_temperature_scaled_soft_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    for temperature in (1.0, 2.0, 0.25):
        s, t = student.double().numpy() / temperature, teacher.double().numpy() / temperature
        p_teacher = np.exp(t) / np.exp(t).sum(1, keepdims=True)
        log_p_student = s - np.log(np.exp(s).sum(1, keepdims=True))
        expected = temperature ** 2 * np.mean([-(p_teacher[b] * log_p_student[b]).sum() for b in range(3)])
        assert distillation_loss(student.double(), teacher.double(), temperature).item() == pytest.approx(expected)


def test_kgcoop_term_is_one_minus_the_mean_cosine():
    generator = torch.Generator().manual_seed(0)
    learned = F.normalize(torch.randn(4, 6, generator=generator), dim=-1)
    anchor = F.normalize(torch.randn(4, 6, generator=generator), dim=-1)
    cosines = [float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
               for a, b in zip(learned.numpy(), anchor.numpy())]
    assert knowledge_distance(learned, anchor).item() == pytest.approx(1 - sum(cosines) / 4, abs=1e-6)
    assert knowledge_distance(anchor, anchor).item() == pytest.approx(0.0, abs=1e-6)


def test_ensemble_classifier_averages_normalised_sentences_and_renormalises():
    features = torch.tensor([[[3.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [2.0, 2.0]]])  # [C=2, P=2, D=2]
    got = ensemble_classifier(F.normalize(features, dim=-1))
    # class 0: mean of (1, 0) and (0, 1) is (0.5, 0.5) -> (1, 1)/sqrt(2); the raw mean would tilt to x
    expected = torch.tensor([[1.0, 1.0], [1.0, 1.0]]) / math.sqrt(2)
    assert torch.allclose(got, expected, atol=1e-7)


# -- every method on every backbone family ------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", TRAINED)
def test_one_step_trains_only_the_method_parameters_and_lowers_the_loss(method, family, models, synthetic_root,
                                                                         tmp_path):
    trainer = make_trainer(method, synthetic_root, models[family], tmp_path, "OPTIM.WARMUP_EPOCH", "0",
                           "OPTIM.LR", "0.001")
    expected = {"ctx"} | ({"meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight",
                           "meta_net.linear2.bias"} if method == "CoCoOp" else set())
    assert {name for name, p in trainer.prompt_learner.named_parameters() if p.requires_grad} == expected
    assert [name for name, _ in trainer.trainable_parameters()] == [f"prompt_learner.{n}" for n in
                                                                   dict(trainer.prompt_learner.named_parameters())]
    assert not any(p.requires_grad for p in trainer.backbone.parameters())
    backbone_before = [p.detach().clone() for p in trainer.backbone.parameters()]
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2
    batch = fixed_batch()
    first = trainer.forward_backward(batch)
    assert all(p.grad is not None for p in trainer.prompt_learner.parameters())
    assert all(p.grad is None for p in trainer.backbone.parameters())
    second = trainer.forward_backward(batch)  # its loss is measured after the first update
    assert second["loss"] < first["loss"]
    assert all(torch.equal(a, b) for a, b in zip(backbone_before, trainer.backbone.parameters()))
    logits = trainer.logits_from_features(trainer.image_features(batch["img"]))
    assert logits.shape == (4, 4) and torch.isfinite(logits).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_shot_classifiers_on_every_family(family, models, synthetic_root, tmp_path):
    single = make_trainer("Zeroshot", synthetic_root, models[family], tmp_path / "a")
    backbone = single.backbone
    features = single.image_features(fixed_batch()["img"])
    expected = backbone.logit_scale * features @ encode(backbone, [f"a photo of a {c}." for c in BTMRI]).t()
    assert torch.allclose(single.logits_from_features(features), expected, atol=1e-5)
    assert single.get_model_names() == [] and single.trainable_parameters() == []

    ensemble = make_trainer("ZeroshotEnsemble", synthetic_root, models[family], tmp_path / "b")
    assert [len(s) for s in ensemble.sentences] == [4] * 4
    weights = torch.stack([F.normalize(encode(backbone, sentences).mean(0), dim=0) for sentences in ensemble.sentences])
    expected = backbone.logit_scale * features @ weights.t()
    assert torch.allclose(ensemble.logits_from_features(features), expected, atol=1e-5)
    assert not torch.allclose(expected, single.logits_from_features(features))


# -- the method-specific parts -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def biomedclip_trainers(tiny_biomedclip, synthetic_root, tmp_path_factory):
    """One trainer per method (fp32) shared by the read-only tests below."""
    out = tmp_path_factory.mktemp("trainers")
    return {m: make_trainer(m, synthetic_root, tiny_biomedclip, out / m) for m in TRAINED + ZERO_SHOT}


def test_kgcoop_anchors_to_the_frozen_template_features(biomedclip_trainers):
    trainer = biomedclip_trainers["KgCoOp"]
    text_features = trainer.text_features()
    anchor = encode(trainer.backbone, [f"a photo of a {c}." for c in BTMRI])
    image_features = F.normalize(torch.randn(2, text_features.shape[1], device=trainer.device), dim=-1)
    logits = trainer.backbone.logit_scale * image_features @ text_features.t()
    losses = trainer.losses(logits, torch.tensor([0, 1], device=trainer.device), None, text_features)
    cosine = (text_features * anchor).sum(1).mean()
    assert losses["kg"].item() == pytest.approx(trainer.opts.W * (1 - cosine.item()), rel=1e-5)
    assert trainer.opts.W == 2.0  # the published btmri value


def test_prograd_teacher_is_the_zero_shot_classifier_or_the_published_student(biomedclip_trainers, synthetic_root,
                                                                               tiny_biomedclip, tmp_path):
    trainer = biomedclip_trainers["ProGrad"]
    features = trainer.image_features(fixed_batch()["img"])
    student = torch.randn(4, 4, device=trainer.device)
    anchor = encode(trainer.backbone, [f"a photo of a {c}." for c in BTMRI])
    zero_shot = trainer.backbone.logit_scale * features @ anchor.t()
    assert torch.allclose(trainer.teacher_logits(student, features), zero_shot, atol=1e-5)
    assert trainer.opts.T == 2.0  # the published btmri value
    published = make_trainer("ProGrad_BiomedCLIP", synthetic_root, tiny_biomedclip, tmp_path, "TRAINER.PROGRAD.TEACHER",
                             "student")
    assert torch.equal(published.teacher_logits(student, features), student)


@pytest.mark.parametrize("scale", [None, 2.0 ** 12])
@pytest.mark.parametrize("conflicting", [True, False])
def test_prograd_update_projects_the_true_gradients(biomedclip_trainers, scale, conflicting):
    """With losses whose gradients are known (linear in ctx), the step leaves the projected true CE
    gradient in .grad, with or without a loss scaler (a CPU GradScaler stands in for CUDA's)."""
    trainer = biomedclip_trainers["ProGrad"]
    ctx = trainer.prompt_learner.ctx
    generator = torch.Generator().manual_seed(1)
    ce_grad = torch.randn(ctx.shape, generator=generator)
    kd_grad = (-1.0 if conflicting else 1.0) * ce_grad + 0.5 * torch.randn(ctx.shape, generator=generator)
    precision = Precision("fp32", trainer.device)
    if scale:
        precision.scaler = torch.amp.GradScaler(trainer.device.type, init_scale=scale)
    trainer.precision = precision
    before = ctx.detach().clone()
    try:
        trainer.backward_and_step({"ce": (ce_grad.to(ctx.device) * ctx).sum(),
                                   "kd": (kd_grad.to(ctx.device) * ctx).sum()})
    finally:
        trainer.precision = Precision("fp32", trainer.device)
        with torch.no_grad():
            ctx.copy_(before)
    a, b = ce_grad.double().flatten().numpy(), kd_grad.double().flatten().numpy()
    expected = a - (a @ b) / (b @ b) * b if a @ b < 0 else a  # LAMBDA 1
    assert (a @ b < 0) == conflicting
    np.testing.assert_allclose(ctx.grad.double().flatten().cpu().numpy(), expected, rtol=1e-4, atol=1e-6)


def test_prograd_initialisation_zeroes_the_uncovered_context(synthetic_root, tiny_biomedclip, tmp_path):
    prograd = make_trainer("ProGrad", synthetic_root, tiny_biomedclip, tmp_path / "p", "TRAINER.PROGRAD.N_CTX", "6")
    coop = make_trainer("CoOp", synthetic_root, tiny_biomedclip, tmp_path / "c", "TRAINER.COOP.N_CTX", "6")
    backbone = prograd.backbone
    words = backbone.token_embedding(backbone.tokenize(["a photo of a"]))[0, 1:5]
    assert not prograd.prompt_learner.ctx[:2].any()
    assert torch.allclose(prograd.prompt_learner.ctx[2:], words)
    assert torch.allclose(coop.prompt_learner.ctx[2:], words) and coop.prompt_learner.ctx[:2].abs().sum() > 0


@pytest.mark.parametrize("method", ["KgCoOp", "ProGrad"])
def test_ctx_init_is_honoured_and_the_published_override_is_one_key_away(method, synthetic_root, tiny_biomedclip,
                                                                         tmp_path):
    node = f"TRAINER.{method.upper()}"
    honoured = make_trainer(method, synthetic_root, tiny_biomedclip, tmp_path / "a", f"{node}.CTX_INIT", "an mri of")
    published = make_trainer(method, synthetic_root, tiny_biomedclip, tmp_path / "b", f"{node}.CTX_INIT", "an mri of",
                             f"{node}.CTX_INIT_FROM_TEMPLATE", "True")
    backbone = honoured.backbone

    def words(text, n):
        return backbone.token_embedding(backbone.tokenize([text]))[0, 1:1 + n]

    assert honoured.prompt_learner.prompt_prefix.endswith("an mri of")
    assert torch.allclose(honoured.prompt_learner.ctx[1:], words("an mri of", 3))
    assert published.prompt_learner.prompt_prefix == "a photo of a"
    assert torch.allclose(published.prompt_learner.ctx, words("a photo of a", 4))


def test_cocoop_per_image_logits_match_image_by_image_and_chunking_changes_nothing(biomedclip_trainers):
    trainer = biomedclip_trainers["CoCoOp"]
    learner, backbone = trainer.prompt_learner, trainer.backbone
    features = trainer.image_features(fixed_batch()["img"])
    with torch.no_grad():
        expected = []
        for f in features:  # the published loop: each image's own prompts, encoded alone
            context = learner.ctx + learner.meta_net(f[None])[0]
            text = F.normalize(backbone.encode_text_embeddings(learner(context), learner.token_ids), dim=-1)
            expected.append(backbone.logit_scale * f @ text.t())
    assert torch.allclose(trainer.logits_from_features(features), torch.stack(expected), atol=1e-5)

    results = []
    for chunk, recompute in [(0, False), (4, True), (8, False), (3, True)]:  # 3 < C: one image per pass
        learner.zero_grad()
        logits = per_image_logits(backbone, learner, trainer.precision, features, chunk, recompute)
        F.cross_entropy(logits, torch.arange(4, device=logits.device)).backward()
        results.append((logits.detach(), [p.grad.clone() for p in learner.parameters()]))
    for logits, grads in results[1:]:
        assert torch.allclose(logits, results[0][0], atol=1e-6)
        assert all(torch.allclose(g, g0, atol=1e-6) for g, g0 in zip(grads, results[0][1]))


@pytest.mark.parametrize("method", TRAINED)
def test_frozen_work_once_per_run_and_text_features_once_per_evaluation(method, synthetic_root, tiny_biomedclip,
                                                                         tmp_path, monkeypatch):
    trainer = make_trainer(method, synthetic_root, tiny_biomedclip, tmp_path)
    frozen, learned = [], []
    zeros = torch.zeros(4, trainer.backbone.embed_dim, device=trainer.device)
    monkeypatch.setattr(trainer, "class_text_features", lambda template: frozen.append(template) or zeros)
    original = trainer.backbone.encode_text_embeddings
    monkeypatch.setattr(trainer.backbone, "encode_text_embeddings", lambda e, i: learned.append(1) or original(e, i))
    trainer.test_loader = torch.utils.data.DataLoader(trainer.test_loader.dataset, batch_size=5)  # several batches
    trainer.test()
    assert frozen == [], "an evaluation never computes what only training needs"
    text_passes = len(learned)
    assert text_passes == (len(trainer.test_loader) if method == "CoCoOp" else 1)
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2
    for _ in range(2):
        trainer.forward_backward(fixed_batch())
    assert frozen == ({"KgCoOp": ["a photo of a {}."], "ProGrad": ["a photo of a {}."]}.get(method, []))


def test_zero_shot_classifier_is_computed_once_per_run(biomedclip_trainers, monkeypatch):
    trainer = biomedclip_trainers["ZeroshotEnsemble"]
    calls = []
    original = trainer.encode_texts
    monkeypatch.setattr(trainer, "encode_texts", lambda texts: calls.append(len(texts)) or original(texts))
    trainer.__dict__.pop("_run_constants", None)
    trainer.test()
    trainer.test()
    assert calls == [4 * 4]


# -- precisions ---------------------------------------------------------------------------------------


PRECISIONS = ["bf16", "amp", pytest.param("fp16", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="fp16 needs CUDA; on a CPU it runs bf16, tested as bf16"))]


@pytest.mark.parametrize("prec", PRECISIONS)
@pytest.mark.parametrize("method", TRAINED + ("Zeroshot",))
def test_every_method_runs_in_reduced_precision(method, prec, synthetic_root, tiny_biomedclip, tmp_path):
    """fp32 is every other test.  On a CPU amp is bf16 autocast; on CUDA amp and fp16 use fp16
    autocast and a GradScaler (ProGrad then projects unscaled gradients).  (ZeroshotEnsemble encodes
    its classifier with the same ``encode_texts`` as Zeroshot.)"""
    node = method.upper()
    trainer = make_trainer(method, synthetic_root, tiny_biomedclip, tmp_path, f"TRAINER.{node}.PREC", prec)
    batch = fixed_batch()
    if method in TRAINED:
        before = trainer.prompt_learner.ctx.detach().clone()
        trainer.set_model_mode("train")
        trainer.batch_idx, trainer.num_batches = 0, 2
        summary = trainer.forward_backward(batch)
        assert all(math.isfinite(v) for v in summary.values())
        assert not torch.equal(before, trainer.prompt_learner.ctx)
        assert trainer.prompt_learner.ctx.dtype == torch.float32
    trainer.set_model_mode("eval")
    logits = trainer.logits_from_features(trainer.image_features(batch["img"]))
    assert torch.isfinite(logits).all()


# -- checkpoints, base-to-new, names, errors --------------------------------------------------------------


@pytest.mark.parametrize("method", TRAINED)
def test_base_trained_checkpoint_holds_only_the_trained_parameters_and_loads_for_new_classes(
        method, synthetic_root, tiny_biomedclip, tmp_path):
    base_dir = tmp_path / "base"
    trained = make_trainer(method, synthetic_root, tiny_biomedclip, base_dir, "DATASET.SUBSAMPLE_CLASSES", "base",
                           "TEST.NO_TEST", "True", kind="base_to_novel")
    trained.train()
    state = torch.load(base_dir / "prompt_learner" / "model.pth.tar-1", weights_only=True)["state_dict"]
    learned = dict(trained.prompt_learner.named_parameters())
    assert set(state) == set(learned) | {"_extra_state"}
    assert state["_extra_state"]["classnames"] == BTMRI[:2]

    new = make_trainer(method, synthetic_root, tiny_biomedclip, tmp_path / "new", "DATASET.SUBSAMPLE_CLASSES", "new",
                       kind="base_to_novel")
    assert new.prompt_learner.classnames == BTMRI[2:]
    new.load_model(str(base_dir))
    for name, param in new.prompt_learner.named_parameters():
        assert torch.equal(param, learned[name]), name
    assert new.test() >= 0.0
    logits = new.logits_from_features(new.image_features(fixed_batch(2)["img"]))
    assert logits.shape == (2, 2)


@pytest.mark.parametrize("pattern, method", [
    ("Zeroshot{}", "Zeroshot"), ("Zeroshot{}2", "ZeroshotEnsemble"), ("CoOp_{}", "CoOp"), ("CoCoOp_{}", "CoCoOp"),
    ("KgCoOp_{}", "KgCoOp"), ("ProGrad_{}", "ProGrad"),
])
def test_published_names_resolve_to_the_method_on_their_backbone(pattern, method):
    for backbone in PAPER_BACKBONES:
        cls = TRAINER_REGISTRY.get(pattern.format(backbone))
        assert cls.backbone_name == backbone and issubclass(cls, TRAINER_REGISTRY.get(method))
        assert cls.METHOD == method


def test_published_name_with_another_backbone_names_the_method_and_the_fix(synthetic_root, tiny_biomedclip, tmp_path):
    with pytest.raises(ValueError, match="published name of Zeroshot on CLIP.*--trainer Zeroshot MODEL.BACKBONE.NAME"):
        make_trainer("ZeroshotCLIP", synthetic_root, tiny_biomedclip, tmp_path, "MODEL.BACKBONE.NAME", "BiomedCLIP")
    alias = make_trainer("ZeroshotBiomedCLIP2", synthetic_root, tiny_biomedclip, tmp_path)
    assert alias.backbone_label == tiny_name(tiny_biomedclip)


@pytest.mark.parametrize("opts, message", [
    (["TRAINER.PROGRAD.NAME", "kd"], "valid: prograd"),
    (["TRAINER.PROGRAD.TEACHER", "clip"], "valid: zero_shot, student"),
    (["TRAINER.PROGRAD.TEMPLATE", "a photo"], "exactly one {} for the class name"),
])
def test_bad_prograd_keys_are_refused_with_the_valid_values(opts, message, synthetic_root, tiny_biomedclip, tmp_path):
    with pytest.raises(ValueError, match=message):
        make_trainer("ProGrad", synthetic_root, tiny_biomedclip, tmp_path, *opts)


def test_zero_shot_refuses_to_train_and_names_missing_prompts(biomedclip_trainers, synthetic_root, tiny_biomedclip,
                                                               tmp_path):
    with pytest.raises(RuntimeError, match="--eval-only"):
        biomedclip_trainers["Zeroshot"].train()
    prompts = tmp_path / "mine.json"
    prompts.write_text('{"glioma tumor": ["a glioma on MRI"]}')
    with pytest.raises(ValueError, match="TRAINER.ZEROSHOT_ENSEMBLE.PROMPTS") as info:
        make_trainer("ZeroshotEnsemble", synthetic_root, tiny_biomedclip, tmp_path, "TRAINER.ZEROSHOT_ENSEMBLE.PROMPTS",
                     str(prompts))
    assert "normal brain" in str(info.value) and "TRAINER.ZEROSHOT_ENSEMBLE.N_PROMPTS" in str(info.value)


def test_published_cocoop_checkpoint_loads_context_and_meta_network(synthetic_root, tiny_biomedclip, tmp_path):
    """The published CoCoOp registers only its prompt learner: ctx, meta_net.* and the prompt buffers."""
    trainer = make_trainer("CoCoOp", synthetic_root, tiny_biomedclip, tmp_path / "run")
    published = {name: torch.randn_like(p) for name, p in trainer.prompt_learner.named_parameters()}
    published["token_prefix"] = torch.zeros(4, 1, trainer.backbone.ctx_dim)  # rebuilt for the current classes
    os.makedirs(tmp_path / "published" / "prompt_learner")
    torch.save({"state_dict": published, "epoch": 10, "optimizer": None, "scheduler": None, "val_result": None},
               tmp_path / "published" / "prompt_learner" / "model.pth.tar-10")
    trainer.load_model(str(tmp_path / "published"), epoch=10)
    for name, param in trainer.prompt_learner.named_parameters():
        assert torch.equal(param.detach().cpu(), published[name]), name
