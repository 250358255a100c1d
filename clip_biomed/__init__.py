"""clip_biomed: the library behind the BiomedCoOp plugin (engine, backbones, prompts, data tools).

Nothing in this package imports the repository-root ``trainers`` or ``datasets`` packages.
"""
__version__ = "0.1.0"
