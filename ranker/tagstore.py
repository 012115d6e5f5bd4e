"""Tags of every blob the index has parsed, keyed by blob id, with names interned to ints."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ranker.tags import Tags

IntArray = npt.NDArray[np.int32]


@dataclass(frozen=True)
class BlobTags:
    """One blob's definitions (unique name ids) and references (name ids with counts)."""

    definitions: IntArray
    references: IntArray
    counts: IntArray


@dataclass
class TagStore:
    """Interned names and per-blob tags; ``None`` marks a skipped (binary or oversized) blob."""

    names: list[str] = field(default_factory=list)
    name_ids: dict[str, int] = field(default_factory=dict)
    lower_ids: list[int] = field(default_factory=list)
    lower_names: dict[str, int] = field(default_factory=dict)
    blobs: dict[str, BlobTags | None] = field(default_factory=dict)

    def intern(self, name: str) -> int:
        """The id of ``name``, adding it (and its lower-case form) when new."""
        found = self.name_ids.get(name)
        if found is not None:
            return found
        self.name_ids[name] = len(self.names)
        self.names.append(name)
        self.lower_ids.append(self.lower_names.setdefault(name.lower(), len(self.lower_names)))
        return len(self.names) - 1

    def add(self, blob: str, tags: Tags | None) -> None:
        """Store one blob's tags (None: skipped)."""
        if tags is None:
            self.blobs[blob] = None
            return
        ref_names = [name for name, _ in tags.references]
        self.blobs[blob] = BlobTags(
            np.array([self.intern(n) for n in tags.definitions], dtype=np.int32),
            np.array([self.intern(n) for n in ref_names], dtype=np.int32),
            np.array([count for _, count in tags.references], dtype=np.int32),
        )

    def lower_id_array(self) -> IntArray:
        """Lower-case name id of each name id."""
        return np.asarray(self.lower_ids, dtype=np.int32)
