"""Command line: ``python -m clip_biomed.data_tools {download,verify,synthetic} ...``

  download NAME|all --root DATA [--source hf|gdrive] [--archive PATH_OR_URL] [--keep-archive]
  verify   NAME|all --root DATA [--check-images]
  synthetic --out DIR --name NAME [--classes a,b,c] [--layout published|folder|csv] [--overlap 0..1]
            [--per-class N] [--size PIXELS] [--seed S]
"""
import argparse
import sys

from clip_biomed.data_tools.catalog import PUBLISHED_DATASETS, published_dataset
from clip_biomed.data_tools.download import SOURCES, download_dataset, verify_dataset
from clip_biomed.data_tools.synthetic import LAYOUTS, write_synthetic_dataset

_NAMES = [entry.name for entry in PUBLISHED_DATASETS]


def _names(name):
    return _NAMES if name == "all" else [name]


def _download(args):
    if args.archive and args.name == "all":
        raise SystemExit("--archive unpacks one dataset's archive: give a dataset name, not 'all'")
    failures = 0
    for name in _names(args.name):
        if args.archive is None:
            published_dataset(name)  # fail early, listing the valid names (an archive may hold any dataset)
        try:
            check = download_dataset(name, args.root, source=args.source, archive=args.archive,
                                     keep_archive=args.keep_archive)
        except (OSError, ValueError) as err:  # go on with the other datasets of "all"
            print(f"{name}: FAILED: {err}")
            failures += 1
            continue
        print(check.report())
        failures += not check.ok
    return 1 if failures else 0


def _verify(args):
    checks = [verify_dataset(name, args.root, check_images=args.check_images) for name in _names(args.name)]
    for check in checks:
        print(check.report())
    return 0 if all(check.ok for check in checks) else 1


def _synthetic(args):
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    path = write_synthetic_dataset(args.out, args.name, classes, layout=args.layout, per_class=args.per_class,
                                   size=args.size, seed=args.seed, overlap=args.overlap)
    print(f"Wrote a synthetic {args.name} ({args.layout} layout, {args.per_class} images per class, "
          f"overlap {args.overlap}) to {path}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m clip_biomed.data_tools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    download = commands.add_parser("download", help="download, unpack and verify a published dataset")
    download.add_argument("name", help=f"one of {', '.join(_NAMES)}, or all (any name with --archive)")
    download.add_argument("--root", required=True, help="DATASET.ROOT: the dataset goes to ROOT/NAME")
    download.add_argument("--source", choices=SOURCES, default="hf", help="Hugging Face (default) or Google Drive")
    download.add_argument("--archive", help="use this archive (local path, file:// or http(s) URL) instead")
    download.add_argument("--keep-archive", action="store_true", help="keep the downloaded zip after unpacking")
    download.set_defaults(run=_download)

    verify = commands.add_parser("verify", help="check that every image listed in the split file is present")
    verify.add_argument("name", help="a dataset folder name under ROOT (e.g. BTMRI), or all")
    verify.add_argument("--root", required=True)
    verify.add_argument("--check-images", action="store_true", help="also decode every image (slow)")
    verify.set_defaults(run=_verify)

    synthetic = commands.add_parser("synthetic", help="write a small synthetic dataset with learnable classes")
    synthetic.add_argument("--out", required=True, help="root folder; the dataset goes to OUT/NAME")
    synthetic.add_argument("--name", required=True, help="dataset name (a published name gives its class names)")
    synthetic.add_argument("--classes", help="comma-separated class names (default: those of --name)")
    synthetic.add_argument("--layout", choices=LAYOUTS, default="published")
    synthetic.add_argument("--per-class", type=int, default=20)
    synthetic.add_argument("--size", type=int, default=32, help="image side in pixels")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--overlap", type=float, default=0.0,
                           help="0 (separable classes, default) to 1: how much neighbouring classes overlap")
    synthetic.set_defaults(run=_synthetic)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:  # bad names or options: one line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
