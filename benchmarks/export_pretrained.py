"""Build the shipped ``sigest-base`` model file from a network trained by ``recipe.py --folds -1 --save``.

The network was trained on every writer of the cache but its validation writers; here its embedding is
whitened by the training writers' own spread (``sigest.training.fit_whitening``, shrinkage ``--whitening``),
then the pair head, its threshold and the distance-ratio voter (both comparing ink too when the cache holds ink measures)
are fitted on those validation writers (never trained on), and the pipeline is written in the safe format::

    python benchmarks/export_pretrained.py RUN.pt CACHE.npz sigest/weights/sigest-base.safetensors

``--from-model`` takes the network, its writers and its facts from an existing model file instead of a run, and
fits the rest anew as above: how a shipped file is rebuilt when sigest's heads change, its network untouched::

    python benchmarks/export_pretrained.py sigest/weights/sigest-base.safetensors CACHE.npz NEW.safetensors --from-model
"""

import argparse

import numpy as np
import torch

from sigest.cache import cache_images, cache_preprocessor, load_cache
from sigest.embedder import SiameseEmbedder
from sigest.persistence import load, save
from sigest.training import fit_pair_head, fit_whitening, fit_reference_voter, verifier_pipeline
from sigest.verification import LOCAL_PAIR_VIEWS, LOCAL_VOTER_VIEWS, PAIR_VIEWS, VOTER_VIEWS


def pipeline_from_run(run, cache, whitening=0.1, voter_views=VOTER_VIEWS, pair_views=PAIR_VIEWS, local_pooling=1):
    """The fitted pipeline of a ``recipe.py --save`` run (a dict of ``torch.load``): the network whitened by its
    training writers' spread (shrinkage ``whitening``, 0 for none), the pair head (comparing ``pair_views``
    beside the embedding), its threshold and the voter (comparing ``voter_views``) fitted on its validation
    writers; both pool the local grids by ``local_pooling``."""
    settings = run["args"]
    net = SiameseEmbedder(module__backbone=settings["backbone"], module__embedding_dim=settings["dim"],
                          module__attention_stages=tuple(settings["attention"]), device="cpu")
    net.initialize()
    net.module_.load_state_dict(run["state_dict"])
    net.history_.new_epoch()
    for key, value in {k: v for k, v in run["history"][-1].items() if k != "epoch"}.items():
        net.history_.record(key, float(value) if isinstance(value, (float, np.floating)) else value)
    table = cache.table.rename(columns={"index": "_row"})
    valid = table[table["writer"].isin(run["valid_writers"])]
    images = cache_images(cache)
    if whitening:
        own = table[table["writer"].isin(run["train_writers"]) & table["genuine"]]
        fit_whitening(net, images, table["writer"].to_numpy(), rows=own["_row"].to_numpy(), shrinkage=whitening)
    verifier = fit_pair_head(net, valid, images, ink=cache.ink, extra_views=pair_views, local_pooling=local_pooling,
                             random_state=0)
    preprocessor = cache_preprocessor(cache, n_jobs=None).set_params(measure_ink=cache.ink is not None)
    model = verifier_pipeline(preprocessor, verifier)
    model.reference_voter_ = fit_reference_voter(verifier, valid, images, ink=cache.ink, extra_views=voter_views,
                                                 local_pooling=local_pooling, random_state=0)
    return model


def run_from_model(path):
    """What :func:`pipeline_from_run` and the file's facts need, read from a sigest model file: (run, info)."""
    model = load(path, device="cpu")
    document, info = model.sigest_info_, model.sigest_info_["info"]
    network = document["network"]
    run = {"args": {"backbone": network["backbone"], "dim": network["embedding_dim"],
                    "attention": network["attention_stages"]},
           "state_dict": model[-1].embedder_.module_.state_dict(), "history": document["history"],
           "train_writers": info["train_writers"], "valid_writers": info["valid_writers"]}
    return run, info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("cache")
    parser.add_argument("out")
    parser.add_argument("--whitening", type=float, default=0.1, help="its shrinkage; 0 for none (default %(default)s)")
    parser.add_argument("--from-model", action="store_true", help="RUN is a sigest model file: keep its network")
    parser.add_argument("--local-view", action="store_true",
                        help="the voter and the pair head also compare the local view")
    parser.add_argument("--local-pooling", type=int, default=1, metavar="N",
                        help="with --local-view: pool the local grids N x N before matching (sigest-base-fast: 2)")
    args = parser.parse_args()
    if args.from_model:
        run, info = run_from_model(args.run)
        info = {**info, "whitening_shrinkage": args.whitening or None}
    else:
        run = torch.load(args.run, map_location="cpu", weights_only=False)  # our own training output
        settings = run["args"]
        info = {"train_writers": run["train_writers"], "valid_writers": run["valid_writers"],
                "recipe": {k: settings[k] for k in ("backbone", "dim", "attention", "size", "epochs", "patience",
                                                    "lr", "weight_decay", "margin", "mining", "loss", "p",
                                                    "k_per_writer", "local_weight", "local_margin") if k in settings},
                "whitening_shrinkage": args.whitening or None,
                "best_valid_eer": float(min(e["valid_eer"] for e in run["history"])),
                "epochs_trained": len(run["history"])}
    model = pipeline_from_run(run, load_cache(args.cache), whitening=args.whitening,
                              voter_views=LOCAL_VOTER_VIEWS if args.local_view else VOTER_VIEWS,
                              pair_views=LOCAL_PAIR_VIEWS if args.local_view else PAIR_VIEWS,
                              local_pooling=args.local_pooling)
    save(model, args.out, info=info)
    print(f"threshold {model[-1].threshold:.4f}, voter threshold {model.reference_voter_.threshold:.4f}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
