"""Packaging for the BiomedCoOp plugin.

The distribution ``biomedcoop`` installs only the library package ``clip_biomed``.  The repo-root
``trainers/`` and ``datasets/`` folders are imported from the repository root by ``train.py`` and the
tests (as in CoOp); installing a top-level ``datasets`` package would shadow Hugging Face's.
"""
from setuptools import find_packages, setup

setup(
    name="biomedcoop",
    version="0.1.0",
    description="BiomedCoOp (CVPR 2025) prompt learning for BiomedCLIP, as a Dassl/CoOp plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["clip_biomed", "clip_biomed.*"]),
    package_data={"clip_biomed": ["prompts/*.json"]},
    install_requires=[
        "torch>=2.6",  # weights_only loading with name-mapped stand-ins (safe_globals)
        "torchvision>=0.21",
        "open_clip_torch>=3.0",  # 3.0 added the local-dir: schema used for offline models
        "timm>=0.9.10",
        "transformers>=4.40",
        "sentencepiece",  # the SigLIP tokenizer (MedSigLIP)
        "protobuf",  # read by transformers' SigLIP tokenizer
        "huggingface_hub>=0.23",
        "safetensors",
        "yacs>=0.1.8",
        "tabulate",
        "tensorboard",
        "scikit-learn",
        "numpy",
        "pillow",
        "ftfy",
        "regex",
        "tqdm",
        "gdown>=4.7",
        "matplotlib>=3.5",  # the few-shot curves of `python -m clip_biomed.results --out`
    ],
    extras_require={
        "test": ["pytest>=7", "submitit>=1.5"],
        "slurm": ["submitit>=1.5"],  # `python -m clip_biomed.sweep --slurm`
    },
)
