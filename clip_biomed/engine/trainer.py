"""Trainers with Dassl's hooks, call order and log lines (dassl.md §3): TrainerBase -> SimpleTrainer
-> TrainerX / TrainerXU, plus TRAINER_REGISTRY and build_trainer.

Difference from Dassl: the base ``load_model`` prints ``val_result=None`` for checkpoints saved
without a validation result instead of crashing on the ``.1f`` format (dassl.md §3.1).
"""
import datetime
import os.path as osp
import time
from collections import OrderedDict

import numpy as np
import torch
from tqdm import tqdm

from clip_biomed.engine.checkpoint import load_checkpoint, model_file_name, resume_from_checkpoint, save_checkpoint
from clip_biomed.engine.data import DataManager
from clip_biomed.engine.evaluation import build_evaluator
from clip_biomed.engine.meters import AverageMeter, MetricMeter
from clip_biomed.engine.registry import Registry, build_registered
from clip_biomed.engine.utils import mkdir_if_missing, tolist_if_not

__all__ = ["TRAINER_REGISTRY", "build_trainer", "TrainerBase", "SimpleTrainer", "TrainerX", "TrainerXU"]

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    return build_registered(TRAINER_REGISTRY, cfg.TRAINER.NAME, "trainer", cfg.VERBOSE, cfg)


class TrainerBase:
    """Registered models (each with an optional optimizer and scheduler), the epoch loop and hooks."""

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None

    def register_model(self, name="model", model=None, optim=None, sched=None):
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        assert name not in self._models, "Found duplicate model names"
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        names_real = list(self._models.keys())
        if names is None:
            return names_real
        names = tolist_if_not(names)
        for name in names:
            assert name in names_real, f'Model "{name}" is not registered; registered: {names_real}'
        return names

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            state = {
                "state_dict": self._models[name].state_dict(),
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                # A python float, so that numpy scalars never reach the file (weights_only loading).
                "val_result": None if val_result is None else float(val_result),
            }
            save_checkpoint(state, osp.join(directory, name), is_best=is_best, model_name=model_name)

    def resume_model_if_exist(self, directory):
        """Resume every registered model from ``directory/<name>/``; return the epoch to start at."""
        names = self.get_model_names()
        if not all(osp.exists(osp.join(directory, name)) for name in names):
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start_epoch = 0
        for name in names:
            start_epoch = resume_from_checkpoint(
                osp.join(directory, name), self._models[name], self._optims[name], self._scheds[name]
            )
        return start_epoch

    def load_model(self, directory, epoch=None):
        """Load ``model-best.pth.tar`` (or ``model.pth.tar-<epoch>``) of every registered model."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given "
                  "(ignore this if it's done on purpose)")
            return
        for name in self.get_model_names():
            model_path = osp.join(directory, name, model_file_name(epoch))
            if not osp.exists(model_path):
                raise FileNotFoundError(f"No model at {model_path}")
            checkpoint = load_checkpoint(model_path)
            val_result = checkpoint["val_result"]
            val_text = "None" if val_result is None else f"{val_result:.1f}"
            print(f"Load {model_path} to {name} (epoch={checkpoint['epoch']}, val_result={val_text})")
            self._models[name].load_state_dict(checkpoint["state_dict"])

    def set_model_mode(self, mode="train", names=None):
        """Only registered models change mode (frozen encoders keep theirs, as in Dassl)."""
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(f"Unknown model mode {mode!r}; use 'train', 'test' or 'eval'")

    def update_lr(self, names=None):
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss):
        if not torch.isfinite(loss).all():
            raise FloatingPointError("Loss is infinite or NaN!")

    def init_writer(self, log_dir):
        if self.__dict__.get("_writer") is None:
            # Imported here: tensorboard is only needed by training runs.
            from torch.utils.tensorboard import SummaryWriter

            print(f"Initialize tensorboard (log_dir={log_dir})")
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self):
        if self._writer is not None:
            self._writer.close()

    def write_scalar(self, tag, scalar_value, global_step=None):
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    def train(self, start_epoch, max_epoch):
        """Generic loop; the range is read after ``before_train``, which is how resume moves the start."""
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def test(self):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss, names=None):
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


class SimpleTrainer(TrainerBase):
    """Config-driven trainer: data, model, evaluator, auto-resume, checkpoints and final test."""

    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)
        self.device = torch.device("cuda" if torch.cuda.is_available() and cfg.USE_CUDA else "cpu")
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        # Data before model: the dataset's few-shot sampling must draw from the RNGs before the
        # model's initialisation does (dassl.md §5.4).
        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf

    def check_cfg(self, cfg):
        """Hook to validate trainer-specific config keys; no-op by default."""

    def build_data_loader(self):
        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self):
        # Dassl builds a SimpleNet from its backbone/head registries here; this engine has none.
        raise NotImplementedError(
            f"{type(self).__name__} must override build_model(): build the model, its optimizer and "
            "scheduler, and register them with self.register_model(name, model, optim, sched)"
        )

    def train(self):
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self):
        directory = self.cfg.RESUME or self.cfg.OUTPUT_DIR
        self.start_epoch = self.resume_model_if_exist(directory)
        writer_dir = osp.join(self.output_dir, "tensorboard")
        mkdir_if_missing(writer_dir)
        self.init_writer(writer_dir)
        self.time_start = time.time()

    def after_train(self):
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
            self.test()
        elapsed = str(datetime.timedelta(seconds=round(time.time() - self.time_start)))
        print(f"Elapsed: {elapsed}")
        self.close_writer()

    def after_epoch(self):
        last_epoch = (self.epoch + 1) == self.max_epoch
        do_test = not self.cfg.TEST.NO_TEST
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = freq > 0 and (self.epoch + 1) % freq == 0
        if do_test and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:  # strict: ties keep the earlier epoch
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name="model-best.pth.tar")
        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on ``split`` (default TEST.SPLIT; "val" falls back to test without a val set)."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        self.evaluator.split = split  # names the metrics file (clip_biomed.evaluation); Dassl does not set it
        print(f"Evaluate on the *{split}* set")
        for batch in tqdm(data_loader):
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        return list(results.values())[0]

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def get_current_lr(self, names=None):
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]

    def _after_batch(self, losses, batch_time, data_time):
        """Print the training line every PRINT_FREQ batches (every batch if there are fewer) and
        write the ``train/*`` scalars every batch."""
        print_freq = self.cfg.TRAIN.PRINT_FREQ
        if (self.batch_idx + 1) % print_freq == 0 or self.num_batches < print_freq:
            nb_remain = (self.num_batches - self.batch_idx - 1) + (self.max_epoch - self.epoch - 1) * self.num_batches
            eta = str(datetime.timedelta(seconds=int(batch_time.avg * nb_remain)))
            print(" ".join([
                f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                f"{losses}",
                f"lr {self.get_current_lr():.4e}",
                f"eta {eta}",
            ]))
        n_iter = self.epoch * self.num_batches + self.batch_idx
        for name, meter in losses.meters.items():
            self.write_scalar("train/" + name, meter.avg, n_iter)
        self.write_scalar("train/lr", self.get_current_lr(), n_iter)


class TrainerX(SimpleTrainer):
    """Trains on labelled data only (train_loader_x)."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses, batch_time, data_time = MetricMeter(), AverageMeter(), AverageMeter()
        self.num_batches = len(self.train_loader_x)
        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            self._after_batch(losses, batch_time, data_time)
            end = time.time()

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device), batch["domain"].to(self.device)


class TrainerXU(SimpleTrainer):
    """Trains on labelled + unlabelled batches; TRAIN.COUNT_ITER picks which loader sets the epoch
    length, and the shorter loader is restarted when exhausted."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses, batch_time, data_time = MetricMeter(), AverageMeter(), AverageMeter()
        len_x, len_u = len(self.train_loader_x), len(self.train_loader_u)
        count_iter = self.cfg.TRAIN.COUNT_ITER
        lengths = {"train_x": len_x, "train_u": len_u, "smaller_one": min(len_x, len_u)}
        if count_iter not in lengths:
            raise ValueError(f"TRAIN.COUNT_ITER must be one of {list(lengths)}, but got {count_iter}")
        self.num_batches = lengths[count_iter]
        iter_x, iter_u = iter(self.train_loader_x), iter(self.train_loader_u)
        end = time.time()
        for self.batch_idx in range(self.num_batches):
            try:
                batch_x = next(iter_x)
            except StopIteration:
                iter_x = iter(self.train_loader_x)
                batch_x = next(iter_x)
            try:
                batch_u = next(iter_u)
            except StopIteration:
                iter_u = iter(self.train_loader_u)
                batch_u = next(iter_u)
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch_x, batch_u)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            self._after_batch(losses, batch_time, data_time)
            end = time.time()

    def parse_batch_train(self, batch_x, batch_u):
        return (batch_x["img"].to(self.device), batch_x["label"].to(self.device),
                batch_u["img"].to(self.device))
