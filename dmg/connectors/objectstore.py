"""Paths of an object store: a location ``<scheme>://<container>/<prefix>`` and the
keys of a store's objects under that prefix (shared by ``s3`` and ``azureblob``).

A store-relative path ``a/b.bin`` is the key ``<prefix>/a/b.bin`` (``a/b.bin`` with
no prefix); paths are cleaned by :func:`~dmg.connectors._support.clean_path`, so a
``..`` never reaches the service.
"""

from __future__ import annotations

from typing import ClassVar

from dmg.connectors._support import clean_path
from dmg.connectors.base import Connector, StoreSpec
from dmg.errors import BadInput


def parse_location(location: str, *, scheme: str, container: str, store: str) -> tuple[str, str]:
    """``<scheme>://name/prefix`` → ``("name", "prefix")``; ``BadInput`` otherwise.
    ``container`` is the service's word for it ("bucket", "container")."""
    example = f"write it as {scheme}://{container}/optional/prefix"
    if not location.startswith(f"{scheme}://"):
        raise BadInput(f"store {store!r}: location {location!r} is not an {scheme}:// URL", hint=example)
    name, _, prefix = location[len(scheme) + 3:].partition("/")
    if not name:
        raise BadInput(f"store {store!r}: location {location!r} names no {container}", hint=example)
    return name, clean_path(prefix, store=store)


class ObjectStore(Connector):
    """A connector whose objects are keys under a prefix of one container."""

    #: The location's URL scheme and the service's word for a container.
    scheme: ClassVar[str] = ""
    container_word: ClassVar[str] = "container"

    def __init__(self, spec: StoreSpec) -> None:
        super().__init__(spec)
        self.container_name, self.prefix = parse_location(
            spec.location, scheme=self.scheme, container=self.container_word, store=spec.name)

    def _key(self, path: str) -> str:
        """The key of a store-relative ``path`` (the prefix itself for the root)."""
        rel = clean_path(path, store=self.spec.name)
        return f"{self.prefix}/{rel}" if self.prefix and rel else (self.prefix or rel)

    def _relative(self, key: str) -> str:
        """The store-relative path of a key under the prefix."""
        return key[len(self.prefix) + 1:] if self.prefix else key

    def _what(self, verb: str, path: str) -> str:
        return f"cannot {verb} {path!r} in store {self.spec.name!r}"

    def _writable(self, path: str) -> None:
        """``BadInput`` for the store's root, which is no object."""
        if not clean_path(path, store=self.spec.name):
            raise BadInput(f"cannot write to the root of store {self.spec.name!r}")
