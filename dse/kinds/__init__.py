"""Study kinds as plug-ins: what a study file's ``space`` describes and everything that
differs between kinds (``dse.kinds.base``). The built-in kinds, registered by ``dse`` when it
is imported: ``appaxo36`` (``dse.kinds.appaxo``), ``xpat`` (``dse.kinds.xpat``), ``layerwise``
(``dse.kinds.layerwise``) and ``firmware`` (``dse.kinds.firmware``). A new kind is a
``StudyKind`` subclass with its ``StudySettings`` subclass, and ``register(MyKind())``.

This package's ``__init__`` imports no kind: they import the study machinery that resolves
kinds through the registry.
"""

from dse.kinds.base import StudyKind, kind_named, kinds, register, resolve, unregister

__all__ = ["StudyKind", "kind_named", "kinds", "register", "resolve", "unregister"]
