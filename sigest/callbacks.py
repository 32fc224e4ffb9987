"""skorch callbacks for signature embedders: the validation writers' EER each epoch, weight averaging."""

import numpy as np
import torch
from skorch.callbacks import Callback

from .metrics import embedding_eer

__all__ = ["WriterEER", "WeightAverage"]


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


class WeightAverage(Callback):
    """Judge and keep an exponential moving average of the network's weights, not its last step.

    After every training batch the average moves towards the current weights by ``1 - decay``.
    At the end of each epoch the averaged weights are put into the network, so that the callbacks
    after this one in the list (:class:`WriterEER`, ``EarlyStopping(load_best=True)``) score and
    keep them; at the start of the next epoch training resumes from its own weights. The average
    smooths the epoch-to-epoch swings of a small validation set and damps the last steps of a
    network that has begun to memorise its training writers. Batch-norm statistics are the
    current ones.

    Parameters
    ----------
    decay : float, default=0.98
        Weight of the old average at each batch; ``1 / (1 - decay)`` batches is its horizon.
    """

    def __init__(self, decay=0.98):
        self.decay = decay

    def on_train_begin(self, net, **kwargs):
        self.average_ = {name: p.detach().clone() for name, p in net.module_.named_parameters()}
        self.own_ = None

    def on_epoch_begin(self, net, **kwargs):
        if self.own_ is not None:
            self._load(net, self.own_)
            self.own_ = None

    def on_batch_end(self, net, training=False, **kwargs):
        if not training:
            return
        with torch.no_grad():
            for name, p in net.module_.named_parameters():
                self.average_[name].lerp_(p.detach(), 1.0 - self.decay)

    def on_epoch_end(self, net, **kwargs):
        self.own_ = {name: p.detach().clone() for name, p in net.module_.named_parameters()}
        self._load(net, self.average_)

    @staticmethod
    def _load(net, weights):
        with torch.no_grad():
            for name, p in net.module_.named_parameters():
                p.copy_(weights[name])
