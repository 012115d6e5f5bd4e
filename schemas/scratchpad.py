"""What the shared scratchpad holds, as read by the CLI and the API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from schemas.params import ParameterPoint


class Insight(BaseModel):
    """A recurring insight and how many episodes stated it."""

    model_config = ConfigDict(frozen=True)

    text: str
    count: int


class ChangeStat(BaseModel):
    """How often a ``param:direction`` was proposed, and with what mean confidence."""

    model_config = ConfigDict(frozen=True)

    param: str
    direction: str
    count: int
    mean_confidence: float


class ScratchpadSummary(BaseModel):
    """Aggregates of everything merged so far."""

    model_config = ConfigDict(frozen=True)

    episodes: int = 0
    unparsable: int = 0
    proposals: int = 0
    dropped_proposals: int = 0
    pending_distill: int = 0
    mean_confidence: float = 0.0
    params: ParameterPoint = ParameterPoint()
    changes: list[ChangeStat] = []
    interactions: list[Insight] = []
    structural: list[Insight] = []
    signatures: list[Insight] = []
    wisdom_version: int = 0
    last_merged_at: float | None = None

    def to_markdown(self) -> str:
        """The scratchpad as the seed's markdown document, from aggregates."""
        lines = [
            "# Reasoning Optimization Scratchpad", "", "## Summary",
            f"- Episodes: {self.episodes} ({self.unparsable} unparsable)",
            f"- Proposals: {self.proposals} (dropped as invalid: {self.dropped_proposals})",
            f"- Mean confidence: {self.mean_confidence:.2f}", "",
            "## Current Parameters",
            *[f"- {k}: {v:g}" for k, v in self.params.as_floats().items()], "",
            "## Proposed Changes (count, mean confidence)",
            *[f"- {c.param}: {c.direction} ×{c.count} ({c.mean_confidence:.2f})"
              for c in self.changes], "",
        ]
        for title, items in (
            ("Failure Patterns", self.signatures),
            ("Parameter Interactions", self.interactions),
            ("Structural Proposals", self.structural),
        ):
            lines += [f"## {title}", *[f"- ({i.count}×) {i.text}" for i in items], ""]
        return "\n".join(lines)
