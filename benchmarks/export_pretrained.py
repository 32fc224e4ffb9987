"""Build the shipped ``sigest-base`` model file from a network trained by ``recipe.py --folds -1 --save``.

The network was trained on every writer of the cache but its validation writers; here its embedding is
whitened by the training writers' own spread (``sigest.training.fit_whitening``, shrinkage ``--whitening``),
then the pair head, its threshold and the distance-ratio voter (both comparing ink too when the cache holds ink measures)
are fitted on those validation writers (never trained on), and the pipeline is written in the safe format::

    python benchmarks/export_pretrained.py RUN.pt CACHE.npz sigest/weights/sigest-base.safetensors
"""

import argparse

import numpy as np
import torch

from sigest.cache import cache_images, cache_preprocessor, load_cache
from sigest.embedder import SiameseEmbedder
from sigest.persistence import save
from sigest.training import fit_pair_head, fit_whitening, fit_reference_voter, verifier_pipeline


def pipeline_from_run(run, cache, whitening=0.1):
    """The fitted pipeline of a ``recipe.py --save`` run (a dict of ``torch.load``): the network whitened by its
    training writers' spread (shrinkage ``whitening``, 0 for none), the pair head, its threshold and the voter
    fitted on its validation writers."""
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
    verifier = fit_pair_head(net, valid, images, ink=cache.ink, random_state=0)
    preprocessor = cache_preprocessor(cache, n_jobs=None).set_params(measure_ink=cache.ink is not None)
    model = verifier_pipeline(preprocessor, verifier)
    model.reference_voter_ = fit_reference_voter(verifier, valid, images, ink=cache.ink, random_state=0)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("cache")
    parser.add_argument("out")
    parser.add_argument("--whitening", type=float, default=0.1, help="its shrinkage; 0 for none (default %(default)s)")
    args = parser.parse_args()
    run = torch.load(args.run, map_location="cpu", weights_only=False)  # our own training output
    settings = run["args"]
    model = pipeline_from_run(run, load_cache(args.cache), whitening=args.whitening)
    info = {"train_writers": run["train_writers"], "valid_writers": run["valid_writers"],
            "recipe": {k: settings[k] for k in ("backbone", "dim", "attention", "size", "epochs", "patience", "lr",
                                                "weight_decay", "margin", "mining", "loss", "p", "k_per_writer")},
            "whitening_shrinkage": args.whitening or None,
            "best_valid_eer": float(min(e["valid_eer"] for e in run["history"])),
            "epochs_trained": len(run["history"])}
    save(model, args.out, info=info)
    print(f"threshold {model[-1].threshold:.4f}, voter threshold {model.reference_voter_.threshold:.4f}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
