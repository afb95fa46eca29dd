"""Request bodies of the annotation API, with their bounds (checked before any work is done).

Coordinates are original-image pixels: points ``[x, y]``, boxes XYXY. Masks travel as COCO
compressed RLE ``{"size": [h, w], "counts": str}``; the server checks the size against the
image and decodes the runs strictly.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_POINTS = 64  # clicks in one prompt
MAX_COUNTS_CHARS = 2_000_000  # one RLE string (the body limit applies as well)
MAX_SECONDS = 86_400.0

AnnotatorId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
Handle = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Coordinate = Annotated[float, Field(ge=-1e6, le=1e6)]
Seconds = Annotated[float, Field(ge=0.0, lt=MAX_SECONDS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ProposalRef(_Strict):
    """Mask ``index`` of the proposal returned under ``handle`` by an earlier decode."""

    handle: Handle
    index: int = Field(ge=0, le=2)


class RLE(_Strict):
    size: tuple[Annotated[int, Field(ge=1, le=100_000)], Annotated[int, Field(ge=1, le=100_000)]]
    counts: str = Field(min_length=1, max_length=MAX_COUNTS_CHARS)


class ClaimRequest(_Strict):
    annotator: AnnotatorId


class DecodeRequest(_Strict):
    """A prompt: points (+ labels 1/0), an optional XYXY box, an optional earlier mask."""

    points: list[tuple[Coordinate, Coordinate]] = Field(default_factory=list, max_length=MAX_POINTS)
    labels: list[Annotated[int, Field(ge=0, le=1)]] = Field(
        default_factory=list, max_length=MAX_POINTS
    )
    box: tuple[Coordinate, Coordinate, Coordinate, Coordinate] | None = None
    mask_input: ProposalRef | None = None
    multimask: bool = True

    @model_validator(mode="after")
    def _check(self) -> DecodeRequest:
        if len(self.points) != len(self.labels):
            raise ValueError(f"{len(self.points)} points but {len(self.labels)} labels")
        if not self.points and self.box is None:
            raise ValueError("a prompt needs at least one point or a box")
        if self.box is not None and not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            raise ValueError(f"box must be XYXY with x0 < x1 and y0 < y1, got {self.box}")
        return self


class AcceptRequest(_Strict):
    """An accepted mask and what it cost (clicks, brush strokes, seconds on this mask)."""

    annotator: AnnotatorId
    mask: RLE
    proposal: ProposalRef | None = None  # the model mask it started from, if any
    replaces: int | None = Field(default=None, ge=0)  # id of an edited saved mask
    clicks: int = Field(default=0, ge=0, le=10_000)
    brush_strokes: int = Field(default=0, ge=0, le=100_000)
    seconds: Seconds = 0.0
    image_seconds: Seconds = 0.0  # time on the image since the last report
    point_coords: list[tuple[Coordinate, Coordinate]] = Field(
        default_factory=list, max_length=MAX_POINTS
    )
    granularity: Literal["whole", "part", "subpart"] = "whole"
    parent_id: int | None = Field(default=None, ge=0)  # id of the saved mask it is part of


class DeleteRequest(_Strict):
    annotator: AnnotatorId
    mask_id: int = Field(ge=0)
    image_seconds: Seconds = 0.0


class UndoRequest(_Strict):
    annotator: AnnotatorId


class FinishRequest(_Strict):
    annotator: AnnotatorId
    image_seconds: Seconds = 0.0
