"""``SiameseEmbedder``: the Siamese network trained with a triplet loss, as a skorch estimator."""

import contextlib

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping
from skorch.dataset import Dataset
from torch.utils.data import Sampler

from .nn import LocalMatchTripletLoss, SiameseResNet, TripletLoss, get_loss, identity_labels

__all__ = ["SiameseEmbedder", "WriterBatchSampler", "embedding_targets", "resolve_device"]


def resolve_device(device):
    """``"auto"`` becomes ``"cuda"`` when a GPU is present, else ``"cpu"``; other values pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def embedding_targets(writers, genuine=None):
    """Targets for fitting :class:`SiameseEmbedder` on single images.

    Parameters
    ----------
    writers : array-like of shape (n_images,)
        Writer of each image (any hashable labels); for a forgery, the writer it imitates.
    genuine : array-like of shape (n_images,) of bool, default=None
        False for skilled forgeries; None means all genuine.

    Returns
    -------
    y : ndarray of shape (n_images, 2), int64
        Column 0 the writer code (0..n_writers-1), column 1 1 for genuine, 0 for forged.
    """
    codes = np.unique(np.asarray(writers, dtype=object).astype(str), return_inverse=True)[1]
    genuine = np.ones(len(codes), dtype=bool) if genuine is None else np.asarray(genuine, dtype=bool)
    return np.column_stack([codes, genuine]).astype(np.int64)


class WriterBatchSampler(Sampler):
    """Batches of P writers x K signatures, so every batch holds positives and skilled negatives.

    Each batch draws ``writers_per_batch`` writers with at least two genuine signatures and, for
    each, ``samples_per_writer`` genuine signatures plus up to ``forgeries_per_writer`` of its
    skilled forgeries (genuine ones with replacement only when a writer has too few).

    Parameters
    ----------
    targets : ndarray of shape (n_images, 2)
        As made by :func:`embedding_targets`.
    writers_per_batch : int
    samples_per_writer : int
    seed : int
        Seed of this sampler's draws. Each pass (each epoch) draws new batches, going on from where
        the last pass left off; a new sampler with the same seed repeats the same sequence of passes.
    forgeries_per_writer : int or None, default=None
        At most this many skilled forgeries per writer; None means ``samples_per_writer // 2``.
    """

    def __init__(self, targets, writers_per_batch, samples_per_writer, seed, forgeries_per_writer=None):
        self.writers_per_batch = writers_per_batch
        self.samples_per_writer = samples_per_writer
        if forgeries_per_writer is not None and forgeries_per_writer < 0:
            raise ValueError(f"forgeries_per_writer must be >= 0 or None, got {forgeries_per_writer}")
        self.forgeries_per_writer = forgeries_per_writer
        self.seed = seed
        self.rng_ = np.random.RandomState(seed)
        writers, genuine = targets[:, 0], targets[:, 1].astype(bool)
        self.genuine = {w: np.flatnonzero((writers == w) & genuine) for w in np.unique(writers)}
        self.forged = {w: np.flatnonzero((writers == w) & ~genuine) for w in self.genuine}
        self.eligible = np.array([w for w, idx in self.genuine.items() if len(idx) >= 2])
        if len(self.eligible) < 2:
            raise ValueError("writer-balanced batches need at least 2 writers with 2 genuine signatures each")
        self.n_batches = max(1, len(targets) // (writers_per_batch * samples_per_writer))

    def __len__(self):
        return self.n_batches

    def __iter__(self):
        rng = self.rng_
        p = min(self.writers_per_batch, len(self.eligible))
        for _ in range(self.n_batches):
            batch = []
            for w in rng.choice(self.eligible, size=p, replace=False):
                g, f = self.genuine[w], self.forged[w]
                k = self.samples_per_writer
                batch += list(rng.choice(g, size=k, replace=len(g) < k))
                n_forged = min(k // 2 if self.forgeries_per_writer is None else self.forgeries_per_writer, len(f))
                if n_forged:
                    batch += list(rng.choice(f, size=n_forged, replace=False))
            yield batch


class SiameseEmbedder(NeuralNet):
    """A Siamese network trained with a triplet loss, embedding signatures for comparison.

    Two ways to fit:

    - on triplets: ``X`` of shape (n, 3, 1, H, W) as (anchor, positive, negative), ``y=None``;
    - on single images with writer labels: ``X`` of shape (n, 1, H, W) and ``y`` of shape
      (n, 2) from :func:`embedding_targets` (writer code, genuine flag), or (n,) writer codes.
      Batches are then P writers x K signatures (:class:`WriterBatchSampler`) and triplets are
      mined inside each batch (``criterion__mining``), skilled forgeries of w being negatives for
      w's anchors.

    ``transform`` maps images to embeddings. Everything else is skorch's :class:`~skorch.NeuralNet`:
    ``module__*``, ``criterion__*``, ``optimizer__*`` and ``callbacks`` (progress bar, early
    stopping, LR schedule, checkpoints) work as there. For a validation split, pass
    ``train_split=skorch.helper.predefined_split(Dataset(X_valid, y_valid))`` built from writers
    the training data does not hold, never a random split of images.

    Parameters
    ----------
    module : type, default=SiameseResNet
        The network; ``module__backbone``, ``module__embedding_dim`` and the rest configure it.
    criterion : type, module or str, default=TripletLoss
        A loss class, or a registered loss's name (:func:`sigest.nn.list_losses`), called as
        ``criterion(embeddings, labels, indices_tuple)``; ``criterion__*`` configure it.
    optimizer : type, default=torch.optim.AdamW
    lr : float, default=3e-3
    max_epochs : int, default=10
    batch_size : int, default=32
        Batch size for triplets and for inference.
    writers_per_batch : int, default=32
        P of the writer-balanced batches.
    samples_per_writer : int, default=8
        K genuine signatures per writer in a batch.
    forgeries_per_writer : int or None, default=None
        Skilled forgeries of each writer in a batch, at most (None: ``samples_per_writer // 2``).
    augment : torch.nn.Module or None, default=None
        Applied to each training batch of single images (not to triplets, nor at inference),
        e.g. :class:`sigest.nn.SignatureAugment` or :class:`sigest.nn.InkJitter`; called as
        ``augment(X, generator=...)``.
    train_split : callable or None, default=None
        skorch's split; None trains on everything.
    local_weight : float, default=0.0
        Weight of a second loss on the network's local descriptors, added to the criterion's when
        fitting single images: :class:`sigest.nn.LocalMatchTripletLoss` (``local_margin``), which
        trains the map the ``"local"`` view of :meth:`sigest.nn.SiameseResNet.views` reads; 0 leaves
        it out (the forward pass then gives the embeddings alone).
    local_margin : float, default=0.1
        That loss's margin on the log of its distance ratio.
    autocast : {None, "bfloat16"}, default=None
        Run the network's forward passes (training, validation and :meth:`transform`) under
        :func:`torch.autocast` in bfloat16 on the embedder's device; embeddings and the loss stay
        float32. Faster where the hardware computes in bfloat16 (recent GPUs; CPUs with AMX or
        AVX512-BF16), slower where it is emulated. None computes in float32.
    device : str, default="auto"
        ``"auto"`` uses CUDA when present, else the CPU; or any torch device string.
    random_state : int or None, default=None
        Seeds weight initialisation and batch order, so a CPU fit is repeatable.
    verbose : int, default=0
        1 prints skorch's epoch table.
    **kwargs
        Passed to :class:`skorch.NeuralNet` (``module__backbone="resnet_tiny"``, ``callbacks=[...]``).

    Attributes
    ----------
    module_ : SiameseResNet
        The trained network.
    history_ : skorch.History
        Per-epoch losses.
    n_writers_ : int
        Writers in the labelled images of the last fit (the forgery classes' offset).

    Examples
    --------
    >>> import numpy as np
    >>> from sigest.embedder import SiameseEmbedder
    >>> X = np.random.RandomState(0).rand(8, 3, 1, 32, 48).astype(np.float32)
    >>> net = SiameseEmbedder(module__backbone="resnet_tiny", max_epochs=1, random_state=0).fit(X)
    >>> net.transform(X[:, 0]).shape
    (8, 128)
    """

    def __init__(
        self,
        module=SiameseResNet,
        *,
        criterion=TripletLoss,
        optimizer=torch.optim.AdamW,
        lr=3e-3,
        max_epochs=10,
        batch_size=32,
        writers_per_batch=32,
        samples_per_writer=8,
        forgeries_per_writer=None,
        augment=None,
        local_weight=0.0,
        local_margin=0.1,
        train_split=None,
        autocast=None,
        device="auto",
        random_state=None,
        verbose=0,
        **kwargs,
    ):
        kwargs.setdefault("torch_load_kwargs", {"weights_only": False})
        self.augment = augment  # before skorch's __init__: a module instance is a plain parameter here
        super().__init__(
            module,
            criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            device=device,
            verbose=verbose,
            **kwargs,
        )
        self.writers_per_batch = writers_per_batch
        self.samples_per_writer = samples_per_writer
        self.forgeries_per_writer = forgeries_per_writer
        self.local_weight = local_weight
        self.local_margin = local_margin
        self.autocast = autocast
        self.random_state = random_state

    # -- device="auto": the parameter keeps "auto"; skorch reads the resolved device ------------------
    @property
    def device(self):
        return resolve_device(self.__dict__.get("device", "cpu"))

    @device.setter
    def device(self, value):
        self.__dict__["device"] = value

    def get_params(self, deep=True, **kwargs):
        params = super().get_params(deep=deep, **kwargs)
        params["device"] = self.__dict__.get("device", "cpu")
        return params

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_inference_copy", None)  # a cache: rebuilt on the next inference, never saved
        return state

    def __setstate__(self, state):
        # skorch maps a CUDA-trained net to the CPU when CUDA is absent; "auto" stays "auto".
        requested = state["device"]
        state["device"] = resolve_device(requested)
        state.setdefault("local_weight", 0.0)  # pickled before the local loss existed: trained without it
        state.setdefault("local_margin", 0.1)
        super().__setstate__(state)
        self.__dict__["device"] = requested if requested == "auto" else str(self.__dict__["device"])

    # -- skorch hooks ----------------------------------------------------------------------------------
    def _seed(self):
        """A seed for torch drawn from this net's own random state."""
        return int(self.rng_.randint(2**31 - 1))

    def initialize(self):
        """Build module, criterion and optimizer; seeded by ``random_state`` without touching torch's global RNG."""
        self._autocast_context()  # an unknown autocast fails here, before any training
        self.rng_ = np.random.RandomState(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed())
            super().initialize()
        self.augment_generator_ = torch.Generator().manual_seed(self._seed())
        return self

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's loop, run on a forked, seeded torch RNG: repeatable, and the caller's RNG is left as it was.

        skorch ends training quietly on Ctrl-C; ``interrupted_`` records that it happened, so that a
        caller can refuse to treat a cut-short net as trained. skorch's ``EarlyStopping`` stops by
        raising the same exception; that is a normal end, not an interruption.
        """
        self.interrupted_ = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed())
            try:
                return super().fit_loop(X, y, epochs=epochs, **fit_params)
            except KeyboardInterrupt:
                self.interrupted_ = not any(
                    isinstance(callback, EarlyStopping) and callback.misses_ >= callback.patience
                    for _, callback in self.callbacks_)
                raise

    def forward(self, X, training=False, device="cpu"):
        """skorch's ``forward``, leaving torch's global RNG as it was (the data loader draws from it)."""
        with torch.random.fork_rng(devices=[]):
            return super().forward(X, training=training, device=device)

    def _autocast_context(self):
        """:func:`torch.autocast` in ``autocast``'s dtype on the device's type, or no context."""
        if self.autocast is None:
            return contextlib.nullcontext()
        if self.autocast != "bfloat16":
            raise ValueError(f"autocast must be None or 'bfloat16', got {self.autocast!r}")
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)

    def infer(self, x, **fit_params):
        """skorch's forward pass (training and validation), under ``autocast``; the embeddings back in float32."""
        with self._autocast_context():
            out = super().infer(x, **fit_params)
        if self.autocast is None:
            return out
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()

    def train_step_single(self, batch, **fit_params):
        """skorch's step, with ``augment`` applied to batches of single images, and their local descriptors
        asked of the network when ``local_weight`` is set."""
        Xi, yi = batch
        if Xi.dim() == 4:
            if self.augment is not None:
                batch = (self.augment(Xi.to(self.device), generator=self.augment_generator_), yi)
            if self.local_weight:
                fit_params = {**fit_params, "with_local": True}
        return super().train_step_single(batch, **fit_params)

    def get_dataset(self, X, y=None):
        if isinstance(X, Dataset):
            return X
        X = np.asarray(X, dtype=np.float32)
        if X.ndim not in (4, 5):
            raise ValueError(f"expected images (n, 1, H, W) or triplets (n, 3, 1, H, W), got shape {X.shape}")
        if X.ndim == 5 and X.shape[1] != 3:
            raise ValueError(f"triplet input must have 3 images per row, got shape {X.shape}")
        if X.ndim == 4:
            if y is None:
                raise ValueError("single images need writer labels y; pass triplets (n, 3, 1, H, W) to fit without y")
            y = np.asarray(y, dtype=np.int64)
            y = embedding_targets(y) if y.ndim == 1 else y
            self.n_writers_ = int(y[:, 0].max()) + 1
        return Dataset(X, y)

    def get_iterator(self, dataset, training=False):
        targets = getattr(dataset, "y", None)
        if not training or targets is None or np.ndim(targets) != 2:
            return super().get_iterator(dataset, training=training)
        sampler = WriterBatchSampler(np.asarray(targets), self.writers_per_batch, self.samples_per_writer,
                                     seed=self._seed(), forgeries_per_writer=self.forgeries_per_writer)
        kwargs = self.get_params_for("iterator_train")
        for batching in ("batch_size", "shuffle", "sampler", "drop_last"):
            kwargs.pop(batching, None)
        return self.iterator_train(dataset, batch_sampler=sampler, **kwargs)

    def initialize_criterion(self):
        """skorch's, and a registered loss by name: ``criterion="triplet"``, ``"supcon"``, ``"proxy_anchor"``
        or ``"arcface"``."""
        if isinstance(self.criterion, str):
            self.criterion_ = get_loss(self.criterion, **self.get_params_for("criterion"))
        else:
            super().initialize_criterion()
        self.local_criterion_ = LocalMatchTripletLoss(margin=self.local_margin)
        return self

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion in pytorch-metric-learning's convention, ``(embeddings, labels, indices_tuple)``.

        Triplets (N, 3, D) become 3N embeddings with their triplets as ``indices_tuple``. Single
        images get :func:`~sigest.nn.identity_labels` (a class per writer and per writer's
        forgeries, offset by the training set's writer count) and, where the criterion mines
        (``mine``), the triplets mined in the batch with genuine anchors only. Given the local
        descriptors too (``y_pred`` a tuple, in training with ``local_weight``), ``local_weight``
        times :class:`~sigest.nn.LocalMatchTripletLoss` on them is added.
        """
        if isinstance(y_pred, tuple):
            y_pred, descriptors = y_pred
            loss = self.get_loss(y_pred, y_true, X=X, training=training)
            y_true = y_true.to(y_pred.device)
            return loss + self.local_weight * self.local_criterion_(descriptors, y_true[:, 0], y_true[:, 1].bool())
        if y_pred.dim() == 3:
            base = torch.arange(len(y_pred), device=y_pred.device) * 3
            return self.criterion_(y_pred.flatten(0, 1), None, (base, base + 1, base + 2))
        y_true = y_true.to(y_pred.device)
        genuine = y_true[:, 1].bool()
        labels = identity_labels(y_true[:, 0], genuine, offset=self.n_writers_)
        indices = self.criterion_.mine(y_pred, labels, anchors=genuine) if hasattr(self.criterion_, "mine") else None
        return self.criterion_(y_pred, labels, indices)

    # -- estimator API ---------------------------------------------------------------------------------
    def transform(self, X):
        """Embed images.

        Parameters
        ----------
        X : array-like of shape (n, 1, H, W) or (n, k, 1, H, W), float32

        Returns
        -------
        embeddings : ndarray of shape (n, embedding_dim) or (n, k, embedding_dim), float32
            Unit-norm rows.
        """
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 5:
            n, k = X.shape[:2]
            embeddings = self.transform(X.reshape(n * k, *X.shape[2:]))
            return embeddings.reshape(n, k, embeddings.shape[-1])
        return self._infer(X, lambda module, batch: {"embedding": module(batch)})["embedding"]

    def transform_views(self, X, raw_local=False):
        """Every view of :meth:`sigest.nn.SiameseResNet.views`, batch by batch, without gradients.

        Parameters
        ----------
        X : array-like of shape (n, 1, H, W), float32
        raw_local : bool, default=False
            The local view as the map's raw descriptors (``SiameseResNet.views``'s ``raw_local``).

        Returns
        -------
        views : dict of ndarray, float32
            ``"embedding"`` (n, embedding_dim), equal to :meth:`transform`'s; ``"penultimate"``
            (n, C_penultimate); ``"strips"`` (n, n_strips, embedding_dim); ``"texture"`` (n, C_texture):
            unit-norm rows; ``"local"`` (n, H', W', C_texture), a grid of weighted unit descriptors.
        """
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 4:
            raise ValueError(f"expected images (n, 1, H, W), got shape {X.shape}")
        return self._infer(X, lambda module, batch: module.views(batch, raw_local=raw_local))

    def _inference_module(self):
        """``module_.for_inference()`` (batch norms folded), kept until a weight or buffer of ``module_`` changes.

        Building the copy costs about 13 ms for resnet_tiny (46 ms for resnet18) on a 2-core CPU, more than
        embedding a few images; it is rebuilt when any tensor of the module is modified in place (its version
        counter moves: training steps, ``load_state_dict``, ``set_whitening``) or replaced or moved (its
        storage changes); a module whose tensors were made under ``torch.inference_mode`` (no version
        counter) gets a new copy every call. A module without ``for_inference`` is used as it is.
        """
        module = self.module_
        if not hasattr(module, "for_inference"):
            return module
        tensors = (*module.parameters(), *module.buffers())
        if any(t.is_inference() for t in tensors):  # made under torch.inference_mode: no version counter, no cache
            return module.for_inference()
        key = (id(module), tuple((t.data_ptr(), t._version) for t in tensors))
        cached = self.__dict__.get("_inference_copy")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_inference_copy"] = (key, module.for_inference())
        return cached[1]

    def _infer(self, X, outputs):
        """``outputs(module, batch)`` (a dict of tensors) over images (n, 1, H, W) in batches, concatenated.

        Runs without gradients on the module's inference copy (:meth:`_inference_module`), leaving
        torch's global RNG as it was (the data loader draws from it).
        """
        self.check_is_fitted()
        self._set_training(False)
        module = self._inference_module()
        parts = {}
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the loader draws a seed as it starts
            if len(X):
                batches = (Xi for Xi, _ in self.get_iterator(Dataset(X, None), training=False))
            else:  # no image: the empty batch itself, for outputs of the right shapes
                batches = [torch.as_tensor(X)]
            for Xi in batches:
                with self._autocast_context():
                    out = outputs(module, Xi.to(self.device))
                for name, value in out.items():
                    parts.setdefault(name, []).append(value.float().cpu())
        return {name: torch.cat(values).numpy() for name, values in parts.items()}
