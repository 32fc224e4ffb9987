"""Verify questioned signatures against k genuine references of the claimed writer, by voting."""

from sigest import make_verifier, perform_voting
from sigest.datasets import make_pairs, make_signatures, split_writers


def main(n_writers=30, max_epochs=6, size=(64, 96), k=5):
    data = make_signatures(n_writers=n_writers, n_genuine=10, n_forged=4, random_state=0)
    train, test = split_writers(data.table, test_size=0.2, random_state=0)
    pairs = make_pairs(train, protocol="balanced", forgeries="both", n_per_writer=20, random_state=0)
    model = make_verifier(size=size, max_epochs=max_epochs, random_state=0)
    model.fit(pairs[["reference", "questioned"]], pairs["label"])

    writer = test[test["writer"] == test["writer"].iloc[0]]
    genuine, forged = writer.loc[writer["genuine"], "image"].tolist(), writer.loc[~writer["genuine"], "image"].tolist()
    references = genuine[:k]
    results = []
    for name, questioned in (("genuine", genuine[k]), ("forgery", forged[0])):
        label, probability, per_reference = perform_voting(model, questioned, references, voting="soft")
        print(f"{name:8s} -> {'GENUINE' if label else 'FORGED'} (p={probability:.3f}, per reference {per_reference.round(3)})")
        results.append((label, probability))
    return results


if __name__ == "__main__":
    main()
