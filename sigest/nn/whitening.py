"""Within-writer covariance normalisation (WCCN) of embeddings, as speaker-verification back-ends do."""

import torch

__all__ = ["within_writer_whitening"]


def within_writer_whitening(embeddings, writers, shrinkage=0.1):
    """A linear map that makes the spread of each writer's own signatures the same in every direction.

    The within-writer covariance ``S`` of the embeddings (each writer's signatures centred on that
    writer's mean; writers with a single signature count for nothing) is shrunk towards a multiple
    of the identity, ``(1 - shrinkage) * S + shrinkage * trace(S) / d * I``, and ``W = S^(-1/2)``
    (up to a rotation) is returned: ``W.T @ S @ W = I``. Distances between rows of
    ``embeddings @ W`` then weigh down the directions in which one writer's genuine signatures vary
    anyway, and weigh up those in which they agree (within-class covariance normalisation, Hatch et
    al. 2006).

    Parameters
    ----------
    embeddings : Tensor of shape (n, d)
        Embeddings of genuine signatures of writers the network trained on.
    writers : LongTensor of shape (n,)
        Writer code of each row.
    shrinkage : float in (0, 1], default=0.1
        Weight of the identity in the shrunk covariance; 1 gives a multiple of the identity
        (distances unchanged once re-normalised).

    Returns
    -------
    whitening : Tensor of shape (d, d)
        float32, on the embeddings' device.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> writers = torch.arange(20).repeat_interleave(10)
    >>> E = torch.randn(20, 4, generator=g)[writers] + torch.randn(200, 4, generator=g) * torch.tensor([5., 1, 1, 1])
    >>> W = within_writer_whitening(E, writers, shrinkage=0.01)
    >>> W.shape
    torch.Size([4, 4])
    >>> bool(W[0].norm() < W[1].norm())  # the noisy first direction is weighed down
    True
    """
    if not 0.0 < shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
    if embeddings.dim() != 2 or writers.shape != embeddings.shape[:1]:
        raise ValueError(f"expected embeddings (n, d) and writers (n,), got {tuple(embeddings.shape)} and "
                         f"{tuple(writers.shape)}")
    x = embeddings.detach().double()
    _, codes, counts = torch.unique(writers, return_inverse=True, return_counts=True)
    means = torch.zeros(len(counts), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, codes, x)
    means /= counts[:, None]
    kept = counts[codes] > 1
    if not kept.any():
        raise ValueError("within-writer whitening needs a writer with at least 2 signatures")
    centred = (x - means[codes])[kept]
    covariance = centred.T @ centred / len(centred)
    d = covariance.shape[0]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    covariance = (1.0 - shrinkage) * covariance + shrinkage * torch.trace(covariance) / d * eye
    values, vectors = torch.linalg.eigh(covariance)
    return (vectors / values.clamp_min(1e-12).sqrt()).float()
