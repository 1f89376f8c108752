"""Stores dmg can read and write, behind one contract (:mod:`dmg.connectors.base`).

Backends load lazily, so a missing optional SDK only matters when a store of
that type is used, and then the error says what to install (fsspec's registry).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from dmg.connectors.base import Connector, Entry, StagedWriter, StoreSpec
from dmg.errors import BadInput

__all__ = ["Connector", "Entry", "StagedWriter", "StoreSpec", "connector_for", "known_types"]

_REGISTRY: dict[str, tuple[str, str, str]] = {
    # type: (module, class, pip package that provides its SDK)
    "file": ("dmg.connectors.file", "FileConnector", ""),
    "s3": ("dmg.connectors.s3", "S3Connector", "boto3"),
    "azureblob": ("dmg.connectors.azureblob", "AzureBlobConnector", "azure-storage-blob"),
    "sql": ("dmg.connectors.sql", "SqlConnector", "sqlalchemy"),
}

#: Types whose connector takes a ``credential`` keyword.
_TAKES_CREDENTIAL = frozenset({"s3", "azureblob", "sql"})


def known_types() -> list[str]:
    return sorted(_REGISTRY)


def connector_for(spec: StoreSpec, *, credential: Mapping[str, str] | None = None) -> Connector:
    """Build the connector for ``spec``; raises ``BadInput`` for an unknown type.

    ``credential`` (the store's secret from the site, see :mod:`dmg.credentials`)
    goes to the connector's keyword-only ``credential`` argument; ``BadInput`` if
    the store type takes none (``file``).
    """
    try:
        module_name, class_name, package = _REGISTRY[spec.type]
    except KeyError:
        raise BadInput(
            f"store {spec.name!r} has unknown type {spec.type!r}",
            hint=f"use one of: {', '.join(known_types())}",
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInput(
            f"store type {spec.type!r} needs an SDK that is not installed ({exc.name})",
            hint=f"pip install {package}" if package else "reinstall dmg",
        ) from exc
    cls: type[Connector] = getattr(module, class_name)
    if credential is None:
        return cls(spec)
    if spec.type not in _TAKES_CREDENTIAL:
        raise BadInput(f"store {spec.name!r}: a {spec.type} store takes no credential",
                       hint=f"remove [stores.{spec.name}] from the credentials file")
    return cls(spec, credential=credential)  # type: ignore[call-arg]
