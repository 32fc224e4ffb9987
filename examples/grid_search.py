"""Grid search over preprocessing and model parameters, folds split by writer, scored by EER."""

from sklearn.model_selection import GridSearchCV, GroupKFold

from sigest import make_verifier
from sigest.datasets import make_pairs, make_signatures, writer_groups
from sigest.metrics import eer_scorer


def main(n_writers=24, max_epochs=4, size=(64, 96)):
    data = make_signatures(n_writers=n_writers, n_genuine=6, n_forged=3, random_state=0)
    pairs = make_pairs(data.table, protocol="balanced", forgeries="both", n_per_writer=10, random_state=0)
    search = GridSearchCV(
        make_verifier(size=size, max_epochs=max_epochs, random_state=0),
        param_grid={"preprocess__denoise": [0, 3], "verifier__C": [0.1, 1.0]},
        scoring=eer_scorer,  # negated EER: higher is better
        cv=GroupKFold(n_splits=3),
    )
    search.fit(pairs[["reference", "questioned"]], pairs["label"], groups=writer_groups(pairs))
    print("best parameters:", search.best_params_, f"EER {-search.best_score_:.3f}")
    return search


if __name__ == "__main__":
    main()
