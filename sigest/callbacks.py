"""skorch callbacks for signature embedders: the validation writers' EER, each epoch."""

import numpy as np
from skorch.callbacks import Callback

from .metrics import embedding_eer

__all__ = ["WriterEER"]


class WriterEER(Callback):
    """Record the EER of held-out writers' genuine vs skilled-forgery pairs after every epoch.

    The validation images are embedded, every genuine/genuine and genuine/skilled pair inside each
    writer is scored by embedding distance, and the EER (global threshold) is written to the
    history as ``name``. Combine with ``EarlyStopping(monitor=name, load_best=True)`` to keep the
    epoch that verifies unseen writers best: the validation triplet loss is a poor guide (it is
    often lowest at the first epoch while the EER goes on falling).

    The validation images are not pickled with the net: a saved model holds no data.

    Parameters
    ----------
    X : ndarray of shape (n_images, 1, H, W), float32
        Preprocessed images of writers the net does not train on.
    writers : array-like of shape (n_images,)
    genuine : array-like of shape (n_images,) of bool
    name : str, default="valid_eer"
        History key.
    """

    def __init__(self, X, writers, genuine, name="valid_eer"):
        self.X = X
        self.writers = writers
        self.genuine = genuine
        self.name = name

    def initialize(self):
        if self.X is None:
            raise ValueError("WriterEER was loaded from a pickle without its validation images; give them again")
        genuine = np.asarray(self.genuine, dtype=bool)
        if not genuine.any() or genuine.all():
            raise ValueError("WriterEER needs validation writers with genuine signatures and skilled forgeries")
        return self

    def on_epoch_end(self, net, **kwargs):
        embeddings = net.transform(self.X)
        net.history.record(self.name, embedding_eer(embeddings, self.writers, self.genuine))

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(X=None, writers=None, genuine=None)
        return state

    def __deepcopy__(self, memo):
        twin = self.__class__.__new__(self.__class__)
        memo[id(self)] = twin
        twin.__dict__.update(self.__dict__)
        return twin
