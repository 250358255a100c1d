"""Command line for backbones.

  python -m clip_biomed.backbones list
  python -m clip_biomed.backbones download --name BiomedCLIP --out DIR   # on a connected machine
  python -m clip_biomed.backbones tiny --family {biomedclip,clip,pubmedclip,pmcclip,hf-clip,siglip} --out DIR [--seed 0]
        [--align-to ROOT/NAME [--align-steps N] [--device cpu]]

``download`` writes DIR in the layout ``MODEL.BACKBONE.NAME local-dir:DIR`` reads (copy it to an
offline machine); ``tiny`` writes a tiny random model in the same layout (tests, demos), and with
``--align-to`` contrastively pre-trains it on the train split of a dataset in the published layout
(ROOT/NAME/split_NAME.json, images under ROOT/NAME/NAME/), so that it classifies zero-shot.
"""
from __future__ import annotations

import argparse
import sys

from .align import ZERO_SHOT_TEMPLATE, AlignSettings, split_file
from .factory import download_backbone
from .hub import ModelNotAvailableError
from .registry import backbone_card, list_backbones
from .sources import FAMILIES, HF_HUB, HF_TRANSFORMERS, LOCAL_DIR, NAME_SCHEMES, NEEDS_OWN_PACKAGE
from .tiny import TINY_ALIGN_STEPS, TINY_FAMILIES, align_tiny, write_tiny


def _table(rows) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + str(row[-1])
                     for row in rows)


def backbone_listing() -> str:
    """Every family, named backbone and name scheme, with what each needs (the ``list`` command)."""
    families = "\n".join(f"  {family}: {what}\n      packages: {packages}\n      files of a local copy: {layout}"
                         for family, (what, packages, layout) in FAMILIES.items())
    named = [("name", "family", "image", "gated", "needs", "licence", "weights from")]
    for name in list_backbones():
        card = backbone_card(name)
        if card is None:  # registered by someone else without a card
            named.append((name, "?", "?", "?", "", "?", "(registered at run time)"))
        else:
            named.append((name, card.family, f"{card.image_size}px", "yes" if card.gated else "no",
                          card.needs or "-", card.licence, card.source))
    schemes = [(scheme, what) for scheme, what in NAME_SCHEMES.items()]
    unsupported = [(name, why) for name, why in NEEDS_OWN_PACKAGE.items()]
    return "\n".join([
        "Families:", families, "",
        "Named backbones (MODEL.BACKBONE.NAME; download: python -m clip_biomed.backbones download --name NAME --out DIR):",
        _table(named), "", "Other names:", _table(schemes), "",
        "Not supported (they need a package of their own):", _table(unsupported),
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_biomed.backbones", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print every family, named backbone and name scheme, with what it needs")
    download = commands.add_parser("download", help="download a backbone into a directory for offline use")
    download.add_argument("--name", required=True, help=f"e.g. BiomedCLIP, MedSigLIP, {HF_HUB}<repo id>, {HF_TRANSFORMERS}<repo id>, ViT-B-16:openai")
    download.add_argument("--out", required=True, help="directory to write (created)")
    tiny = commands.add_parser("tiny", help="write a tiny random model in a real model's layout, optionally "
                                            "pre-trained on a dataset (--align-to)")
    tiny.add_argument("--family", required=True, choices=TINY_FAMILIES)
    tiny.add_argument("--out", required=True, help="directory to write (created)")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights and of the alignment")
    tiny.add_argument("--align-to", metavar="ROOT/NAME",
                      help="pre-train the model contrastively on this dataset (published layout) so it has "
                           "zero-shot ability; e.g. data/BTMRI")
    tiny.add_argument("--align-steps", type=int,
                      help="optimizer steps of the alignment (default per family: " +
                           ", ".join(f"{f} {n}" for f, n in TINY_ALIGN_STEPS.items()) + ")")
    tiny.add_argument("--device", default="cpu", help="device the alignment runs on (default %(default)s)")
    args = parser.parse_args(argv)

    if args.command == "list":
        print(backbone_listing())
    elif args.command == "download":
        try:
            out = download_backbone(args.name, args.out)
        except (ModelNotAvailableError, ValueError) as err:
            parser.exit(1, f"error: {err}\n")
        print(f"Wrote {args.name} to {out}. Use it with: MODEL.BACKBONE.NAME {LOCAL_DIR}{out.resolve()}")
    else:
        if args.align_to:  # fail before writing anything
            if args.align_steps is not None and args.align_steps < 1:
                parser.error(f"--align-steps must be at least 1, got {args.align_steps}")
            try:
                split_file(args.align_to)
            except FileNotFoundError as err:
                parser.exit(1, f"error: {err}\n")
        out = write_tiny(args.family, args.out, seed=args.seed)
        kind = "random"
        if args.align_to:
            try:
                steps = args.align_steps or TINY_ALIGN_STEPS[args.family]
                aligned = align_tiny(args.family, out, args.align_to, device=args.device,
                                     settings=AlignSettings(steps=steps, seed=args.seed))
            except (OSError, ValueError) as err:  # unreadable images, bad split file
                parser.exit(1, f"error: {err}\n")
            report = aligned.report
            print(f"Aligned to {args.align_to}: {report.steps} steps on {report.images} train images in "
                  f"{report.seconds:.1f} s; zero-shot accuracy on its test split \"{ZERO_SHOT_TEMPLATE}\": "
                  f"{aligned.zero_shot_before:.1f}% -> {aligned.zero_shot_after:.1f}%")
            kind = "aligned"
        print(f"Wrote a tiny {kind} {args.family} model to {out}. Use it with: "
              f"MODEL.BACKBONE.NAME {LOCAL_DIR}{out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
