"""The ``sigest`` command: demo, train, evaluate, verify.

Exit status: 0 success (``verify``: GENUINE), 1 ``verify`` said FORGED, 2 unusable input or options,
130 interrupted (Ctrl-C; nothing is saved and an existing model file is left as it was).
"""

import argparse
import pickle
import sys
from pathlib import Path

import joblib
import numpy as np

from ._files import atomic_path, check_output_file

EXIT_GENUINE, EXIT_FORGED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """A one-line problem with the user's input."""


PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def _load_model(spec):
    """A fitted pipeline from a shipped model's name, a safe ``.safetensors`` file or a joblib file."""
    from sklearn.pipeline import Pipeline

    from .persistence import ModelFormatError, load
    from .pretrained import list_pretrained, pretrained
    from .verification import _embeds

    if spec in list_pretrained():
        return pretrained(spec)
    path = Path(spec)
    if not path.is_file():
        raise CommandError(f"model file not found: {path} (shipped models: {', '.join(list_pretrained())})")
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        try:
            return load(path)
        except ModelFormatError as exc:
            raise CommandError(str(exc)) from None
    print(f"sigest: warning: {path} is a pickle (joblib) file, which runs code when loaded: load it only from a "
          "source you trust; 'sigest train --out MODEL.safetensors' writes the safe format", file=sys.stderr)
    try:
        model = joblib.load(path)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, AttributeError, ImportError, IndexError,
            TypeError, MemoryError, OverflowError) as exc:
        raise CommandError(f"{path} is not a sigest model ({type(exc).__name__})") from None
    if not (isinstance(model, Pipeline) and _embeds(model[-1])):
        raise CommandError(f"{path} is not a sigest model (it holds a {type(model).__name__})")
    return model


def _read_data(sources, size=None):
    """A signature table, and from one cache file ``train_verifier``'s ``images``, ``ink`` and ``preprocessor``.

    From data folders the second value is an empty dict.
    """
    from .datasets import load_signatures

    if len(sources) == 1 and Path(sources[0]).suffix == ".npz":
        from .cache import cache_images, cache_preprocessor, load_cache

        cache = load_cache(sources[0])
        preprocessor = cache_preprocessor(cache)
        if size is not None and tuple(size) != preprocessor.size:
            raise CommandError(f"{sources[0]} holds {preprocessor.size[0]}x{preprocessor.size[1]} images, "
                               f"not the {size[0]}x{size[1]} asked for with --size")
        if cache.ink is None:
            print(f"note: {sources[0]} holds no ink measures (an older cache); the model will not compare ink. "
                  "Rebuild it with 'sigest prepare' to compare ink", file=sys.stderr)
        return cache.table.drop(columns="index"), {"images": cache_images(cache), "ink": cache.ink,
                                                   "preprocessor": preprocessor}
    return load_signatures(sources[0] if len(sources) == 1 else sources), {}


def _train(args, table, cached=None):
    from .training import train_verifier
    from .verification import LOCAL_PAIR_VIEWS, LOCAL_VOTER_VIEWS, PAIR_VIEWS, VOTER_VIEWS

    if args.local_pooling < 1 or (args.local_pooling > 1 and not args.local_view):
        raise CommandError(f"--local-pooling {args.local_pooling}: pools the local view's grids (a positive "
                           "integer, with --local-view)")
    init = _load_model(args.init) if getattr(args, "init", None) else None
    return train_verifier(table, **(cached or {}), init=init, valid_writers=args.valid_size,
                          size=tuple(args.size or DEFAULT_SIZE), backbone=args.backbone, max_epochs=args.epochs,
                          whitening=args.whitening, device=args.device, autocast=args.autocast,
                          voter_views=LOCAL_VOTER_VIEWS if args.local_view else VOTER_VIEWS,
                          pair_views=LOCAL_PAIR_VIEWS if args.local_view else PAIR_VIEWS,
                          local_pooling=args.local_pooling, augment=_augmentation(args), random_state=args.seed,
                          progress=not args.quiet, lr=args.lr, local_weight=args.local_weight)


def _augmentation(args):
    """``--ink-jitter``'s training augmentation, or None."""
    if args.ink_jitter is None:
        return None
    from .nn import InkJitter

    return InkJitter(factor=tuple(args.ink_jitter))


def _save_model(model, path, info=None):
    """The safe format, unless the path asks for a pickle (``.joblib``, ``.pkl``)."""
    from .persistence import save

    if Path(path).suffix.lower() in PICKLE_SUFFIXES:
        with atomic_path(path) as tmp:
            joblib.dump(model, tmp)
    else:
        save(model, path, info=info)


def cmd_prepare(args):
    from .cache import load_cache, prepare_cache
    from .datasets import load_signatures
    from .preprocessing import PreprocessImage

    check_output_file(args.out)
    table = load_signatures(args.data[0] if len(args.data) == 1 else args.data)
    preprocessor = PreprocessImage(tuple(args.size or DEFAULT_SIZE), binarize=args.binarize,
                                   normalize_ink=args.normalize_ink, n_jobs=args.jobs)
    out = prepare_cache(table, args.out, preprocessor=preprocessor, progress=not args.quiet,
                        drop_near_duplicates=not args.keep_near_duplicates)
    kept = len(load_cache(out).table)
    print(f"preprocessed {len(table)} images of {table['writer'].nunique()} writers "
          f"({table.attrs['n_duplicates']} duplicate files dropped, {len(table) - kept} near-duplicate images left "
          f"out); saved {kept} to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_train(args):
    from .datasets import qualified_writers, split_writers

    check_output_file(args.out)
    table, cached = _read_data(args.data, args.size)
    if args.test_writers:
        keep = ~table["writer"].isin(args.test_writers).to_numpy()
        table, _ = split_writers(table, test_writers=args.test_writers)  # refuses writers not in the data
        cached = {name: value if value is None or name == "preprocessor" else value[keep]
                  for name, value in cached.items()}
    model = _train(args, table, cached)
    replaced = Path(args.out).exists()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    _save_model(model, args.out, info={"writers": sorted(qualified_writers(table).unique()), "data": list(args.data)})
    print(f"trained on {table['writer'].nunique()} writers; threshold {model[-1].threshold:.3f}; "
          f"{'replaced' if replaced else 'saved'} {args.out}")
    return 0


def _model_and_data(sources):
    """``[MODEL] DATA [DATA ...]`` -> (model spec, data folders); the model defaults to sigest-base."""
    from .pretrained import list_pretrained

    sources = list(sources)
    named = sources[0] in list_pretrained() or Path(sources[0]).is_file()
    return (sources.pop(0) if named and len(sources) > 1 else "sigest-base"), sources


def _load_fast_model(spec):
    """:func:`_load_model`, its preprocessing on every core (threads decode and clean images)."""
    model = _load_model(spec)
    if "n_jobs" in model[0].get_params():
        model[0].set_params(n_jobs=-1)
    return model


def cmd_evaluate(args):
    from .datasets import load_signatures
    from .evaluation import evaluate, format_report

    model_spec, sources = _model_and_data(args.sources)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise CommandError(f"--out {args.out} is a file; give a folder for the report")
    model = _load_fast_model(model_spec)
    table = load_signatures(sources[0] if len(sources) == 1 else sources)
    report = evaluate(model, table, writers=args.writers, out_dir=args.out, ks=args.k)
    print(format_report(report))
    if args.out:
        print(f"report written to {args.out}")
    return 0


def cmd_calibrate(args):
    from .datasets import load_signatures, split_writers
    from .training import calibrate

    check_output_file(args.out)
    model_spec, sources = _model_and_data(args.sources)
    model = _load_fast_model(model_spec)
    table = load_signatures(sources[0] if len(sources) == 1 else sources)
    if args.writers:
        _, table = split_writers(table, test_writers=args.writers)  # refuses writers not in the data
    calibrated = calibrate(model, table, k=args.k)
    info = {**getattr(model, "sigest_info_", {}).get("info", {}),
            "calibrated_on": {"model": model_spec, "writers": sorted(table["writer"].unique()), "data": sources}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    _save_model(calibrated, args.out, info=info)
    voter, old_voter = calibrated.reference_voter_, getattr(model, "reference_voter_", None)
    print(f"calibrated on {table['writer'].nunique()} writers: pair threshold {model[-1].threshold:.3f} -> "
          f"{calibrated[-1].threshold:.3f}; voter threshold "
          f"{'none' if old_voter is None else f'{old_voter.threshold:.3f}'} -> {voter.threshold:.3f}; saved {args.out}")
    return 0


def cmd_verify(args):
    from concurrent.futures import ThreadPoolExecutor

    from .preprocessing import read_grayscale
    from .seed_api import vote_rows

    if args.report:
        check_output_file(args.report)
        if len(args.questioned) > 1:
            raise CommandError("--report draws one questioned signature: give a single --questioned")
    model = _load_model(args.model)
    n, k = len(args.questioned), len(args.reference)
    paths = [*args.questioned, *args.reference]
    items = np.empty(len(paths), dtype=object)
    with ThreadPoolExecutor() as pool:  # decoded once, on every core; an error names its file
        items[:] = list(pool.map(read_grayscale, paths))
    voting = args.voting
    if voting == "auto":
        has_voter = getattr(model, "reference_voter_", None) is not None
        voting = "normalized" if has_voter and k >= 3 else "soft"
    if voting == "normalized" and k < 2:
        raise CommandError("--voting normalized needs at least 2 --reference images")
    model[0].set_params(n_jobs=-1, pool_rows=True)  # threads on every core; each image once, rows as positions
    references = list(items[n:])
    X = model[:-1].transform([[q, *references] for q in items[:n]])  # for every verdict and the report
    try:
        labels, probabilities, per_reference = vote_rows(model, X, voting=voting)
    except ValueError as exc:
        if voting != "normalized":
            raise
        raise CommandError(f"{exc}; use --voting soft") from None
    threshold = model.reference_voter_.threshold if voting == "normalized" else model[-1].threshold
    if args.report:
        from .plotting import plot_verification

        images = X["images"][:, 0]  # the pool: the one questioned image, then the references
        plot_verification(images[0], images[1:], per_reference[0], probabilities[0], threshold, args.report,
                          names=[Path(p).name for p in paths], ink=X.get("ink"))
    for path, label, probability, evidence in zip(args.questioned, labels, probabilities, per_reference):
        verdict = "GENUINE" if label == 1 else "FORGED"
        print(f"{verdict} probability_genuine={probability:.4f} threshold={threshold:.4f} voting={voting} "
              f"per_reference={np.round(evidence, 4).tolist()} questioned={path}")
    return EXIT_GENUINE if labels.all() else EXIT_FORGED


def cmd_demo(args):
    from .datasets import load_signatures, make_signatures, save_signatures, split_writers
    from .evaluation import evaluate, format_report

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CommandError(f"{out} already exists and is not an empty folder: remove it or give another --out, "
                           "so that old and new synthetic writers never mix")
    print(f"generating {args.writers} synthetic writers in {out / 'data'}")
    data = make_signatures(n_writers=args.writers, n_genuine=10, n_forged=6, image_size=(100, 200),
                           random_state=args.seed)
    table = load_signatures(save_signatures(data, out / "data"))
    train, test = split_writers(table, test_size=0.2, random_state=args.seed)
    print(f"training on {train['writer'].nunique()} writers, testing on {test['writer'].nunique()} unseen writers")
    model = _train(args, train)
    _save_model(model, out / "model.safetensors")
    report = evaluate(model, test, out_dir=out / "report", ks=(1, 3, 5))
    print(format_report(report))
    print(f"model {out / 'model.safetensors'}, report {out / 'report'}")
    return 0


def _training_options(parser, epochs):
    parser.add_argument("--epochs", type=int, default=epochs, help="maximum training epochs (default %(default)s)")
    _size_option(parser)
    parser.add_argument("--backbone", default="resnet_tiny", help="registered backbone (default %(default)s)")
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate (default %(default)s)")
    parser.add_argument("--valid-size", type=float, default=0.15,
                        help="share of training writers held out for checkpoint selection, the pair head and the "
                             "threshold (default %(default)s)")
    parser.add_argument("--whitening", type=_whitening, default="auto", metavar="SHRINKAGE",
                        help="within-writer whitening of the embedding: its shrinkage in (0, 1], 'none', or 'auto' "
                             "(0.1, or the starting model's with --from) (default %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    parser.add_argument("--autocast", choices=["bfloat16"],
                        help="train with the network's forward passes in bfloat16 (torch.autocast): faster where "
                             "the hardware computes in bfloat16 (GPUs; 1.5x measured on a CPU with AMX), slower "
                             "where it is emulated; "
                             "a .safetensors model computes in float32 wherever it is loaded (default: float32)")
    parser.add_argument("--ink-jitter", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="multiply the ink intensity of half the training images by a random factor in "
                             "[LOW, HIGH] (sigest.nn.InkJitter), e.g. 0.6 1.2: a verifier that accepts a lighter or "
                             "darker pen than the references', at some accuracy on single-pen benchmarks "
                             "(default: off)")
    parser.add_argument("--local-weight", type=float, default=1.0,
                        help="weight of the local triplet loss that trains the strokes' local descriptors beside "
                             "the triplet loss (sigest.nn.LocalMatchTripletLoss); 0 leaves it out: training 1.5x faster "
                             "on a GPU, 2.2x on a 2-core CPU (default %(default)s)")
    parser.add_argument("--local-view", action="store_true",
                        help="the reference voter and the pair classifier also compare the local view (the "
                             "strokes position by position, matched in the references together: "
                             "sigest.verification.local_set_distance_ratio; in a pair: local_match_distance): "
                             "lower EER on all three data sets, about 1.5x slower verification with references "
                             "(default: off)")
    parser.add_argument("--local-pooling", type=int, default=1, metavar="N",
                        help="with --local-view: pool the local grids N x N before matching them "
                             "(sigest.nn.pool_local_descriptors); 2 matches about 7x faster, at some accuracy "
                             "(README) (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


DEFAULT_SIZE = (150, 220)


def _whitening(text):
    """``--whitening``: "auto", "none" (None) or a shrinkage."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        shrinkage = float(text)
    except ValueError:
        shrinkage = None
    if shrinkage is None or not 0.0 < shrinkage <= 1.0:
        raise argparse.ArgumentTypeError(f"expected auto, none or a shrinkage in (0, 1], got {text!r}")
    return shrinkage


def _size_option(parser):
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help=f"preprocessed image size (default {DEFAULT_SIZE}, or a cache's own)")


def build_parser():
    parser = argparse.ArgumentParser(prog="sigest", description="Offline handwritten signature verification.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate synthetic signatures, train, evaluate on unseen writers")
    demo.add_argument("--out", default="sigest-demo", help="output folder (default %(default)s)")
    demo.add_argument("--writers", type=int, default=60, help="synthetic writers (default %(default)s)")
    _training_options(demo, epochs=10)
    demo.set_defaults(func=cmd_demo)

    prepare = sub.add_parser("prepare", help="preprocess signature folders once into a cache file (.npz)")
    prepare.add_argument("data", nargs="+", help="signature folder(s); writers are qualified by folder name")
    prepare.add_argument("--out", required=True, help="cache file to write (.npz)")
    _size_option(prepare)
    prepare.add_argument("--binarize", action="store_true",
                         help="black ink on white paper: drop the ink's gray levels (pens, scanners)")
    prepare.add_argument("--normalize-ink", type=float, nargs="?", const=95.0, metavar="PERCENTILE",
                         help="scale each image's ink so that this percentile of its darkness is black (default "
                              "%(const)s): the same signature in a lighter or darker ink gives the same image")
    prepare.add_argument("--keep-near-duplicates", action="store_true",
                         help="keep images that repeat another image of the same writer once preprocessed (copies "
                              "of one scan cropped or re-saved; left out by default)")
    prepare.add_argument("--jobs", type=int, default=-1, help="parallel workers (default: all cores)")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(func=cmd_prepare)

    train = sub.add_parser("train", help="train a verifier on signature folders or a cache")
    train.add_argument("data", nargs="+",
                       help="signature folder(s) (CEDAR, BHSig260, SigComp or generic layout), or one cache file "
                            "written by 'sigest prepare'")
    train.add_argument("--out", required=True,
                       help="model file to write: .safetensors (safe, loads without running code) or .joblib")
    train.add_argument("--test-writers", nargs="+",
                       help="writers to leave out entirely (kept for testing); with several folders, qualified "
                            "as FOLDER/WRITER")
    train.add_argument("--from", dest="init", metavar="MODEL",
                       help="fine-tune this model (a file, or a shipped name such as sigest-base) instead of "
                            "training from scratch; its input size and network are kept (use a small --lr, 3e-4)")
    _training_options(train, epochs=40)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="writer-independent evaluation of a model on a signature folder",
                        usage="sigest evaluate [MODEL] DATA [DATA ...] [options]")
    ev.add_argument("sources", nargs="+", metavar="[MODEL] DATA",
                    help="an optional model (a file written by 'sigest train', or a shipped name; default "
                         "sigest-base), then the signature folder(s) of writers the model never saw")
    ev.add_argument("--writers", nargs="+", help="test writers (default: every writer in the folder)")
    ev.add_argument("--out", help="report folder (CSV and PNG files)")
    ev.add_argument("--k", type=int, nargs="+", default=[1, 3, 5, 10], help="reference counts for voting")
    ev.set_defaults(func=cmd_evaluate)

    calibrate = sub.add_parser(
        "calibrate", usage="sigest calibrate [MODEL] DATA [DATA ...] --out FILE [options]",
        help="re-choose a model's thresholds on writers of your own (scanner, script, population)")
    calibrate.add_argument("sources", nargs="+", metavar="[MODEL] DATA",
                           help="an optional model (default sigest-base), then signature folder(s) of writers it "
                                "never trained on, with their skilled forgeries")
    calibrate.add_argument("--out", required=True, help="calibrated model file to write (.safetensors)")
    calibrate.add_argument("--writers", nargs="+", help="calibrate on these writers only (default: all)")
    calibrate.add_argument("--k", type=int, default=5, help="references per row of the voter's calibration "
                                                           "(default %(default)s)")
    calibrate.set_defaults(func=cmd_calibrate)

    verify = sub.add_parser("verify", help="verify questioned signatures against genuine references")
    verify.add_argument("model", nargs="?", default="sigest-base",
                        help="model file written by 'sigest train', or a shipped model's name (default %(default)s)")
    verify.add_argument("--reference", nargs="+", required=True, help="genuine reference images")
    verify.add_argument("--questioned", nargs="+", required=True,
                        help="the questioned image(s), each verified against all the references: a line each; exit "
                             "status 0 when every one is genuine, 1 when any is forged")
    verify.add_argument("--voting", choices=["auto", "soft", "hard", "normalized"], default="auto",
                        help="normalized: the distance to the references over their own spread, calibrated on "
                             "validation writers (needs 2+ references and a model that holds it); soft: mean pair "
                             "probability; hard: majority of the references. auto (default): normalized with 3 or "
                             "more references (measured better from 3 on), else soft")
    verify.add_argument("--report", metavar="FILE.png",
                        help="draw the evidence: the questioned signature beside each reference, with the "
                             "per-reference and overall probability and the threshold")
    verify.set_defaults(func=cmd_verify)
    return parser


def main(argv=None):
    """Run the ``sigest`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    from .preprocessing import ImageReadError

    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        print(f"sigest: interrupted{f' ({exc})' if str(exc) else ''}; nothing was saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CommandError, FileNotFoundError, IsADirectoryError, PermissionError, ImageReadError, ValueError) as exc:
        print(f"sigest: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
