"""Every backbone family, built tiny and offline from a local directory in the real on-disk layout."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402

import open_clip  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from clip_biomed.backbones import build_backbone  # noqa: E402
from clip_biomed.backbones.sources import resolve  # noqa: E402
from clip_biomed.backbones.testing import TINY_FAMILIES, make_tiny, tiny_name  # noqa: E402

FAMILY_LABEL = {"biomedclip": "biomedclip", "clip": "clip", "pubmedclip": "clip", "pmcclip": "pmcclip",
                "hf-clip": "hf-clip", "siglip": "siglip"}
CONTEXT_LENGTH = {"biomedclip": 256, "clip": 77, "pubmedclip": 77, "pmcclip": 77, "hf-clip": 77,
                  "siglip": 65}  # SigLIP: 64 tokens behind the placeholder start
TRANSFORMERS_FAMILIES = ("hf-clip", "siglip")
SIGLIP_MEAN = (0.5, 0.5, 0.5)
PROMPTS = ["a photo of a glioma tumor.", "normal brain", "a photo of a colorectal adenocarcinoma epithelium.", "x"]
TOL = 1e-5


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_backbones")
    return {family: make_tiny(family, root / family) for family in TINY_FAMILIES}


@pytest.fixture(scope="session")
def backbones(tiny_dirs):
    return {family: build_backbone(tiny_name(path), device="cpu") for family, path in tiny_dirs.items()}


@pytest.fixture(params=TINY_FAMILIES)
def family(request):
    return request.param


def _images(backbone, n=2, seed=0):
    size = backbone.preprocess.size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_built_frozen_in_eval_with_the_family_facts(backbones, family):
    backbone = backbones[family]
    assert backbone.family == FAMILY_LABEL[family]
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not backbone.training and not backbone.text_tower.training and not backbone.image_tower.training
    assert (backbone.ctx_dim, backbone.embed_dim) == (64, 32)
    assert backbone.context_length == CONTEXT_LENGTH[family]
    assert backbone.preprocess.size == 32 and backbone.preprocess.interpolation == "bicubic"
    expected_mean = SIGLIP_MEAN if family == "siglip" else open_clip.OPENAI_DATASET_MEAN
    assert backbone.preprocess.mean == pytest.approx(expected_mean)
    # towers that interpolate their position embeddings take other sizes
    assert backbone.preprocess.resizable == (family in TRANSFORMERS_FAMILIES)
    assert backbone.logit_scale.dim() == 0 and backbone.logit_scale.dtype == torch.float32
    # PMC-CLIP: BiomedCoOp's constant exp(4.4292); SigLIP: its initial 10 and bias -10; transformers
    # CLIP: its config's initial exp(2.6592); others: open_clip's initial 1/0.07 of the random model
    expected_scale = {"pmcclip": math.exp(4.4292), "siglip": 10.0, "hf-clip": math.exp(2.6592)}.get(family, 1 / 0.07)
    assert backbone.logit_scale.item() == pytest.approx(expected_scale, rel=1e-5)
    assert backbone.logit_bias.dim() == 0 and backbone.logit_bias.dtype == torch.float32
    assert backbone.logit_bias.item() == (-10.0 if family == "siglip" else 0.0)
    assert backbone.encode_image(_images(backbone)).shape == (2, 32)


def test_train_leaves_the_backbone_in_eval_but_the_text_tower_can_be_switched(tiny_dirs):
    backbone = build_backbone(tiny_name(tiny_dirs["pmcclip"]), device="cpu")
    container = torch.nn.Sequential(backbone)
    container.train()
    assert not backbone.training and not any(m.training for m in backbone.modules())  # BatchNorm stays frozen
    backbone.text_tower.train()
    assert backbone.text_tower.training and not backbone.image_tower.training


def _native_text(backbone, ids):
    """The model's own text forward on token ids, at full padded length."""
    if backbone.family == "siglip":  # without the placeholder start, no attention mask (as trained)
        return backbone.model.get_text_features(input_ids=ids[:, 1:]).pooler_output
    if backbone.family == "hf-clip":
        return backbone.model.get_text_features(input_ids=ids).pooler_output
    return backbone.model.encode_text(ids)  # open_clip's


def _text_transformer(backbone):
    text = backbone.text_tower
    return text.encoder if backbone.family in TRANSFORMERS_FAMILIES else text.transformer


def test_text_from_embeddings_equals_the_towers_own_encode_text(backbones, family):
    backbone = backbones[family]
    ids = backbone.tokenize(PROMPTS)
    with torch.no_grad():
        ours = backbone.encode_text_embeddings(backbone.token_embedding(ids), ids)
        native = _native_text(backbone, ids)
    assert ours.shape == (len(PROMPTS), backbone.embed_dim)
    assert (ours - native).abs().max().item() < TOL
    assert torch.equal(backbone.encode_text(ids), ours)


class _InputLength:
    """Records the sequence length that reaches the text transformer."""

    def __init__(self, module):
        self.lengths = []
        self.handle = module.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        x = kwargs.get("inputs_embeds", args[0] if args else None)
        self.lengths.append(x.shape[1])


def test_padding_is_trimmed_and_trimming_changes_nothing(backbones, family):
    backbone = backbones[family]
    short = backbone.tokenize(PROMPTS[:2])
    full = backbone.tokenize(PROMPTS[:2] + [" ".join(["lesion"] * 400)])  # fills the whole context
    recorder = _InputLength(_text_transformer(backbone))
    try:
        with torch.no_grad():
            trimmed = backbone.encode_text(short)
            untrimmed = backbone.encode_text(full)[:2]
    finally:
        recorder.handle.remove()
    longest = 1 + backbone.num_tokens(PROMPTS[0]) + 1  # start + text + end
    if family == "siglip":  # bidirectional, pooled at the last position: all 64 tokens always count
        assert recorder.lengths == [64, 64]
    else:
        assert recorder.lengths == [longest, backbone.context_length]
    assert (trimmed - untrimmed).abs().max().item() < TOL


def test_matches_an_independent_reference_implementation(backbones, tiny_dirs, family):
    """Our loading of each layout equals the reference way of loading the same files."""
    backbone, directory = backbones[family], tiny_dirs[family]
    ids, images = backbone.tokenize(PROMPTS), _images(backbone)
    if family == "biomedclip":  # open_clip's own factory, text tower pointed at the directory
        text_cfg = resolve(tiny_name(directory)).model_cfg["text_cfg"]
        text_cfg = {**text_cfg, "hf_model_name": str(directory), "hf_model_pretrained": False}
        ref = open_clip.create_model(tiny_name(directory), text_cfg=text_cfg)
        ref_text, ref_image = ref.eval().encode_text, ref.encode_image
    elif family == "clip":  # open_clip's own local-dir loading, as its CLIP class
        ref = open_clip.create_model(tiny_name(directory)).eval()
        ref_text, ref_image = ref.encode_text, ref.encode_image
    elif family == "pubmedclip":  # open_clip's builder for OpenAI state dicts (what clip.load does)
        state = torch.load(directory / "PubMedCLIP_ViT32.pth", weights_only=True)["state_dict"]
        ref = open_clip.model.build_model_from_openai_state_dict(state, cast_dtype=None).float().eval()
        ref_text, ref_image = ref.encode_text, ref.encode_image
    elif family in TRANSFORMERS_FAMILIES:  # transformers' own forward: its logits, with the scale and bias
        _check_against_transformers_forward(backbone, directory, images)
        return
    else:  # BiomedCoOp's PMC-CLIP recipe: BertModel pooler_output @ projection, ModifiedResNet
        from open_clip.modified_resnet import ModifiedResNet
        from transformers import AutoConfig, BertModel

        bert = BertModel(AutoConfig.from_pretrained(directory), add_pooling_layer=True).eval()
        bert.load_state_dict(torch.load(directory / "text_encoder.pth", weights_only=True))
        projection = torch.load(directory / "text_projection_layer.pth", weights_only=True)
        resnet = ModifiedResNet(layers=[1, 1, 1, 1], output_dim=32, heads=2, image_size=32, width=8).eval()
        resnet.load_state_dict(torch.load(directory / "image_encoder(resnet50).pth", weights_only=True))

        def ref_text(token_ids):
            return bert(token_ids, attention_mask=(token_ids != 0).long()).pooler_output @ projection

        ref_image = resnet
    with torch.no_grad():
        assert (backbone.encode_text(ids) - ref_text(ids)).abs().max().item() < TOL
        assert (backbone.encode_image(images) - ref_image(images)).abs().max().item() < TOL


def _check_against_transformers_forward(backbone, directory, images):
    """The model's own forward (transformers' tokenizer padded as the model card says, the model's
    logits_per_image with its scale and bias) equals backbone.logits of our features."""
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
    length = model.config.text_config.max_position_embeddings
    ids = tokenizer(PROMPTS, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = model(input_ids=ids, pixel_values=images).logits_per_image
        text = F.normalize(backbone.encode_text(backbone.tokenize(PROMPTS)), dim=-1)
        ours = backbone.logits(F.normalize(backbone.encode_image(images), dim=-1), text)
    assert (ours - reference).abs().max().item() < 1e-4


def test_gradients_reach_the_input_embeddings_only(backbones, family):
    backbone = backbones[family]
    ids = backbone.tokenize(["X X X X glioma tumor.", "X X X X normal brain."])
    embeds = backbone.token_embedding(ids)
    ctx = torch.nn.Parameter(torch.randn(4, backbone.ctx_dim) * 0.02)
    prompts = torch.cat([embeds[:, :1], ctx.expand(2, -1, -1), embeds[:, 5:]], dim=1)
    text = F.normalize(backbone.encode_text_embeddings(prompts, ids), dim=-1)
    image = F.normalize(backbone.encode_image(_images(backbone)), dim=-1)
    loss = F.cross_entropy(backbone.logit_scale * image @ text.t(), torch.tensor([0, 1]))
    loss.backward()
    assert ctx.grad is not None and torch.isfinite(ctx.grad).all() and ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


def test_tokenizer_pads_with_pad_id_and_truncates_keeping_the_end_token(backbones, family):
    backbone = backbones[family]
    ids = backbone.tokenize(["glioma", "a photo of a glioma tumor.", " ".join(["lesion"] * 400)])
    assert ids.dtype == torch.long and ids.shape == (3, backbone.context_length)
    assert ids.device == backbone.device
    lengths = [1 + backbone.num_tokens(t) + 1 for t in ("glioma", "a photo of a glioma tumor.")]  # + start, end
    start, end = ids[0, 0].item(), ids[0, lengths[0] - 1].item()
    assert (ids[:, 0] == start).all()  # a start token, or SigLIP's placeholder (the pad id)
    # the text is real tokens; padding (which may be the end token itself, as in CLIP and SigLIP) follows the end
    for row, length in enumerate(lengths):
        assert ids[row, length - 1].item() == end
        assert (ids[row, 1:length - 1] != backbone.pad_id).all() and (ids[row, 1:length - 1] != end).all()
        assert (ids[row, length:] == backbone.pad_id).all()
    assert ids[2, -1].item() == end and (ids[2, 1:-1] != backbone.pad_id).all()  # truncated, end token kept
    assert backbone.num_tokens(" ".join(["lesion"] * 400)) == backbone.context_length - 2
    assert torch.equal(backbone.tokenize("glioma"), ids[:1])  # a single string is one row


@pytest.mark.parametrize("name", ["glioma tumor", "colorectal adenocarcinoma epithelium", "qzxv", "covid_19 lungs"])
def test_num_tokens_counts_the_word_pieces_of_a_class_name_inside_a_prompt(backbones, family, name):
    backbone = backbones[family]
    n = backbone.num_tokens(name)
    alone = backbone.tokenize([name])[0]
    prompt = backbone.tokenize([f"a photo of a {name}."])[0]
    n_prefix = backbone.num_tokens("a photo of a")
    assert n == backbone.num_tokens(f"a photo of a {name}.") - n_prefix - backbone.num_tokens(".")
    assert torch.equal(prompt[1 + n_prefix: 1 + n_prefix + n], alone[1: 1 + n])
    if name == "qzxv":  # not a vocabulary word: several pieces (the published name_lens said 1)
        assert n > 1


def test_vocabulary_indexes_the_word_embeddings(backbones, family):
    backbone = backbones[family]
    vocabulary = backbone.vocabulary()
    assert len(vocabulary) == backbone._word_embeddings().num_embeddings
    photo_id = backbone.tokenize(["photo"])[0, 1].item()
    assert vocabulary[photo_id] == "photo"


def test_clip_text_tower_with_a_hugging_face_tokenizer_is_refused(tiny_dirs, tmp_path):
    """open_clip tokenizes such models (e.g. MetaCLIP 2 "worldwide") with that tokenizer; the CLIP BPE is wrong."""
    config = json.loads((tiny_dirs["clip"] / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = "facebook/xlm-v-base"
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    shutil.copyfile(tiny_dirs["clip"] / "open_clip_model.safetensors", tmp_path / "open_clip_model.safetensors")
    with pytest.raises(ValueError, match="uses the Hugging Face tokenizer facebook/xlm-v-base"):
        build_backbone(tiny_name(tmp_path), device="cpu")


def test_local_dir_round_trip_gives_identical_outputs(backbones, tiny_dirs, family, tmp_path):
    backbone = backbones[family]
    resolve(tiny_name(tiny_dirs[family])).export(tmp_path / "copy")
    copy = build_backbone(tiny_name(tmp_path / "copy"), device="cpu")
    ids, images = backbone.tokenize(PROMPTS), _images(backbone)
    with torch.no_grad():
        assert torch.equal(copy.encode_text(ids), backbone.encode_text(ids))
        assert torch.equal(copy.encode_image(images), backbone.encode_image(images))


def test_tiny_models_are_reproducible_per_seed(tmp_path):
    family = "pubmedclip"  # the seed handling is shared by all families
    first = build_backbone(tiny_name(make_tiny(family, tmp_path / "a", seed=1)), device="cpu")
    same = build_backbone(tiny_name(make_tiny(family, tmp_path / "b", seed=1)), device="cpu")
    other = build_backbone(tiny_name(make_tiny(family, tmp_path / "c", seed=2)), device="cpu")
    ids = first.tokenize(PROMPTS)
    with torch.no_grad():
        assert torch.equal(first.encode_text(ids), same.encode_text(ids))
        assert not torch.allclose(first.encode_text(ids), other.encode_text(ids))


def test_bf16_weights_give_float32_outputs_close_to_fp32(backbones, tiny_dirs, family):
    fp32 = backbones[family]
    bf16 = build_backbone(tiny_name(tiny_dirs[family]), device="cpu", precision="bf16")
    assert bf16.weight_dtype == torch.bfloat16 and next(bf16.parameters()).dtype == torch.bfloat16
    ids, images = fp32.tokenize(PROMPTS), _images(fp32)
    with torch.no_grad():
        text, image = bf16.encode_text(ids), bf16.encode_image(images)
        assert text.dtype == image.dtype == torch.float32
        assert F.cosine_similarity(text, fp32.encode_text(ids)).min() > 0.98
        assert F.cosine_similarity(image, fp32.encode_image(images)).min() > 0.98


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_with_inputs_from_the_cpu(backbones, tiny_dirs, family):
    cpu = backbones[family]
    cuda = build_backbone(tiny_name(tiny_dirs[family]), device="cuda")
    ids = cpu.tokenize(PROMPTS)  # on the CPU: encode_* move what they are given
    assert cuda.tokenize(PROMPTS).device.type == "cuda"
    with torch.no_grad():
        text = cuda.encode_text_embeddings(cpu.token_embedding(ids), ids)  # embeddings from the CPU too
        image = cuda.encode_image(_images(cpu))
    assert text.device.type == image.device.type == "cuda"
    assert (text.cpu() - cpu.encode_text(ids)).abs().max().item() < 1e-4


def test_hf_clip_tokenizer_files_give_open_clips_bpe_ids(backbones):
    """The tiny hf-clip folder's vocab.json/merges.txt (written from open_clip's BPE) tokenize as open_clip does."""
    ours, theirs = backbones["hf-clip"].tokenize(PROMPTS), open_clip.tokenizer.SimpleTokenizer()(PROMPTS)
    text = torch.arange(ours.shape[1]) <= theirs.argmax(dim=1, keepdim=True)  # start .. end token
    assert torch.equal(ours[text], theirs[text])  # (the padding differs: open_clip pads with 0, CLIP's HF tokenizer with the end token)
