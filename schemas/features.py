"""What a repository looks like, as the presets' conditions read it.

``ranker.features.repository_features`` computes these from a repository's cached index;
ranking services that cannot share their repository send them to ``POST /v1/recommend``.
Everything that comes from history is measured on the tuning side only (the oldest 70 %
of the window), so a preset learned there never saw the held-out commits through them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
Language = Annotated[str, StringConstraints(min_length=1, max_length=40)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]

# The numeric features a preset's condition may bound, with what each means.
NumericFeature = Literal["file_count", "mean_depth", "history_commits", "co_change_density",
                         "vendored_share"]
FEATURE_NOTES: dict[str, str] = {
    "file_count": "files in HEAD's tree",
    "mean_depth": "mean directory depth ('/' per path) of the source files",
    "history_commits": "first-parent commits on the tuning side of the window",
    "co_change_density": "share of a tuning commit's other changed files that had co-changed "
                         "with the seed before (Jaccard >= 0.3)",
    "vendored_share": "share of the source files under vendor directories",
}
# Counts compare on a log scale; the rest on their own.
LOG_FEATURES = frozenset({"file_count", "history_commits"})


class RepoFeatures(BaseModel):
    """A repository's shape and history, as far as ranking parameters care."""

    model_config = _STRICT

    languages: Annotated[dict[Language, Share], Field(max_length=50)] = Field(
        default_factory=dict, description="share of the source files per grammar language")
    file_count: Annotated[int, Field(ge=0)] = Field(description=FEATURE_NOTES["file_count"])
    mean_depth: Annotated[float, Field(ge=0.0, le=1000.0)] = Field(
        description=FEATURE_NOTES["mean_depth"])
    history_commits: Annotated[int, Field(ge=0)] = Field(
        description=FEATURE_NOTES["history_commits"])
    co_change_density: Share = Field(description=FEATURE_NOTES["co_change_density"])
    vendored_share: Share = Field(description=FEATURE_NOTES["vendored_share"])

    @property
    def dominant_language(self) -> str | None:
        """The language with the largest share (ties by name), None without sources."""
        if not self.languages:
            return None
        return min(self.languages, key=lambda k: (-self.languages[k], k))

    def value(self, feature: NumericFeature) -> float:
        """One numeric feature's value."""
        return float(getattr(self, feature))

    def describe(self) -> str:
        """One line: ``python 100 %; 42 files; depth 1.9; 300 commits; co-change 0.41; …``."""
        langs = ", ".join(f"{k} {v:.0%}" for k, v in
                          sorted(self.languages.items(), key=lambda kv: (-kv[1], kv[0])))
        return (f"{langs or 'no source files'}; {self.file_count} files; mean depth "
                f"{self.mean_depth:.2f}; {self.history_commits} tuning-side commits; co-change "
                f"density {self.co_change_density:.2f}; vendored {self.vendored_share:.0%}")
