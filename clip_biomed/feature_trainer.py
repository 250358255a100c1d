"""``FeatureTrainer``: the base of the feature-based methods (CLIP-Adapter, Tip-Adapter, linear probes).

These methods never run the image tower while they learn: they fit a small head on frozen,
L2-normalised image features, which come from the feature cache (``feature_cache.py``) like every
evaluation's.  A method subclasses ``FeatureTrainer``, sets ``METHOD``, ``CONFIG_NODE`` and
``HEAD_NAME``, and implements

* ``build_head()``: the ``nn.Module`` it learns (registered under ``HEAD_NAME``, so it is what the
  checkpoint holds and what ``--eval-only`` loads);
* ``fit()``: learn it from :meth:`train_view`, :meth:`train_labels`, :meth:`split_features`
  (``"val"`` for every selection: no method ever sees the test labels before its final test),
  :meth:`text_weights` and :meth:`scale`;
* ``logits_from_features(features)``.

Run by ``train.py`` like every trainer: Dassl's loop makes one pass (``epoch 1/1``) whose
``run_epoch`` is ``fit()`` (``OPTIM.MAX_EPOCH`` and the other ``OPTIM.*`` keys are the method's own
epochs over the features), saves ``<HEAD_NAME>/model.pth.tar-1`` and tests the fitted head on the
(cached) test features, printing Dassl's result block that ``parse_test_res.py`` reads.

Augmented training views (what the published code recomputes every epoch): view ``v`` of seed ``S``
is, for each training image ``i`` of the few-shot list (in its order), the train transform
(``INPUT.TRANSFORMS``) applied with Python's, NumPy's and torch's RNGs seeded from ``(S, v, i)``,
then the frozen image tower, L2-normalised.  Views are therefore the same in every run, method and
worker count for a seed, and are cached under (seed, view): a method that trains ``E`` epochs on
fresh augmentations encodes ``E`` passes of its few-shot images once, and never again.  Computing a
view leaves the global RNGs untouched.  With ``SEED < 0`` views are drawn from fresh entropy and
not cached.
"""
from __future__ import annotations

import random
import secrets
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from clip_biomed.method import ClipTrainer

__all__ = ["FeatureTrainer", "SeededViews", "BestOnVal", "preserved_rngs"]


@contextmanager
def preserved_rngs():
    """Run a block without changing the state of Python's, NumPy's or torch's (CPU) global RNG."""
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


class SeededViews(torch.utils.data.Dataset):
    """``wrapper[i]`` (a Dassl ``DatasetWrapper`` with the train transform) with every RNG the
    transform may draw from seeded from ``(seed, view, i)``."""

    def __init__(self, wrapper, seed: int, view: int):
        self.wrapper, self.seed, self.view = wrapper, seed, view

    @property
    def data_source(self):
        return self.wrapper.data_source

    @property
    def transform(self):
        return self.wrapper.transform

    def __len__(self):
        return len(self.wrapper)

    def __getitem__(self, index):
        seed = int(np.random.SeedSequence([self.seed, self.view, index]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.random.default_generator.manual_seed(seed)  # CPU only: CUDA RNGs are left alone
        return self.wrapper[index]


class BestOnVal:
    """A copy of a module's state at its best validation score so far.

    ``offer(score, module)`` keeps the state when the score beats the best (``ties_to_later``: when it
    equals it too, as the published LP++ does); ``restore(module)`` loads the kept state.
    """

    def __init__(self, ties_to_later: bool = False):
        self.ties_to_later = ties_to_later
        self.score: Optional[float] = None
        self.state: Optional[Dict[str, torch.Tensor]] = None

    def offer(self, score: float, module: torch.nn.Module) -> bool:
        better = self.score is None or score > self.score or (self.ties_to_later and score == self.score)
        if better:
            self.score = score
            self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        return better

    def restore(self, module: torch.nn.Module) -> None:
        if self.state is not None:
            module.load_state_dict(self.state)


class FeatureTrainer(ClipTrainer):
    """A method that fits a head on frozen features (see the module docstring)."""

    HEAD_NAME = "head"

    # -- Dassl hooks ---------------------------------------------------------------------------------
    def build_model(self):
        self.build_backbone()
        self.max_epoch = 1  # Dassl's loop: one pass, whose run_epoch is fit()
        self._views: Dict[int, torch.Tensor] = {}
        self._split_features: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._text_weights: Optional[torch.Tensor] = None
        self.fit_history: List[dict] = []
        self.head = self.build_head().to(self.device)
        self.register_model(self.HEAD_NAME, self.head)
        self.print_trainable_parameters()

    def build_head(self) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement build_head()")

    def fit(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement fit()")

    def run_epoch(self):
        self.set_model_mode("train")
        self.fit()

    def loadable_state_dict(self, name, state_dict):
        """A fitted head is loaded whole: every tensor it holds must be in the checkpoint."""
        missing = [key for key in self._models[name].state_dict() if key not in state_dict]
        if missing:
            raise KeyError(f"the checkpoint of {name} holds no value for {', '.join(missing)}: was it written by "
                           f"another method than {self.METHOD}? (it holds {', '.join(state_dict) or 'nothing'})")
        return state_dict

    # -- the inputs of fit() -------------------------------------------------------------------------
    def text_weights(self) -> torch.Tensor:
        """Normalised features ``[C, D]`` of "a photo of a {class}.", the published classifier."""
        if self._text_weights is None:
            self._text_weights = self.class_text_features("a photo of a {}.")
        return self._text_weights

    def scale(self) -> torch.Tensor:
        """The backbone's logit scale (exponentiated)."""
        return self.backbone.logit_scale

    def train_labels(self) -> torch.Tensor:
        return torch.tensor([item.label for item in self.dm.dataset.train_x], device=self.device)

    def split_features(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of the whole ``split`` ("val" or "test"), from the cache when it holds them."""
        if split not in self._split_features:
            loader = {"val": self.val_loader, "test": self.test_loader}[split]
            if loader is None:
                raise ValueError(f"{self.METHOD} selects on the validation set, but dataset {self.cfg.DATASET.NAME} "
                                 "has no validation split: give its split file a non-empty 'val' list")
            features, labels = zip(*self.frozen_feature_batches(split, loader))
            self._split_features[split] = torch.cat(features), torch.cat(labels)
        return self._split_features[split]

    def train_view(self, view: int) -> torch.Tensor:
        """Features ``[N, D]`` of augmented view ``view`` of the training images (module docstring)."""
        if view not in self._views:
            wrapper = self.train_loader_x.dataset
            if getattr(wrapper, "k_tfm", 1) != 1:
                raise ValueError(f"{self.METHOD} encodes one augmented view per image and epoch: set "
                                 "DATALOADER.K_TRANSFORMS 1")
            seed = self.cfg.SEED if self.cfg.SEED >= 0 else secrets.randbits(63)
            loader = torch.utils.data.DataLoader(
                SeededViews(wrapper, seed, view), batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                num_workers=self.cfg.DATALOADER.NUM_WORKERS, pin_memory=self.device.type == "cuda")
            split = f"train (augmented view {view})"
            fields = None
            if self.uses_feature_cache() and self.cfg.SEED >= 0:
                fields = self.feature_cache_fields("train", loader, seed=seed, view=view)
            with preserved_rngs():
                if fields is None:
                    batches = self.encoded_feature_batches(split, loader)
                else:
                    batches = self.feature_cache.batches(fields, lambda: self.encoded_feature_batches(split, loader),
                                                         loader.batch_size, self.device, what=f"{split} images")
                self._views[view] = torch.cat([features for features, _ in batches])
        return self._views[view]

    # -- helpers of fit() ------------------------------------------------------------------------------
    def minibatches(self, n: int, batch_size: int) -> Iterator[torch.Tensor]:
        """Indices of a shuffled pass over ``n`` items (torch's global RNG), the last batch kept even
        when partial, as the published feature-method loaders do."""
        order = torch.randperm(n).to(self.device)
        yield from order.split(batch_size)

    @torch.no_grad()
    def val_correct(self, logits_fn: Callable[[torch.Tensor], torch.Tensor]) -> int:
        """How many validation images ``logits_fn(features)`` classifies correctly."""
        features, labels = self.split_features("val")
        return int((logits_fn(features).argmax(dim=1) == labels).sum())

    def log_epoch(self, stage: str, epoch: int, epochs: int, losses: List[float], lrs: List[float],
                  val_correct: int) -> None:
        """Print and record one epoch of ``fit()`` (also in ``fit_history`` and TensorBoard)."""
        n_val = len(self.split_features("val")[1])
        loss = sum(losses) / max(len(losses), 1)
        self.fit_history.append({"stage": stage, "epoch": epoch, "loss": loss, "lrs": list(lrs),
                                 "val_correct": val_correct})
        print(f"{stage} epoch [{epoch + 1}/{epochs}] loss {loss:.4f} lr {lrs[-1] if lrs else 0.0:.4e} "
              f"val_acc {100.0 * val_correct / n_val:.1f}%")
        step = len(self.fit_history)
        self.write_scalar(f"fit/{stage}/loss", loss, step)
        self.write_scalar(f"fit/{stage}/val_accuracy", 100.0 * val_correct / n_val, step)
