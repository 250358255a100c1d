"""Command line for backbones.

  python -m clip_biomed.backbones list
  python -m clip_biomed.backbones download --name BiomedCLIP --out DIR   # on a connected machine
  python -m clip_biomed.backbones tiny --family biomedclip --out DIR [--seed 0]

``download`` writes DIR in the layout ``MODEL.BACKBONE.NAME local-dir:DIR`` reads (copy it to an
offline machine); ``tiny`` writes a tiny random model in the same layout (tests, demos).
"""
from __future__ import annotations

import argparse
import sys

from .factory import download_backbone
from .hub import ModelNotAvailableError
from .registry import list_backbones
from .sources import HF_HUB, LOCAL_DIR
from .tiny import TINY_FAMILIES, write_tiny


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_biomed.backbones", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print the registered backbone names")
    download = commands.add_parser("download", help="download a backbone into a directory for offline use")
    download.add_argument("--name", required=True, help=f"e.g. BiomedCLIP, PMCCLIP, {HF_HUB}<repo id>, ViT-B-16:openai")
    download.add_argument("--out", required=True, help="directory to write (created)")
    tiny = commands.add_parser("tiny", help="write a tiny random model in a real model's layout")
    tiny.add_argument("--family", required=True, choices=TINY_FAMILIES)
    tiny.add_argument("--out", required=True, help="directory to write (created)")
    tiny.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "list":
        print("\n".join(list_backbones() + [f"{HF_HUB}<repo id>", f"{LOCAL_DIR}<directory>",
                                             "<open_clip architecture>[:<tag>|:<file>]"]))
    elif args.command == "download":
        try:
            out = download_backbone(args.name, args.out)
        except (ModelNotAvailableError, ValueError) as err:
            parser.exit(1, f"error: {err}\n")
        print(f"Wrote {args.name} to {out}. Use it with: MODEL.BACKBONE.NAME {LOCAL_DIR}{out.resolve()}")
    else:
        out = write_tiny(args.family, args.out, seed=args.seed)
        print(f"Wrote a tiny random {args.family} model to {out}. Use it with: "
              f"MODEL.BACKBONE.NAME {LOCAL_DIR}{out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
