"""Evaluate on a real signature folder, writer-independently, with plots.

Usage: python examples/evaluate_folder.py DATA_FOLDER [REPORT_FOLDER]
Trains on 80 % of the writers (threshold chosen on validation writers among them) and reports on
the other 20 %, which the model never sees.
"""

import sys

from sigest.datasets import load_signatures, split_writers
from sigest.evaluation import evaluate, format_report
from sigest.training import train_verifier


def main(data, out="report", max_epochs=20, size=(96, 144), ks=(1, 3, 5, 10)):
    table = load_signatures(data)
    train, test = split_writers(table, test_size=0.2, random_state=0)
    model = train_verifier(train, size=size, max_epochs=max_epochs, random_state=0)
    report = evaluate(model, test, ks=ks, out_dir=out)  # roc.png, histogram.png, confusion_matrix.png, CSVs
    print(format_report(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:3])
