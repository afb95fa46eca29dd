"""Which images each round of each stage gets: a deterministic split of the source's entries.

The pool (the source's entries in its own order, quarantined-at-listing entries included so
they are reported) is cut into consecutive slices: stage 1's rounds, then stage 2's, then
stage 3 takes the rest (or ``automatic_images`` of it). The same source and settings always
give the same plan — the basis of resuming.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.data.sources import SourceEntry

STAGE_NAMES = {1: "assisted_manual", 2: "semi_automatic", 3: "fully_automatic"}


@dataclass(frozen=True)
class StagePlan:
    """Settings of one stage: ``rounds`` × ``images_per_round`` (stage 3: one round)."""

    number: int
    rounds: int
    images_per_round: int | None  # None: all remaining images (stage 3)
    retrain: bool

    def __post_init__(self) -> None:
        if self.number not in STAGE_NAMES:
            raise ValueError(f"stage number must be 1, 2 or 3, got {self.number}")
        if self.rounds < 0:
            raise ValueError(f"stage {self.number}: rounds must be >= 0, got {self.rounds}")
        if self.images_per_round is not None and self.images_per_round < 1:
            raise ValueError(
                f"stage {self.number}: images_per_round must be >= 1, got {self.images_per_round}"
            )

    @property
    def name(self) -> str:
        return STAGE_NAMES[self.number]


@dataclass(frozen=True)
class RoundPlan:
    """One round: its stage, index, images and whether the model is retrained after it."""

    stage: int
    round: int
    entries: tuple[SourceEntry, ...]
    retrain: bool

    @property
    def stage_name(self) -> str:
        return STAGE_NAMES[self.stage]

    @property
    def prefix(self) -> str:
        """Shard / checkpoint prefix, e.g. ``stage1-r02``."""
        return f"stage{self.stage}-r{self.round:02d}"

    @property
    def keys(self) -> list[str]:
        return [e.key for e in self.entries]


def plan_rounds(entries: list[SourceEntry], stages: list[StagePlan]) -> list[RoundPlan]:
    """Cut ``entries`` into rounds, stage by stage; a stage short of images gets what is left.

    Rounds that would get no image are left out.
    """
    rounds: list[RoundPlan] = []
    position = 0
    for stage in sorted(stages, key=lambda s: s.number):
        for index in range(stage.rounds):
            if stage.images_per_round is None:
                stop = len(entries)
            else:
                stop = min(position + stage.images_per_round, len(entries))
            chunk = tuple(entries[position:stop])
            position = stop
            if chunk:
                rounds.append(RoundPlan(stage.number, index, chunk, stage.retrain))
    return rounds
