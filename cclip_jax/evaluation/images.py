"""Evaluation images: decoding for the model, skip records, and classification sets (an image
folder per class, or a prepared TFDS dataset).

Images go through the training decode (`cclip_jax.data.transforms.decode_image`: RGB, bilinear
resize to a square without cropping, `x / 127.5 - 1`) so a model sees evaluation pixels as it
saw training pixels. A missing or undecodable image never stops an evaluation: it is skipped
and counted in a `Skipped` record, which the task runners report.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from cclip_jax.data.transforms import decode_image

Box = tuple[float, float, float, float]  # x, y, w, h in pixels (ARO's bbox_x/y/w/h)
ImageSource = str | bytes | np.ndarray  # a file path, encoded bytes, or uint8 [H, W, C] pixels

# Reasons recorded in `Skipped.examples`.
MISSING = "missing file"
UNDECODABLE = "cannot decode"
NO_CAPTION = "no caption"

# A handful of CLIP's ImageNet prompts: averaging a few templates (prompt ensembling) is steadier
# than one, and these read naturally for any class name.
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a close-up photo of a {}.",
    "a rendering of a {}.",
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


class FormatError(ValueError):
    """A benchmark file is not in its published format (message: file, item, field)."""


@dataclasses.dataclass
class Skipped:
    """Items left out of an evaluation: how many, and the first few with their reason.

    Attributes:
      count: number of items skipped.
      examples: up to `MAX_EXAMPLES` strings `"<name> (<reason>)"`, in the order met.
    """

    count: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    MAX_EXAMPLES = 5

    def add(self, name: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < self.MAX_EXAMPLES:
            self.examples.append(f"{name} ({reason})")

    def extend(self, other: Skipped) -> None:
        self.count += other.count
        room = self.MAX_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])

    def note(self) -> str:
        """One line for logs and reports, e.g. `2 skipped: a.jpg (missing file), ...`."""
        if not self.count:
            return "0 skipped"
        more = ", ..." if self.count > len(self.examples) else ""
        return f"{self.count} skipped: {', '.join(self.examples)}{more}"


def existing(paths: Sequence[str]) -> np.ndarray:
    """bool `[N]`: which files exist (cheap `os.path.exists`, so loaders know skips up front)."""
    return np.fromiter((os.path.exists(p) for p in paths), bool, len(paths))


def require_dir(path: str, what: str) -> None:
    """Fails with a message naming `path` when the folder is missing (a whole set absent is
    a wrong path, not a few skipped items)."""
    if not path:  # else the message would read "folder  does not exist"
        raise FileNotFoundError(f"{what} folder: no path given (empty)")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} folder {path} does not exist")


def _pixels(source: np.ndarray, name: str) -> Image.Image:
    pixels = np.asarray(source)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(
            f"{name}: pixels must be uint8 [H, W(, C)], got {pixels.dtype} {pixels.shape}"
        )
    return Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels)


def _encoded(source: ImageSource, box: Box | None, name: str) -> bytes:
    """The bytes `decode_image` reads: a file's own bytes, or PNG bytes of pixels / a crop."""
    data = None
    if isinstance(source, str):
        with open(source, "rb") as f:
            data = f.read()
    elif isinstance(source, bytes):
        data = source
    if data is not None and box is None:
        return data
    img = Image.open(io.BytesIO(data)) if data is not None else _pixels(source, name)
    if box is not None:
        x, y, w, h = box
        img = img.convert("RGB").crop((x, y, x + w, y + h))
    # PNG is lossless: the pixels decode_image reads back are exactly these (the curation
    # adapters store TFDS pixel arrays the same way, so training saw them like this too).
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def load_images(
    sources: Sequence[ImageSource],
    size: int,
    boxes: Sequence[Box] | None = None,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, Skipped]:
    """Reads images into the model's input.

    Args:
      sources: `[N]` file paths, encoded image bytes, or uint8 `[H, W, C]` pixel arrays.
      size: output side in pixels.
      boxes: optional `[N]` crop boxes `(x, y, w, h)` in source pixels, applied before resizing.
      names: optional `[N]` names for skip messages (default: the path, or `#<index>`).

    Returns:
      `images` float32 `[N, size, size, 3]` in [-1, 1] (zeros where not ok), `ok` bool `[N]`,
      and the `Skipped` record of the files that are missing or cannot be decoded.
    """
    if boxes is not None and len(boxes) != len(sources):
        raise ValueError(f"boxes must have one box per source: {len(boxes)} != {len(sources)}")
    images = np.zeros((len(sources), size, size, 3), np.float32)
    ok = np.zeros(len(sources), bool)
    skipped = Skipped()
    for i, src in enumerate(sources):
        name = names[i] if names is not None else src if isinstance(src, str) else f"#{i}"
        try:
            data = _encoded(src, None if boxes is None else boxes[i], name)
        except FileNotFoundError:
            skipped.add(name, MISSING)
            continue
        except (OSError, ValueError) as e:  # unreadable file, bad crop, corrupt bytes
            skipped.add(name, f"{UNDECODABLE}: {e}")
            continue
        try:
            images[i] = decode_image(data, size, name)
        except ValueError as e:
            skipped.add(name, f"{UNDECODABLE}: {e.__cause__ or e}")
            continue
        ok[i] = True
    return images, ok, skipped


# ------------------------------------------------------------------ classification sets


@dataclasses.dataclass
class ClassificationTask:
    """Zero-shot classification from class names and prompt templates.

    Attributes:
      image_paths: `[N]` files, or None when `images` holds the images (a TFDS split).
      labels: int `[N]`; classnames: `[C]`; templates: prompts with one `{}`.
      images: `[N]` random-access sequence of encoded bytes or uint8 `[H, W, C]` arrays, read
        lazily in chunks by the runner.
    """

    name: str
    image_paths: list[str] | None
    labels: np.ndarray
    classnames: list[str]
    templates: list[str]
    skipped: Skipped = dataclasses.field(default_factory=Skipped)
    images: Sequence[ImageSource] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if (self.image_paths is None) == (self.images is None):
            raise ValueError("ClassificationTask needs exactly one of image_paths and images")

    @property
    def sources(self) -> Sequence[ImageSource]:
        return self.image_paths if self.image_paths is not None else self.images

    def __len__(self) -> int:
        return len(self.labels)


def load_image_folder(
    root: str, templates: Sequence[str] | None = None, name: str | None = None
) -> ClassificationTask:
    """Zero-shot classification over `root/<class name>/*.{jpg,png,...}`.

    Class names are the folder names, sorted, with underscores read as spaces; templates
    default to `DEFAULT_TEMPLATES`.
    """
    require_dir(root, "class")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for label, folder in enumerate(classes):
        files = sorted(
            f
            for f in os.listdir(os.path.join(root, folder))
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths.extend(os.path.join(root, folder, f) for f in files)
        labels.extend([label] * len(files))
    if not paths:
        raise FormatError(
            f"{root}: no images in class folders (expected "
            f"{root}/<class name>/*{IMAGE_EXTENSIONS[0]})"
        )
    return ClassificationTask(
        name or os.path.basename(os.path.normpath(root)),
        paths,
        np.asarray(labels, np.int64),
        [c.replace("_", " ") for c in classes],
        list(templates or DEFAULT_TEMPLATES),
        source=root,
    )


class _TfdsImages(Sequence):
    """Lazy `[N]` images of a TFDS data source: encoded bytes (Image features are read with
    decoding skipped, so they decode once, in `load_images`) or uint8 arrays (Tensor features)."""

    def __init__(self, source: Sequence[dict[str, Any]], key: str):
        self._source, self._key = source, key

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> ImageSource:
        value = self._source[index][self._key]
        return value if isinstance(value, bytes) else np.asarray(value)


def load_tfds_classification(
    data_dir: str,
    split: str,
    image_key: str = "image",
    label_key: str = "label",
    templates: Sequence[str] | None = None,
    classnames: Sequence[str] | None = None,
    name: str | None = None,
) -> ClassificationTask:
    """Zero-shot classification over a prepared TFDS dataset (no TensorFlow needed).

    Args:
      data_dir: the builder folder holding `dataset_info.json` (`<data_dir>/<name>/<version>`).
      split: TFDS split, slicing allowed (`"test[:1000]"`).
      image_key, label_key: an Image or uint8 Tensor feature, and a ClassLabel feature.
      templates: prompts (default `DEFAULT_TEMPLATES`).
      classnames: override the ClassLabel names (e.g. readable names for WordNet ids); by
        default the ClassLabel names with underscores read as spaces.
    """
    import tensorflow_datasets as tfds  # Imported lazily: heavy, and only this loader needs it.

    info_path = os.path.join(data_dir, "dataset_info.json")
    if not os.path.isfile(info_path):
        raise FileNotFoundError(
            f"{info_path} does not exist: {data_dir} is not a prepared TFDS dataset folder"
        )
    builder = tfds.builder_from_directory(data_dir)
    features = builder.info.features
    for key in (image_key, label_key):
        if key not in features:
            raise FormatError(f"{info_path}: no feature {key!r} (features: {sorted(features)})")
    label_feature = features[label_key]
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise FormatError(
            f"{info_path}: feature {label_key!r} is a "
            f"{type(label_feature).__name__}, expected a ClassLabel"
        )
    decoders = (
        {image_key: tfds.decode.SkipDecoding()}
        if isinstance(features[image_key], tfds.features.Image)
        else None
    )
    source = builder.as_data_source(split, decoders=decoders)
    labels = np.fromiter((source[i][label_key] for i in range(len(source))), np.int64, len(source))
    names = (
        list(classnames)
        if classnames is not None
        else [c.replace("_", " ") for c in label_feature.names]
    )
    if len(names) != label_feature.num_classes:
        raise ValueError(
            f"classnames has {len(names)} names, the dataset {label_feature.num_classes} classes"
        )
    return ClassificationTask(
        name or f"{builder.info.name}_{split}",
        None,
        labels,
        names,
        list(templates or DEFAULT_TEMPLATES),
        images=_TfdsImages(source, image_key),
        source=data_dir,
    )
