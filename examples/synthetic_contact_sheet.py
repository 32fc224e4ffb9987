"""Draw a contact sheet of generated signatures: genuine samples, then skilled forgeries, per writer.

Usage: python examples/synthetic_contact_sheet.py [OUT.png]
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sigest.datasets import make_signatures

out = sys.argv[1] if len(sys.argv) > 1 else "synthetic_signatures.png"
n_writers, n_genuine, n_forged = 5, 4, 3
data = make_signatures(n_writers=n_writers, n_genuine=n_genuine, n_forged=n_forged, random_state=0)
fig, axes = plt.subplots(n_writers, n_genuine + n_forged, figsize=(14, 1.0 * n_writers + 0.6))
for ax, image, writer, genuine in zip(axes.ravel(), data.images, data.writer, data.genuine):
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    ax.set_title(f"{writer} {'genuine' if genuine else 'FORGED'}", fontsize=7, color="k" if genuine else "r")
    ax.axis("off")
fig.tight_layout()
fig.savefig(out, dpi=90)
print(f"wrote {out}")
