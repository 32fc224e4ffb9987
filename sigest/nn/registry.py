"""Name-to-builder registries for backbones, attention blocks and losses.

Modelled on ``torchvision.models._api``: ``register_backbone("name")`` decorates a builder,
``get_backbone("name", **kwargs)`` calls it, ``list_backbones()`` names what is known. Other
packages add builders without importing sigest first, through the entry-point groups
``sigest.backbones``, ``sigest.attention`` and ``sigest.losses`` (an entry point ``name = pkg.mod:builder``).
"""

from importlib.metadata import entry_points

__all__ = [
    "Registry",
    "BACKBONES",
    "ATTENTION",
    "LOSSES",
    "register_backbone",
    "get_backbone",
    "list_backbones",
    "register_attention",
    "get_attention",
    "list_attention",
    "register_loss",
    "get_loss",
    "list_losses",
]


class Registry:
    """A named collection of builders, completed lazily from an entry-point group.

    Parameters
    ----------
    kind : str
        What is registered, for error messages ("backbone").
    group : str
        The ``importlib.metadata`` entry-point group scanned for third-party builders.
    """

    def __init__(self, kind, group):
        self.kind = kind
        self.group = group
        self._builders = {}
        self._scanned = False

    def register(self, name):
        """Decorator registering ``builder`` under ``name``; a name can be taken only once."""

        def decorator(builder):
            if name in self._builders:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._builders[name] = builder
            return builder

        return decorator

    def _scan_entry_points(self):
        if self._scanned:
            return
        self._scanned = True
        for ep in entry_points(group=self.group):
            self._builders.setdefault(ep.name, ep)

    def get(self, name, **kwargs):
        """Build the registered ``name`` with ``kwargs``."""
        if name not in self._builders:
            self._scan_entry_points()
        if name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        builder = self._builders[name]
        if hasattr(builder, "load"):  # an entry point, loaded on first use
            builder = self._builders[name] = builder.load()
        return builder(**kwargs)

    def names(self):
        """Sorted names of every registered builder, entry points included."""
        self._scan_entry_points()
        return sorted(self._builders)


BACKBONES = Registry("backbone", "sigest.backbones")
ATTENTION = Registry("attention block", "sigest.attention")
LOSSES = Registry("loss", "sigest.losses")

register_backbone, get_backbone, list_backbones = BACKBONES.register, BACKBONES.get, BACKBONES.names
register_attention, get_attention, list_attention = ATTENTION.register, ATTENTION.get, ATTENTION.names
register_loss, get_loss, list_losses = LOSSES.register, LOSSES.get, LOSSES.names
