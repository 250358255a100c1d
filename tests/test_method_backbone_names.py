"""Backbone names from published YAMLs (MODEL.BACKBONE.NAME "ViT-B/16" in every one of them): resolved
as the published trainer of that name did, or refused with what to pass; never a silent switch of model."""
import open_clip
import pytest

from clip_biomed.method import OPENAI_SPELLINGS, PAPER_BACKBONES, resolve_backbone_name


@pytest.mark.parametrize("backbone", ["BiomedCLIP", "PubMedCLIP", "PMCCLIP"])
def test_published_names_ignore_the_yaml_placeholder_as_the_published_trainers_did(backbone):
    trainer = f"BiomedCoOp_{backbone}"
    name, note = resolve_backbone_name("ViT-B/16", trainer, backbone)
    assert name == backbone
    assert "'ViT-B/16'" in note and "ignored" in note and f"{trainer} uses {backbone}" in note


def test_published_clip_name_loads_openai_clip_of_the_configured_architecture():
    name, note = resolve_backbone_name("ViT-B/16", "BiomedCoOp_CLIP", "CLIP")
    assert name == "ViT-B-16:openai" and "loads OpenAI CLIP ViT-B/16" in note
    assert resolve_backbone_name(" RN50 ", "CoOp_CLIP", "CLIP")[0] == "RN50:openai"
    assert resolve_backbone_name("ViT-L/14@336px", "CoOp_CLIP", "CLIP")[0] == "ViT-L-14-336:openai"


@pytest.mark.parametrize("spelling", OPENAI_SPELLINGS)
def test_every_openai_spelling_maps_to_an_open_clip_model_with_openai_weights(spelling):
    name, _ = resolve_backbone_name(spelling, "BiomedCoOp_CLIP", "CLIP")
    arch, tag = name.split(":")
    assert arch in open_clip.list_models() and tag in open_clip.list_pretrained_tags_by_model(arch)


@pytest.mark.parametrize("backbone", PAPER_BACKBONES)
def test_published_names_without_or_with_their_own_backbone(backbone):
    assert resolve_backbone_name("", f"BiomedCoOp_{backbone}", backbone) == (backbone, "")
    assert resolve_backbone_name(backbone, f"BiomedCoOp_{backbone}", backbone) == (backbone, "")


def test_published_name_with_another_backbone_is_an_error_saying_what_to_pass():
    with pytest.raises(ValueError) as info:
        resolve_backbone_name("PMCCLIP", "BiomedCoOp_BiomedCLIP", "BiomedCLIP")
    message = str(info.value)
    assert "published name of BiomedCoOp on BiomedCLIP" in message
    assert "--trainer BiomedCoOp MODEL.BACKBONE.NAME PMCCLIP" in message and "drop MODEL.BACKBONE.NAME" in message


def test_method_name_refuses_an_openai_spelling_with_the_fix():
    with pytest.raises(ValueError) as info:
        resolve_backbone_name("ViT-B/16", "BiomedCoOp", None)
    message = str(info.value)
    assert "would load OpenAI CLIP ViT-B/16 instead of BiomedCLIP" in message
    for fix in ("MODEL.BACKBONE.NAME BiomedCLIP", "ViT-B-16:openai", "BiomedCoOp_BiomedCLIP", "BiomedCoOp_CLIP"):
        assert fix in message
    with pytest.raises(ValueError, match="ViT-L-14-336:openai"):
        resolve_backbone_name("ViT-L/14@336px", "CoOp", None)


def test_method_name_takes_the_configured_backbone_or_the_default():
    assert resolve_backbone_name("", "BiomedCoOp", None) == ("BiomedCLIP", "")
    assert resolve_backbone_name("PMCCLIP", "BiomedCoOp", None) == ("PMCCLIP", "")
    assert resolve_backbone_name("ViT-B-16:openai", "BiomedCoOp", None) == ("ViT-B-16:openai", "")
    assert resolve_backbone_name("", "Zeroshot", None, default="CLIP") == ("CLIP", "")


@pytest.mark.parametrize("location", ["local-dir:/models/pmc-clip", "hf-hub:org/some-clip"])
@pytest.mark.parametrize("trainer,alias", [("BiomedCoOp", None), ("BiomedCoOp_BiomedCLIP", "BiomedCLIP"),
                                           ("BiomedCoOp_CLIP", "CLIP")])
def test_model_locations_are_used_as_given(location, trainer, alias):
    assert resolve_backbone_name(f" {location}", trainer, alias) == (location, "")
