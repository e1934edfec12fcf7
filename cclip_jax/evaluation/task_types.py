"""The benchmark task objects: what the loaders (`datasets`, `synthetic`) build and the task
runners (`tasks`, `retrieval`) consume.

Plain data, no file reading and no model: image paths, captions and ids, plus the `Skipped`
record of what the loader already left out. The classification task lives with the image code
(`images.ClassificationTask`): its images may be TFDS records rather than files.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cclip_jax.evaluation.images import Box, Skipped


@dataclasses.dataclass
class PairTask:
    """One image per item, a true and a false caption (SugarCrepe, ARO).

    Attributes:
      name: task name used in reports.
      image_paths, positives, negatives, ids: `[N]` each.
      boxes: optional `[N]` crop boxes `(x, y, w, h)` (ARO crops to the relation's box).
      skipped: items left out because their image is missing.
      groups: optional `[N]` group of each item (ARO relation / attribute pair), for the
        macro accuracy ARO reports.
      min_group_size: groups with fewer items are left out of the macro accuracy.
      source: the file the items come from, named in reports.
    """

    name: str
    image_paths: list[str]
    positives: list[str]
    negatives: list[str]
    ids: list[str]
    boxes: list[Box] | None = None
    skipped: Skipped = dataclasses.field(default_factory=Skipped)
    groups: list[str] | None = None
    min_group_size: int = 1
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass
class GroupTask:
    """Winoground-style items: two images, two captions, caption `i` is true of image `i`.

    Attributes:
      image_paths, captions: `[N]` pairs; ids: `[N]`; tags: optional `[N]` item tags.
    """

    name: str
    image_paths: list[tuple[str, str]]
    captions: list[tuple[str, str]]
    ids: list[str]
    skipped: Skipped = dataclasses.field(default_factory=Skipped)
    tags: list[str] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass
class RetrievalTask:
    """Image <-> text retrieval with several captions per image.

    Attributes:
      image_paths, ids: `[N_img]`; captions: `[N_txt]`; caption_image: int `[N_txt]`, the
        index of each caption's image (every image has at least one caption).
    """

    name: str
    image_paths: list[str]
    captions: list[str]
    caption_image: np.ndarray
    ids: list[str]
    skipped: Skipped = dataclasses.field(default_factory=Skipped)
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)
