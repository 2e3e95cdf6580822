"""``tinydiffusion data info`` and ``data pack``: inspect a data set, or pack it for training from disk.

Standard library only at module level (``--help`` must not import torch).
"""

from __future__ import annotations

from .types import help_handler, name_list


def add_data(commands) -> None:
    p = commands.add_parser("data", help="inspect data sets")
    sub = p.add_subparsers(title="data commands", metavar="COMMAND")
    info = sub.add_parser("info", help="count images per class")
    info.add_argument("data", nargs="?", default="sprites", help="as for train --data (default: sprites)")
    info.add_argument("--labels", help="the course's one-hot labels .npy")
    info.add_argument("--class-names", type=name_list, help="comma-separated class names")
    info.add_argument("--skip-bad-files", action="store_true", help="skip and count unreadable images")
    info.set_defaults(handler=_data_info)
    pack = sub.add_parser("pack", help="write a data set as one uncompressed .npy that training reads from disk",
                          description="Pack any data source into an uncompressed uint8 N×S×S×3 .npy (OUT) with its "
                                      "labels, class names and captions beside it (data.npy → data.meta.npz). "
                                      "--data data.npy then reads it memory-mapped: batches read only their own "
                                      "rows, so a set larger than RAM trains from disk. A folder is read image by "
                                      "image and an images .npy memory-mapped, so packing never holds the set whole.")
    pack.add_argument("data", help="as for train --data: sprites, emoji, a folder of class sub-folders, an .npz, "
                                   "or an images .npy (with --labels)")
    pack.add_argument("--out", required=True, help="the .npy to write, e.g. data.npy (refused if it exists)")
    pack.add_argument("--image-size", "--size", dest="image_size", type=int,
                      help="side of the packed images in pixels (default: the source's; 32 for a folder); "
                           "train with the same --image-size to read them from disk")
    pack.add_argument("--labels", help="the course's one-hot labels .npy for an images .npy")
    pack.add_argument("--class-names", type=name_list, help="comma-separated class names for --labels columns")
    pack.add_argument("--skip-bad-files", action="store_true", help="skip and count unreadable images")
    pack.add_argument("--overwrite", action="store_true", help="replace OUT (and its .meta.npz) if they exist")
    pack.set_defaults(handler=_data_pack)
    p.set_defaults(handler=help_handler(p))


def _data_info(args) -> int:
    from ..data.load import load_dataset

    d = load_dataset(args.data, labels=args.labels, class_names=args.class_names, skip_bad_files=args.skip_bad_files)
    print(f"{d.name}: {len(d)} images, {d.size}×{d.size} RGB" + (f", {d.skipped} bad files skipped" if d.skipped else "")
          + (" (packed: read from disk, memory-mapped)" if d.mapped else ""))
    counts = d.counts()
    width = max([len(n) for n in counts] + [5])
    for name, count in counts.items():
        print(f"  {name:<{width}}  {count:>6}")
    if not counts:
        print("  (no class labels)")
    if d.captions is not None:
        print(f"  captions, e.g.: {', '.join(repr(str(c)) for c in d.captions[:: max(1, len(d) // 4)][:4])}")
    return 0


def _data_pack(args) -> int:
    from ..data.load import sidecar
    from ..data.pack import pack_dataset

    d = pack_dataset(args.data, args.out, labels=args.labels, class_names=args.class_names, size=args.image_size,
                     skip_bad_files=args.skip_bad_files, overwrite=args.overwrite)
    megabytes = d.images.nbytes / 2**20
    print(f"packed {len(d)} images, {d.size}×{d.size} RGB ({megabytes:.0f} MiB) into {args.out}"
          + (f", {len(d.class_names)} classes" if d.labels is not None else ", no class labels")
          + (f", {d.skipped} bad files skipped" if d.skipped else ""))
    print(f"  labels, class names, captions: {sidecar(args.out)}")
    print(f"  train from disk: tinydiffusion train --data {args.out} --image-size {d.size}")
    return 0
