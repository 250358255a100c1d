"""Dassl 0.6.3's default configuration tree (dassl.md §2): 135 leaves plus the trainer sub-nodes.

The tree is kept complete, even for keys this project never reads, so that YAML files written for
real Dassl merge unchanged and ``print(cfg)`` matches a Dassl run.
"""
from yacs.config import CfgNode as CN

__all__ = ["get_cfg_default", "clean_cfg"]

_C = CN()
_C.VERSION = 1
_C.OUTPUT_DIR = "./output"
_C.RESUME = ""
_C.SEED = -1  # negative: no seeding
_C.USE_CUDA = True
_C.VERBOSE = True

_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.INTERPOLATION = "bilinear"
_C.INPUT.TRANSFORMS = ()
_C.INPUT.NO_TRANSFORM = False
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.CROP_PADDING = 4
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
_C.INPUT.RANDAUGMENT_N = 2
_C.INPUT.RANDAUGMENT_M = 10
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
_C.INPUT.RGS_P = 0.2
_C.INPUT.GB_P = 0.5
_C.INPUT.GB_K = 21

_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = ""
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1
_C.DATASET.NUM_SHOTS = -1
_C.DATASET.VAL_PERCENT = 0.1
_C.DATASET.STL10_FOLD = -1
_C.DATASET.CIFAR_C_TYPE = ""
_C.DATASET.CIFAR_C_LEVEL = 1
_C.DATASET.ALL_AS_UNLABELED = False

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.K_TRANSFORMS = 1
_C.DATALOADER.RETURN_IMG0 = False
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
_C.DATALOADER.TRAIN_U = CN()
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""
_C.MODEL.BACKBONE.PRETRAINED = True
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0  # sic: Dassl's spelling
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
_C.OPTIM.STAGED_LR = False
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
_C.OPTIM.LR_SCHEDULER = "single_step"
_C.OPTIM.STEPSIZE = (-1,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
_C.OPTIM.WARMUP_EPOCH = -1
_C.OPTIM.WARMUP_TYPE = "linear"
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
_C.OPTIM.WARMUP_RECOUNT = True

_C.TRAIN = CN()
_C.TRAIN.CHECKPOINT_FREQ = 0
_C.TRAIN.PRINT_FREQ = 10
_C.TRAIN.COUNT_ITER = "train_x"

_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
_C.TEST.COMPUTE_CMAT = False
_C.TEST.NO_TEST = False
_C.TEST.SPLIT = "test"
_C.TEST.FINAL_MODEL = "last_step"

# Dassl's own trainers' keys: unused here, kept for YAML/print compatibility.
_C.TRAINER = CN()
_C.TRAINER.NAME = ""
_TRAINER_NODES = {
    "MCD": dict(N_STEP_F=4),
    "MME": dict(LMDA=0.1),
    "CDAC": dict(CLASS_LR_MULTI=10, RAMPUP_COEF=30, RAMPUP_ITRS=1000, TOPK_MATCH=5, P_THRESH=0.95,
                 STRONG_TRANSFORMS=()),
    "SE": dict(EMA_ALPHA=0.999, CONF_THRE=0.95, RAMPUP=300),
    "M3SDA": dict(LMDA=0.5, N_STEP_F=4),
    "DAEL": dict(WEIGHT_U=0.5, CONF_THRE=0.95, STRONG_TRANSFORMS=()),
    "CROSSGRAD": dict(EPS_F=1.0, EPS_D=1.0, ALPHA_F=0.5, ALPHA_D=0.5),
    "DDAIG": dict(G_ARCH="", LMDA=0.3, CLAMP=False, CLAMP_MIN=-1.0, CLAMP_MAX=1.0, WARMUP=0, ALPHA=0.5),
    "DAELDG": dict(WEIGHT_U=0.5, CONF_THRE=0.95, STRONG_TRANSFORMS=()),
    "DOMAINMIX": dict(TYPE="crossdomain", ALPHA=1.0, BETA=1.0),
    "ENTMIN": dict(LMDA=1e-3),
    "MEANTEACHER": dict(WEIGHT_U=1.0, EMA_ALPHA=0.999, RAMPUP=5),
    "MIXMATCH": dict(WEIGHT_U=100.0, TEMP=2.0, MIXUP_BETA=0.75, RAMPUP=20000),
    "FIXMATCH": dict(WEIGHT_U=1.0, CONF_THRE=0.95, STRONG_TRANSFORMS=()),
}
for _name, _leaves in _TRAINER_NODES.items():
    _C.TRAINER[_name] = CN(_leaves)


def get_cfg_default():
    """A fresh, unfrozen deep copy of the defaults (unknown keys raise on merge)."""
    return _C.clone()


def clean_cfg(cfg, trainer):
    """Remove every ``cfg.TRAINER.<X>`` node except ``NAME`` and ``trainer.upper()``."""
    keep = {"NAME", trainer.upper()}
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    for key in [k for k in cfg.TRAINER.keys() if k not in keep]:
        del cfg.TRAINER[key]
    if was_frozen:
        cfg.freeze()
