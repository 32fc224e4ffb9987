"""Quickstart: fit the recommended pipeline on generated signatures, predict on unseen writers."""

from sklearn.metrics import confusion_matrix

from sigest import make_verifier
from sigest.datasets import make_pairs, make_signatures, split_writers


def main(n_writers=40, max_epochs=8, size=(64, 96)):
    data = make_signatures(n_writers=n_writers, n_genuine=8, n_forged=4, random_state=0)
    train, test = split_writers(data.table, test_size=0.25, random_state=0)  # no writer on both sides
    train_pairs = make_pairs(train, protocol="balanced", forgeries="both", n_per_writer=20, random_state=0)
    test_pairs = make_pairs(test, protocol="exhaustive")
    X_train, X_test = train_pairs[["reference", "questioned"]], test_pairs[["reference", "questioned"]]

    model = make_verifier(size=size, max_epochs=max_epochs, random_state=0)
    model.fit(X_train, train_pairs["label"])
    proba = model.predict_proba(X_test)[:, 1]  # probability that the questioned signature is genuine
    print("confusion matrix (rows: forgery, genuine):\n", confusion_matrix(test_pairs["label"], model.predict(X_test)))
    return proba


if __name__ == "__main__":
    main()
