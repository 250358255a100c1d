"""Biomed-DPT, BiomedAP, CLIP-SVD and CLIP-LoRA on tiny local models and synthetic data: what trains,
exactness at initialisation, the loss terms against independent computations, the published
behaviour behind each switch, checkpoints, configs and the launch scripts."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import parse_test_res
import train
from clip_biomed.backbones import build_backbone
from clip_biomed.backbones.testing import tiny_name
from clip_biomed.dassl import TRAINER_REGISTRY, build_trainer
from clip_biomed.prompt_learner import PromptLearner
from trainers.biomedap import CrossModalPromptFusion, alignment_loss, biomedap_losses
from trainers.biomeddpt import biomeddpt_losses, kl_to_teacher
from trainers.cliplora import LoRALinear
from trainers.clipsvd import SingularValueLinear

PLUGINS = train.import_plugins([])
REPO = train.REPO_ROOT
NODES = {"BiomedDPT": "BIOMEDDPT", "BiomedAP": "BIOMEDAP", "CLIPSVD": "CLIPSVD", "CLIPLoRA": "CLIPLORA"}
CONFIGS = {"BiomedDPT": "BiomedDPT/few_shot/btmri.yaml", "BiomedAP": "BiomedAP/few_shot/btmri.yaml",
           "CLIPSVD": "CLIPSVD/few_shot/btmri.yaml", "CLIPLoRA": "CLIPLoRA/few_shot.yaml"}
# tiny towers have 2 blocks; 8 LLM prompts and one LoRA iteration per shot keep runs short
TINY = {"BiomedDPT": ["TRAINER.BIOMEDDPT.N_PROMPTS", "8"],
        "BiomedAP": ["TRAINER.BIOMEDAP.N_PROMPTS", "8", "TRAINER.BIOMEDAP.FUSION_LAYERS", "[0, 1]"],
        "CLIPSVD": [], "CLIPLoRA": ["TRAINER.CLIPLORA.ITERATIONS_PER_SHOT", "1"]}


def make_trainer(method, root, model_dir, out_dir, *opts, shots=4):
    node = NODES[method]
    args = train.build_parser().parse_args([
        "--root", str(root), "--trainer", method, "--seed", "1", "--output-dir", str(out_dir),
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, "configs/trainers", CONFIGS[method]),
        "MODEL.BACKBONE.NAME", tiny_name(model_dir), "DATASET.NUM_SHOTS", str(shots), "OPTIM.MAX_EPOCH", "1",
        "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "50",
        f"TRAINER.{node}.PREC", "fp32", *TINY[method], *opts,
    ])
    return build_trainer(train.setup_cfg(args, PLUGINS))


@pytest.fixture
def trainer_for(synthetic_root, tiny_root, tmp_path):
    """make(method, *opts, family="biomedclip") -> a trainer writing into tmp_path."""
    def make(method, *opts, family="biomedclip", out="run"):
        return make_trainer(method, synthetic_root, tiny_root / family, tmp_path / out, *opts)
    return make


def one_batch(trainer):
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10
    return next(iter(trainer.train_loader_x))


def trainable_names(trainer):
    return sorted(name for name, _ in trainer.trainable_parameters())


def loss_of(trainer, batch):
    """The training loss of ``batch`` with every source of randomness off (dropout)."""
    trainer.set_model_mode("eval")
    image, label = trainer.parse_batch_train(batch)
    with torch.no_grad():
        if hasattr(trainer, "losses"):
            return float(sum(trainer.losses(image, label)[0].values()))
        logits = trainer.scale * trainer.tuned_image_features(image) @ trainer.text_features().t()
        return float(F.cross_entropy(logits, label))


def test_published_trainer_names_are_aliases():
    for alias, backbone in [("BiomedDPT_BiomedCLIP", "BiomedCLIP"), ("BiomedDPT_CLIP", "CLIP"),
                            ("BiomedAP_BiomedCLIP", "BiomedCLIP"), ("BiomedAP_PubMedCLIP", "PubMedCLIP")]:
        assert TRAINER_REGISTRY.get(alias).backbone_name == backbone
    for method in ("CLIPSVD", "CLIPLoRA"):  # not Dassl code: no published trainer names
        assert method in TRAINER_REGISTRY.registered_names()


# -- loss terms against independent computations on fixed tensors --------------------------------


def test_dpt_loss_terms():
    torch.manual_seed(0)
    logits, teacher = torch.randn(4, 3), torch.randn(4, 3)
    text, anchors = F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    labels = torch.tensor([0, 2, 1, 1])
    losses = biomeddpt_losses(logits, labels, text, anchors, teacher, l1_lambda=2.0, kl_lambda=0.5)
    p, p0 = logits.softmax(1), teacher.softmax(1)
    kl = sum(p0[b, c] * (math.log(p0[b, c]) - math.log(p[b, c])) for b in range(4) for c in range(3)) / 12
    l1 = sum(abs(text[c, k] - anchors[c, k]) for c in range(3) for k in range(8)) / 24
    ce = -sum(math.log(p[b, labels[b]]) for b in range(4)) / 4
    assert losses["ce"].item() == pytest.approx(float(ce), rel=1e-5)
    assert losses["l1"].item() == pytest.approx(2.0 * float(l1), rel=1e-5)
    assert losses["kl"].item() == pytest.approx(0.5 * float(kl), rel=1e-5)
    assert kl_to_teacher(logits, logits).item() == pytest.approx(0.0, abs=1e-7)


def test_ap_loss_terms():
    torch.manual_seed(1)
    fused = [torch.randn(2, 3, 8), torch.randn(2, 3, 8)]
    context = torch.randn(2, 3, 8)
    expected = 0.0
    for out in fused:
        cosines = [F.cosine_similarity(out[b].mean(0), context[b].mean(0), dim=0) for b in range(2)]
        expected += (1 - sum(cosines) / 2) / 2
    assert alignment_loss(fused, context).item() == pytest.approx(float(expected), rel=1e-5)

    class Opts:
        L1_LAMBDA_HIGH, KL_LAMBDA, L1_LAMBDA_LOW, ALIGNMENT_LAMBDA = 1.0, 1.0, 3.0, 0.1

    text, low = torch.randn(3, 8), torch.randn(3, 8)
    losses = biomedap_losses(torch.randn(2, 3), torch.tensor([0, 1]), text, torch.randn(3, 8), low,
                             torch.randn(2, 3), fused, context, Opts)
    assert losses["l1_low"].item() == pytest.approx(3.0 * float((text - low).abs().mean()), rel=1e-6)
    assert losses["align"].item() == pytest.approx(0.1 * float(expected), rel=1e-5)
    assert "align" not in biomedap_losses(torch.randn(2, 3), torch.tensor([0, 1]), text, text, low,
                                          torch.randn(2, 3), [], context, Opts)


def test_fusion_block_formula():
    torch.manual_seed(2)
    fusion = CrossModalPromptFusion(16, 16, num_heads=4, dropout=0.0).eval()
    v, t = torch.randn(2, 4, 16), torch.randn(2, 3, 16)
    v_out, t_out = fusion(v, t)
    a_v = fusion.visual_to_text_attn(v, t, t)[0]
    gate = torch.sigmoid(fusion.gate_v(v))
    v_hat = F.layer_norm(v + gate * v + (1 - gate) * a_v, (16,), fusion.norm_v.weight, fusion.norm_v.bias)
    assert torch.allclose(v_out, v_hat + fusion.ffn_v(v_hat), atol=1e-6)
    assert t_out.shape == t.shape
    # 15,353,856 parameters per module at BiomedCLIP's widths (reference/newer_methods.md §2.1)
    assert sum(p.numel() for p in CrossModalPromptFusion(768, 768).parameters()) == 15_353_856


def test_singular_value_and_lora_layers_against_their_formulas():
    torch.manual_seed(3)
    linear = torch.nn.Linear(6, 4)
    x = torch.randn(5, 6)
    svd = SingularValueLinear(linear)
    assert torch.equal(svd(x), linear(x)), "bit-for-bit the frozen layer at initialisation"
    with torch.no_grad():
        svd.sigma.mul_(torch.tensor([1.5, 1.0, 0.5, 2.0]))
    u, s, vh = torch.linalg.svd(linear.weight.detach())
    reparameterised = u @ torch.diag(svd.sigma.detach()) @ vh[:4]
    assert torch.allclose(svd(x), x @ reparameterised.t() + linear.bias, atol=1e-5)
    assert [name for name, _ in svd.named_parameters()] == ["sigma"] and list(svd.state_dict()) == ["sigma"]

    lora = LoRALinear(linear, rank=2, alpha=1.0, dropout=0.25).eval()
    assert torch.equal(lora(x), linear(x))
    with torch.no_grad():
        lora.lora_B.normal_()
    update = lora.lora_B @ lora.lora_A / math.sqrt(2)
    assert torch.allclose(lora(x), linear(x) + x @ update.t(), atol=1e-6)
    assert sorted(lora.state_dict()) == ["lora_A", "lora_B"]


# -- prompt layouts: the class-token position is what the config says ----------------------------


@pytest.fixture(scope="module")
def backbone(tiny_biomedclip):
    return build_backbone(tiny_name(tiny_biomedclip), device="cpu")


@pytest.mark.parametrize("position,move_one_token,sentence", [
    ("end", False, "a mri scan of a {} in the brain."),
    ("middle", False, "a mri {} scan of a in the brain."),          # the class name between the halves
    ("middle", True, "a mri {first} scan of a {rest} in the brain."),  # published: one token moved
    ("front", False, "{} a mri scan of a in the brain."),
])
def test_template_prompts_encode_the_sentence_the_position_says(backbone, position, move_one_token, sentence):
    names = ["pituitary tumor", "normal brain"]
    learner = PromptLearner(backbone, names, n_ctx=5, ctx_init="a mri scan of a", template="a mri scan of a {} in the brain.",
                            class_token_position=position, move_one_token=move_one_token)
    expected_texts = [sentence.format(name, first=name.split()[0], rest=" ".join(name.split()[1:])) for name in names]
    with torch.no_grad():
        got = backbone.encode_text_embeddings(learner(), learner.token_ids)
        expected = backbone.encode_text(backbone.tokenize(expected_texts))
    assert torch.allclose(got, expected, atol=1e-5)


def test_template_longer_than_the_context_keeps_its_other_words(backbone):
    # COVID's N_CTX 6 covers "a chest x - ray photo"; "of a" stay fixed, and a long CTX_INIT is cut to N_CTX
    learner = PromptLearner(backbone, ["covid lungs"], n_ctx=6, ctx_init="a chest x-ray photo of a",
                            template="a chest x-ray photo of a {} in the lung.")
    words = backbone.token_embedding(backbone.tokenize(["a chest x-ray photo of a"]))[0, 1:7]
    assert torch.allclose(learner.ctx, words)
    with pytest.raises(ValueError, match="replace class-name tokens"):
        PromptLearner(backbone, ["covid lungs"], n_ctx=4, template="a photo {}.")


# -- the trainers ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["BiomedDPT", "BiomedAP"])
def test_dual_prompt_methods_train_only_their_parts_and_one_step_lowers_the_loss(trainer_for, method):
    trainer = trainer_for(method, "TRAINER.%s.TEXT_DROPOUT" % NODES[method], "False", "OPTIM.WARMUP_EPOCH", "0",
                          "OPTIM.LR", "0.05")
    names = trainable_names(trainer)
    assert names[-1] == "prompt_learner.ctx"
    if method == "BiomedAP":
        assert {n.split(".")[1] for n in names if n.startswith("fusion.")} == {"0", "1"}
    else:
        assert names == ["prompt_learner.ctx"]
    backbone_before = [p.detach().clone() for p in trainer.backbone.parameters()]
    batch = one_batch(trainer)
    before = loss_of(trainer, batch)
    trainer.set_model_mode("train")
    summary = trainer.forward_backward(batch)
    assert summary["loss"] == pytest.approx(sum(v for k, v in summary.items() if k.startswith("loss_")), rel=1e-5)
    assert loss_of(trainer, batch) < before
    assert all(torch.equal(a, b) for a, b in zip(backbone_before, trainer.backbone.parameters()))


def test_dpt_zero_prompts_match_the_published_forward(trainer_for):
    """The published image path (reference §1.3 step 3), written out on timm's modules: zeros over
    patch tokens 1-4 before every block (overwrite), or 4 zero tokens inserted after CLS (insert)."""
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    for mode in ("overwrite", "insert"):
        trainer = trainer_for("BiomedDPT", "TRAINER.BIOMEDDPT.VISUAL_PROMPTS", mode, out=mode)
        visual = trainer.backbone.model.visual
        trunk = visual.trunk
        with torch.no_grad():
            x = trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(images))))
            if mode == "insert":
                x = torch.cat([x[:, :1], torch.zeros(3, 4, x.shape[2]), x[:, 1:]], dim=1)
            for block in trunk.blocks:
                x = x.clone()
                x[:, 1:5] = 0
                x = block(x)
            if mode == "insert":
                x = torch.cat([x[:, :1], x[:, 5:]], dim=1)
            expected = F.normalize(visual.head(trunk.forward_head(trunk.norm(x))), dim=-1)
            got = trainer.prompted_image_features(images, trainer.image_hooks())
        assert torch.allclose(got, expected, atol=1e-6), mode
        assert not torch.allclose(got, F.normalize(trainer.backbone.encode_image(images), dim=-1), atol=1e-3)


def test_ap_uses_no_label_at_test_time_and_the_label_context_only_when_asked(trainer_for):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    for context in ("mean", "label"):
        trainer = trainer_for("BiomedAP", "TRAINER.BIOMEDAP.CLASS_TOKEN_POSITION", "middle",
                              "TRAINER.BIOMEDAP.TRAIN_FUSION_CONTEXT", context, out=context)
        trainer.set_model_mode("eval")
        with torch.no_grad():
            prompts = trainer.prompt_learner()
            mean_context = trainer.context_tokens(prompts).mean(0, keepdim=True)
            by_mean = trainer.prompted_image_features(images, trainer.fused_hooks(mean_context, []))
            logits = trainer.model_inference(images)  # takes no labels
            expected = trainer.backbone.logit_scale * by_mean @ trainer.text_features_of(prompts).t()
            assert torch.allclose(logits, expected, atol=1e-5)
            features = [trainer.losses(images, torch.tensor([label, label]))[1] for label in (0, 1)]
        assert torch.allclose(*features, atol=1e-6) == (context == "mean")


def test_ap_text_half_of_the_fusion_learns_only_from_the_alignment_loss(trainer_for):
    trainer = trainer_for("BiomedAP", "TRAINER.BIOMEDAP.ALIGNMENT_LAMBDA", "0.0")
    batch = one_batch(trainer)
    trainer.forward_backward(batch)
    grads = {name: p.grad for name, p in trainer.fusion.named_parameters()}
    text_half = [n for n in grads if n.split(".")[1] in ("text_to_visual_attn", "gate_t", "norm_t", "ffn_t")]
    assert text_half and all(grads[n] is None or not grads[n].any() for n in text_half)
    assert grads["0.gate_v.bias"].abs().sum() > 0 and grads["0.visual_to_text_attn.in_proj_weight"].abs().sum() > 0


@pytest.mark.parametrize("method", ["CLIPSVD", "CLIPLoRA"])
@pytest.mark.parametrize("family", ["biomedclip", "pubmedclip"])
def test_reparameterisations_are_exact_at_initialisation(trainer_for, tiny_root, method, family):
    trainer = trainer_for(method, family=family)
    frozen = build_backbone(tiny_name(tiny_root / family), device="cpu")
    images = next(iter(trainer.test_loader))["img"][:8]
    names = ["a photo of a %s." % name.replace("_", " ") for name in trainer.dm.dataset.classnames]
    with torch.no_grad():
        text = F.normalize(frozen.encode_text(frozen.tokenize(names)), dim=-1)
        expected = frozen.logit_scale * F.normalize(frozen.encode_image(images), dim=-1) @ text.t()
    trainer.set_model_mode("eval")
    assert torch.allclose(trainer.model_inference(images), expected, atol=1e-4)


@pytest.mark.parametrize("method,per_block", [("CLIPSVD", 6 * 64), ("CLIPLoRA", 3 * 2 * (64 + 64))])
def test_tower_tuning_trains_only_the_new_parameters_and_one_step_lowers_the_loss(trainer_for, method, per_block):
    trainer = trainer_for(method, "OPTIM.LR", "0.01", "TRAINER.%s.TEXT_DROPOUT" % NODES[method], "False",
                          *(["TRAINER.CLIPLORA.DROPOUT", "0.0"] if method == "CLIPLoRA" else []))
    params = trainer.trainable_parameters()
    assert sum(p.numel() for _, p in params) == 2 * 2 * per_block  # 2 towers x 2 blocks
    assert all(name.split(".")[-1] in ("sigma", "lora_A", "lora_B") for name, _ in params)
    assert not any(p.requires_grad for p in trainer.backbone.parameters() if not any(p is q for _, q in params))
    batch = one_batch(trainer)
    before = loss_of(trainer, batch)
    trainer.set_model_mode("train")
    trainer.forward_backward(batch)
    grads = {name: p.grad for name, p in params}
    if method == "CLIPLoRA":  # B starts at zero, so A's first gradient is zero and B's is not
        assert all(not grads[n].any() for n in grads if n.endswith("lora_A"))
        assert all(grads[n].any() for n in grads if n.endswith("lora_B"))
    else:
        assert all(g.any() for g in grads.values())
    assert loss_of(trainer, batch) < before


def test_svd_schedule_spans_the_run_and_the_published_one_restarts(trainer_for):
    fixed = trainer_for("CLIPSVD", "OPTIM.MAX_EPOCH", "3", "DATALOADER.TRAIN_X.BATCH_SIZE", "4")
    batches = len(fixed.train_loader_x)
    assert batches == 4 and fixed._scheds["adapters"].T_max == 3 * batches
    published = trainer_for("CLIPSVD", "OPTIM.MAX_EPOCH", "3", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
                            "TRAINER.CLIPSVD.T_MAX_IN_EPOCHS", "True", out="published")
    sched = published._scheds["adapters"]
    lrs = []
    for _ in range(3 * batches):
        published._optims["adapters"].step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[2] == pytest.approx(1e-6, abs=1e-9) and lrs[5] == pytest.approx(published.cfg.OPTIM.LR), \
        "T_max = 3 epochs stepped per iteration: minimum after 3 iterations, back to the start after 6"
    with pytest.raises(ValueError, match="WARMUP_EPOCH 0"):
        trainer_for("CLIPSVD", "OPTIM.WARMUP_EPOCH", "1", out="warmup")


def test_lora_runs_for_its_iteration_budget(trainer_for):
    trainer = trainer_for("CLIPLoRA", "TRAINER.CLIPLORA.ITERATIONS_PER_SHOT", "3", "DATALOADER.TRAIN_X.BATCH_SIZE", "8")
    assert len(trainer.train_loader_x) == 2  # 4 shots x 4 classes / 8
    assert trainer.max_epoch == 6 and trainer._scheds["adapters"].T_max == 12  # 3 x 4 shots = 12 iterations


@pytest.mark.parametrize("method,keys", [
    ("BiomedDPT", {"ctx", "_extra_state"}),
    ("CLIPSVD", None),
])
def test_checkpoints_hold_only_the_new_parameters_and_round_trip(trainer_for, tmp_path, method, keys):
    trainer = trainer_for(method)
    trainer.train()
    name = trainer.get_model_names()[0]
    state = torch.load(tmp_path / "run" / name / "model.pth.tar-1", weights_only=True)["state_dict"]
    trained = {n.split(".", 1)[1] for n, _ in trainer.trainable_parameters()}
    assert set(state) == (keys or trained | {"_extra_state"})
    assert state["_extra_state"]["backbone"] == trainer.backbone_label
    fresh = trainer_for(method, out="fresh")
    images = next(iter(trainer.test_loader))["img"][:4]
    fresh.load_model(str(tmp_path / "run"))
    trainer.set_model_mode("eval")
    fresh.set_model_mode("eval")
    assert torch.allclose(fresh.model_inference(images), trainer.model_inference(images), atol=1e-6)
    with pytest.raises(FileNotFoundError):
        fresh.load_model(str(tmp_path / "nothing"))


def test_every_config_of_the_new_methods_loads():
    checked = 0
    for method in NODES:
        folder = os.path.join(REPO, "configs/trainers", method)
        for dirpath, _, files in os.walk(folder):
            for file in files:
                args = train.build_parser().parse_args(["--trainer", method, "--config-file", os.path.join(dirpath, file)])
                cfg = train.setup_cfg(args, PLUGINS)
                checked += 1
                assert cfg.TRAINER[NODES[method]].PREC in ("fp32", "amp")
    # DPT, AP: 11 datasets + generic per protocol; SVD: 10 + 9 published + DermaMNIST x 2 + generic x 2; LoRA: generic
    assert checked == 24 + 24 + 23 + 2
    def load(path):
        return train.setup_cfg(train.build_parser().parse_args(
            ["--trainer", path.split("/")[0], "--config-file", os.path.join(REPO, "configs/trainers", path)]), PLUGINS)
    covid = load("BiomedDPT/few_shot/covid.yaml").TRAINER.BIOMEDDPT
    assert (covid.N_CTX, covid.L1_LAMBDA, covid.KL_LAMBDA) == (6, 65.0, 2.5)
    assert load("CLIPSVD/base_to_novel/ctkidney.yaml").TRAINER.CLIPSVD.LAYERS == "top_middle"
    assert load("CLIPSVD/few_shot/covid.yaml").TRAINER.CLIPSVD.TEMPLATE == "a chest xray of {}."


# -- the launch scripts ---------------------------------------------------------------------------


def test_every_new_few_shot_script_trains_one_seed_and_is_parsed(synthetic_root, tiny_biomedclip, tmp_path, capsys):
    env = {**os.environ, "DATA": str(synthetic_root), "OUTPUT": str(tmp_path / "output"), "PYTHON": sys.executable,
           "SEEDS": "1"}
    fast = ["INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1"]
    scripts = {"biomeddpt": "BiomedDPT", "biomedap": "BiomedAP", "clipsvd": "CLIPSVD", "cliplora": "CLIPLoRA"}
    runs = {script: subprocess.Popen(
        ["bash", os.path.join(REPO, "scripts", script, "few_shot.sh"), "btmri", "2", tiny_name(tiny_biomedclip),
         *fast, *TINY[method]], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for script, method in scripts.items()}
    tails = {"BiomedDPT": "nctx5_cscFalse_ctpmiddle", "BiomedAP": "nctx5_cscFalse_ctpend"}  # from btmri.yaml
    for script, method in scripts.items():
        output = runs[script].communicate(timeout=600)[0]
        assert runs[script].returncode == 0, output[-3000:]
        folder = tmp_path / "output/btmri/shots_2" / f"{method}_{tiny_biomedclip.name}" / tails.get(method, "")
        parse_test_res.main([str(folder)])
        parsed = capsys.readouterr().out
        assert "Number of seeds (log files): 1" in parsed and "* accuracy:" in parsed, parsed


def test_base2new_scripts_keep_busi_out_and_name_what_runs():
    env = {**os.environ, "DRY_RUN": "1", "SEEDS": "1"}
    for script in ("biomeddpt", "biomedap", "clipsvd", "cliplora"):
        path = os.path.join(REPO, "scripts", script, "base2new.sh")
        refused = subprocess.run(["bash", path, "busi"], env=env, capture_output=True, text=True)
        assert refused.returncode == 2 and "B2N_ALLOW_BUSI=1" in refused.stderr
        lines = subprocess.run(["bash", path, "btmri"], env=env, capture_output=True, text=True, check=True).stdout
        assert lines.count("run\t") == 2 and "--eval-only" in lines and "DATASET.SUBSAMPLE_CLASSES new" in lines
    dpt = subprocess.run(["bash", os.path.join(REPO, "scripts/biomeddpt/base2new.sh"), "covid"],
                         env={**env, "CTP": "end"}, capture_output=True, text=True, check=True).stdout
    assert "nctx6_cscFalse_ctpend" in dpt and "TRAINER.BIOMEDDPT.CLASS_TOKEN_POSITION end" in dpt
