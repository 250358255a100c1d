"""Tiny models contrastively pre-trained ("aligned") on a dataset: they classify it zero-shot, are
written back in their family's own files, and the training is deterministic and side-effect free."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from clip_biomed.backbones import build_backbone  # noqa: E402
from clip_biomed.backbones.__main__ import main as backbones_cli  # noqa: E402
from clip_biomed.backbones.align import (AlignSettings, align_backbone, contrastive_loss,  # noqa: E402
                                         random_crop_flip, read_image_set, zero_shot_accuracy)
from clip_biomed.backbones.testing import TINY_FAMILIES, make_tiny, tiny_name  # noqa: E402
from clip_biomed.backbones.tiny import align_tiny  # noqa: E402
from clip_biomed.data_tools.synthetic import write_synthetic_dataset  # noqa: E402

FEW_STEPS = AlignSettings(steps=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The demo's dataset: synthetic BTMRI, 40 images per class (80 train, 48 test), 32 px."""
    return write_synthetic_dataset(str(tmp_path_factory.mktemp("data")), "BTMRI", per_class=40, size=32)


@pytest.fixture(scope="module")
def aligned(tmp_path_factory, dataset):
    """A tiny BiomedCLIP aligned with the default settings (what the demo uses)."""
    out = make_tiny("biomedclip", tmp_path_factory.mktemp("aligned"))
    return out, align_tiny("biomedclip", out, dataset)


def _state(backbone):
    return {k: v.clone() for k, v in backbone.state_dict().items()}


def _features(backbone, images):
    ids = backbone.tokenize(["a photo of a glioma tumor.", "normal brain", "an image of pituitary tumor"])
    with torch.no_grad():
        return backbone.encode_image(images), backbone.encode_text(ids), backbone.logit_scale


def test_aligned_model_classifies_zero_shot_and_the_random_one_does_not(aligned, dataset):
    out, result = aligned
    assert result.zero_shot_before < 40.0  # 4 classes: chance is 25%
    assert result.zero_shot_after > 60.0
    reloaded = build_backbone(tiny_name(out), device="cpu")
    test = read_image_set(dataset, "test", reloaded.preprocess)
    assert zero_shot_accuracy(reloaded, test) == pytest.approx(result.zero_shot_after)
    # other phrasings of the class seen in training work too
    assert zero_shot_accuracy(reloaded, test, "an image of {}") > 60.0


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_aligned_directory_reloads_the_trained_weights(family, dataset, tmp_path):
    out = make_tiny(family, tmp_path / family)
    random_model = build_backbone(tiny_name(out), device="cpu")
    result = align_tiny(family, out, dataset, FEW_STEPS)
    reloaded = build_backbone(tiny_name(out), device="cpu")
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    trained, again, before = (_features(b, images) for b in (result.backbone, reloaded, random_model))
    # PubMedCLIP's file keeps the weights in fp16, as OpenAI checkpoints do
    tolerance = dict(rtol=2e-2, atol=2e-2) if family == "pubmedclip" else dict(rtol=0, atol=1e-6)
    for a, b, r in zip(trained, again, before):
        torch.testing.assert_close(b, a, **tolerance)
        assert not torch.allclose(b, r, atol=1e-3), "the files must hold the trained weights, not the random ones"


def test_alignment_trains_both_towers_and_leaves_the_backbone_frozen(tiny_biomedclip, dataset):
    backbone = build_backbone(tiny_name(tiny_biomedclip), device="cpu")
    before = _state(backbone)
    align_backbone(backbone, dataset, FEW_STEPS)
    after = backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("model.visual.") for k in changed)
    assert any(k.startswith("model.text.") for k in changed)
    assert "model.logit_scale" in changed
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not any(m.training for m in backbone.modules())


def test_alignment_is_deterministic_for_a_seed(tiny_biomedclip, dataset):
    def aligned_state(seed):
        backbone = build_backbone(tiny_name(tiny_biomedclip), device="cpu")
        align_backbone(backbone, dataset, AlignSettings(steps=10, seed=seed))
        return backbone.state_dict()

    first, second, other_seed = aligned_state(0), aligned_state(0), aligned_state(1)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other_seed[k]) for k in first)


def test_alignment_leaves_the_callers_random_stream_and_threads(tiny_biomedclip, dataset):
    backbone = build_backbone(tiny_name(tiny_biomedclip), device="cpu")
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    align_backbone(backbone, dataset, FEW_STEPS)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_bad_dataset_path_names_the_missing_split_file(tmp_path, capsys):
    missing = tmp_path / "data" / "BTMRI"
    with pytest.raises(SystemExit) as exit_info:
        backbones_cli(["tiny", "--family", "biomedclip", "--out", str(tmp_path / "model"),
                       "--align-to", str(missing)])
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert str(missing / "split_BTMRI.json") in message and "published layout" in message
    assert not (tmp_path / "model").exists(), "nothing is written when the dataset is missing"


def test_cli_writes_an_aligned_model_and_reports_zero_shot(dataset, tmp_path, capsys):
    out = tmp_path / "model"
    assert backbones_cli(["tiny", "--family", "clip", "--out", str(out), "--align-to", str(dataset),
                          "--align-steps", "2", "--seed", "1", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"Aligned to {dataset}: 2 steps on 80 train images" in printed
    assert "zero-shot accuracy on its test split" in printed and f"local-dir:{out.resolve()}" in printed
    build_backbone(tiny_name(out), device="cpu")


def test_at_least_one_step(tiny_biomedclip, dataset, tmp_path, capsys):
    backbone = build_backbone(tiny_name(tiny_biomedclip), device="cpu")
    with pytest.raises(ValueError, match="at least 1 step"):
        align_backbone(backbone, dataset, AlignSettings(steps=0))
    with pytest.raises(SystemExit):
        backbones_cli(["tiny", "--family", "biomedclip", "--out", str(tmp_path / "model"), "--align-to", dataset,
                       "--align-steps", "0"])
    assert "--align-steps must be at least 1" in capsys.readouterr().err


def test_contrastive_loss_is_clips_loss_for_one_caption_per_class():
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(5, 8, generator=generator), torch.randn(5, 8, generator=generator)
    labels = torch.arange(5)
    logits = 10.0 * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).t()
    clip_loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    assert contrastive_loss(images, texts, labels, labels, torch.tensor(10.0)) == pytest.approx(clip_loss.item())


def test_contrastive_loss_counts_every_caption_of_the_class_as_positive():
    # two images of class 0, one of class 1; captions: two of class 0, one of class 1
    image_labels, text_labels = torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1])
    class_directions = torch.eye(2)
    features = class_directions[image_labels]
    aligned = contrastive_loss(features, features, image_labels, text_labels, torch.tensor(50.0))
    swapped = contrastive_loss(features, class_directions[1 - text_labels], image_labels, text_labels,
                               torch.tensor(50.0))
    # all positives equally similar: the loss is the entropy of the targets (ln 2 for class 0 rows)
    assert aligned.item() == pytest.approx((2 * torch.log(torch.tensor(2.0)).item()) / 3, abs=1e-4)
    assert swapped > aligned + 10


def test_random_crops_keep_the_image_at_full_crop_area():
    pixels = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    cropped = random_crop_flip(pixels, min_area=1.0)
    flipped = pixels.flip(-1)
    for original, mirror, out in zip(pixels, flipped, cropped):
        assert torch.allclose(out, original, atol=1e-5) or torch.allclose(out, mirror, atol=1e-5)
    assert not torch.allclose(random_crop_flip(pixels, min_area=0.5), pixels, atol=1e-3)
