"""python -m clip_biomed.predict: a trained run (or a released checkpoint, or a run without a trained
state) rebuilt without its dataset gives the probabilities the trained trainer gives."""
import csv
import json
import os

import pytest
import torch

from clip_biomed import predict
from clip_biomed.backbones.testing import tiny_name
from clip_biomed.data_tools.catalog import published_dataset
from clip_biomed.dassl import build_transform, read_image
from clip_biomed.method import ClipTrainer, register_method
from clip_biomed.published_checkpoints import checkpoint_path
from tests.test_biomedcoop_trainer import make_trainer, write_published_checkpoint
from tests.test_methods_on_families import METHODS, one_step_trainer

SMALL = ["INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0"]


class PredictTestZeroShot(ClipTrainer):
    """A method without a trained state: "a photo of a {class}." as the classifier."""

    METHOD = CONFIG_NODE = "BIOMEDCOOP"  # borrows TRAINER.BIOMEDCOOP.PREC

    def build_model(self):
        self.build_backbone()

    def logits_from_features(self, image_features):
        text = self.eval_constant("text", self.class_text_features)
        return self.backbone.logit_scale * image_features @ text.t()


register_method(PredictTestZeroShot, {})


def images_of(root, label_folder, n=3):
    folder = root / "BTMRI" / "BTMRI" / label_folder
    return sorted(str(p) for p in folder.iterdir())[:n]


def trained_probabilities(trainer, paths):
    transform = build_transform(trainer.cfg, is_train=False)
    trainer.set_model_mode("eval")
    with torch.no_grad():
        logits = trainer.model_inference(torch.stack([transform(read_image(p)) for p in paths]))
    return logits.softmax(dim=-1)


@pytest.fixture(scope="module")
def trained_run(synthetic_root, tiny_biomedclip, tmp_path_factory):
    """A BiomedCoOp run trained one epoch, whose context is then moved well away from its
    initialisation (so that predicting with an unloaded context would show)."""
    run = tmp_path_factory.mktemp("run")
    trainer = make_trainer(synthetic_root, tiny_biomedclip, run, "OPTIM.MAX_EPOCH", "1")
    trainer.train()
    with torch.no_grad():
        trainer.prompt_learner.ctx.add_(torch.randn_like(trainer.prompt_learner.ctx))
    trainer.save_model(0, str(run))
    predict.write_run_info(trainer, trainer.cfg)
    return trainer, run


def test_predictions_are_those_of_the_trained_run(trained_run, synthetic_root):
    trainer, run = trained_run
    info = json.loads((run / predict.RUN_INFO).read_text())
    assert info["trainer"] == "BiomedCoOp" and info["classnames"] == list(trainer.dm.dataset.classnames)
    paths = images_of(synthetic_root, "glioma_tumor") + images_of(synthetic_root, "normal_brain")
    predictor = predict.Predictor(str(run))
    expected = trained_probabilities(trainer, paths)
    torch.testing.assert_close(predictor.probabilities(paths), expected, rtol=1e-5, atol=1e-6)
    (first, *_) = predictor.predict(paths, topk=2)
    assert first.path == paths[0] and len(first.top) == 2
    best = int(expected[0].argmax())
    assert first.top[0] == (trainer.dm.dataset.classnames[best], pytest.approx(float(expected[0, best])))
    assert first.top[0][1] >= first.top[1][1]


def test_cli_prints_and_writes_csv_for_a_folder_and_a_checkpoint_file(trained_run, synthetic_root, tmp_path,
                                                                      capsys):
    _, run = trained_run
    folder = synthetic_root / "BTMRI" / "BTMRI" / "pituitary_tumor"
    out = tmp_path / "predictions.csv"
    checkpoint = run / "prompt_learner" / "model.pth.tar-1"
    assert predict.main([str(checkpoint), str(folder), "--topk", "9", "--csv", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(folder))]
    n_images = len(os.listdir(folder))
    assert len(lines) == n_images and lines[0].count("%") == 4  # topk capped at the 4 classes
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 * n_images and {r["rank"] for r in rows} == {"1", "2", "3", "4"}
    assert sum(float(r["probability"]) for r in rows[:4]) == pytest.approx(1.0, abs=1e-4)

    assert predict.main([str(run), str(tmp_path / "nothing.png")]) == 1
    assert "No image file or folder at" in capsys.readouterr().err


def test_released_checkpoint_without_run_info(tiny_biomedclip, synthetic_root, tmp_path):
    from clip_biomed.backbones import build_backbone

    ctx = torch.randn(4, build_backbone(tiny_name(tiny_biomedclip), device="cpu").ctx_dim)
    path = tmp_path / checkpoint_path("few_shot", "btmri", 4, 1)
    write_published_checkpoint(str(path), ctx)
    predictor = predict.Predictor(str(path), backbone=tiny_name(tiny_biomedclip), opts=SMALL)
    assert predictor.classnames == list(published_dataset("BTMRI").classnames)  # in label order
    torch.testing.assert_close(predictor.trainer.prompt_learner.ctx.detach(), ctx)
    assert len(predictor.predict(images_of(synthetic_root, "normal_brain", 2), topk=1)) == 2


def test_a_run_without_trained_state(synthetic_root, tiny_biomedclip, tmp_path):
    trainer = make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "zs", trainer="PredictTestZeroShot")
    predict.write_run_info(trainer, trainer.cfg)
    paths = images_of(synthetic_root, "meningioma_tumor", 2)
    probabilities = predict.Predictor(str(tmp_path / "zs")).probabilities(paths)
    torch.testing.assert_close(probabilities, trained_probabilities(trainer, paths))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_predicts_as_its_trained_run(method, synthetic_root, tiny_biomedclip, tmp_path):
    """Each method trained one step (or not at all: zero-shot) and rebuilt from its run folder alone."""
    run = tmp_path / "run"
    trainer = one_step_trainer(method, tiny_name(tiny_biomedclip), synthetic_root, run)
    if trainer.get_model_names():
        trainer.train()
    predict.write_run_info(trainer, trainer.cfg)
    paths = images_of(synthetic_root, "glioma_tumor", 2) + images_of(synthetic_root, "normal_brain", 2)
    torch.testing.assert_close(predict.Predictor(str(run)).probabilities(paths), trained_probabilities(trainer, paths),
                               rtol=1e-5, atol=1e-6)
