"""Predicting with a run's checkpoint: what ``portaconv predict`` does.

:func:`predict_files` rebuilds the model a checkpoint holds (as ``portaconv evaluate``
does), reads each file into inputs of the model's shape (:func:`read_inputs`), applies the
run's stored normalisation and returns the most probable classes of every input.

What a file may hold, for a model of input shape (C, H, W) (an image model):

- an image Pillow reads (PNG, JPEG, ...; its first frame), turned upright by its EXIF
  orientation, scaled to [0, 1] (8-bit pixels / 255, 16-bit / 65535), resized to H x W
  (bilinear, the aspect ratio not kept). A grey model (C = 1) takes grey images, and colour
  ones whose three channels are equal; an RGB model (C = 3) takes colour images (alpha and
  palettes resolved to RGB) and refuses grey ones. Other channel counts take ``.npy`` only.
- a ``.npy`` array (read without pickle) of one image, (C, H, W) or (H, W, C), or of
  several, (N, C, H, W) or (N, H, W, C); grey models also take (H, W) and (N, H, W). It is
  not resized: H and W must be the model's. Floating values are taken as the dataset's own
  scale (the [0, 1] of :func:`~portaconv.data.load_dataset`), uint8 ones as pixels 0..255.

A model of input shape (F,) (Iris) takes ``.npy`` arrays of numbers only: (F,) or (N, F),
in the dataset's units. Anything else (a wrong size or channel count, a file neither a
``.npy`` array nor an image, values that are not finite) is a ``ValueError`` that names
the file, what it holds and what the model takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..backend import to_backend, to_numpy
from ..checks import check_int
from ..data import normalize
from .checkpoint_checks import check_run_data
from .evaluation import model_of_run
from .prepare import choose_backend
from .rundir import checkpoint_errors, run_state

WHO = "portaconv predict"
_NPY_MAGIC = b"\x93NUMPY"

#: Each dataset's input shape, checked against a checkpoint's metadata before its model is
#: built (a damaged entry asking for 10^10 pixels would be a memory error, not a message);
#: ``portaconv evaluate`` checks the same against the data it loads, which predict never reads.
INPUT_SHAPES = {
    "digits": (1, 8, 8),
    "iris": (4,),
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}

# ------------------------------------------------------------------------------ the command


def predict_files(
    checkpoint: str | Path,
    files: list[str | Path],
    top: int = 1,
    backend: str | None = None,
    device: str | None = None,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """The ``top`` most probable classes of every input in ``files``, by the checkpoint's model.

    Returns one dict per input, in the order of the files and of the inputs inside each:
    ``file``, ``index`` (the input's place in its file: 0 for an image), and ``classes``, a
    list of ``top`` triples (class index, class name, probability), most probable first.
    Every file is read and checked before the model runs."""
    top = check_int(WHO, "--top", top)
    batch_size = check_int(WHO, "--batch-size", batch_size)
    if not files:
        raise ValueError(f"{WHO}: give at least one FILE (an image or a .npy array)")
    state = run_state(Path(checkpoint))
    meta = state["meta"]
    dataset, names = meta["config"]["dataset"], list(meta["classes"])
    with checkpoint_errors(checkpoint):
        check_run_data(meta, INPUT_SHAPES.get(dataset, meta["model"]["input_shape"]), len(names))
    if top > len(names):
        raise ValueError(f"{WHO}: --top {top} is more than the model's {len(names)} classes")
    input_shape = tuple(meta["model"]["input_shape"])
    inputs = [read_inputs(path, input_shape) for path in files]
    norm = meta["normalisation"]
    X = normalize(np.concatenate(inputs), norm["mean"], norm["std"])
    choose_backend(backend, device)
    model = model_of_run(checkpoint, state)
    probabilities = np.asarray(to_numpy(model.predict(to_backend(X), batch_size)))
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
    rows = []
    for path, array in zip(files, inputs):
        for index in range(len(array)):
            row = len(rows)
            classes = [(int(k), names[k], float(probabilities[row, k])) for k in best[row]]
            rows.append({"file": str(path), "index": index, "classes": classes})
    return rows


def format_row(row: dict[str, Any]) -> str:
    """``digit.png  0  class 7 (0.983)``; a class whose name is not its number shows both
    (``class 9 Ankle boot (0.912)``); several classes are separated by commas."""
    shown = []
    for k, name, probability in row["classes"]:
        label = f"class {k}" if name == str(k) else f"class {k} {name}"
        shown.append(f"{label} ({probability:.3f})")
    return f"{row['file']}  {row['index']}  {', '.join(shown)}"


# ------------------------------------------------------------------------------ the inputs


def read_inputs(path: str | Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """The inputs a file holds as float32 (n, *input_shape), in the dataset's own scale
    (before normalisation); see the module's docstring for what each model takes."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{WHO}: {path} is a directory; give image or .npy files")
    if not path.is_file():
        raise ValueError(f"{WHO}: {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if magic == _NPY_MAGIC:
        return _from_npy(path, input_shape)
    return _from_image(path, input_shape)


def _model_input(input_shape: tuple[int, ...]) -> str:
    if len(input_shape) == 1:
        return f"{input_shape[0]} features"
    channels, height, width = input_shape
    return f"{height}x{width} images with {channels} channel{'s' * (channels != 1)}"


def _from_npy(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{WHO}: {path} is not a readable .npy array ({exc})") from exc
    shape = tuple(array.shape)
    image_model = len(input_shape) == 3
    scaled_pixels = image_model and array.dtype == np.uint8
    numbers = np.issubdtype(array.dtype, np.floating) or (
        not image_model and np.issubdtype(array.dtype, np.integer)
    )
    if not (scaled_pixels or numbers) or array.dtype == np.bool_:
        expected = (
            "floating values in the dataset's scale ([0, 1]) or uint8 pixels (0..255)"
            if image_model
            else "numbers in the dataset's units"
        )
        raise ValueError(f"{WHO}: {path} holds {array.dtype} values; expected {expected}")
    batch = _as_batch(array, input_shape)
    if batch is None:
        raise ValueError(
            f"{WHO}: {path} holds an array of shape {shape}, but the model takes "
            f"{_model_input(input_shape)}: {_layouts(input_shape)}"
        )
    if batch.shape[0] == 0:
        raise ValueError(f"{WHO}: {path} holds no inputs (shape {shape})")
    batch = batch.astype(np.float32) / 255 if scaled_pixels else batch.astype(np.float32)
    if not np.all(np.isfinite(batch)):
        raise ValueError(f"{WHO}: {path} holds values that are not finite (NaN or infinity)")
    return batch


def _layouts(input_shape: tuple[int, ...]) -> str:
    """The array shapes a model takes, e.g. ``(N, 1, 8, 8), (1, 8, 8), (N, 8, 8, 1), ...``."""
    if len(input_shape) == 1:
        return f"({input_shape[0]},) or (N, {input_shape[0]})"
    c, h, w = input_shape
    shapes = [(c, h, w), (h, w, c)] + ([(h, w)] if c == 1 else [])
    text = [str(("N", *s)).replace("'", "") for s in shapes] + [str(s) for s in shapes]
    return ", ".join(text) + " (not resized)"


def _as_batch(array: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray | None:
    """``array`` as (N, *input_shape), or None when it is none of the layouts taken."""
    shape = tuple(array.shape)
    if len(input_shape) == 1:
        if shape == input_shape:
            return array[np.newaxis]
        return array if shape[1:] == input_shape and len(shape) == 2 else None
    c, h, w = input_shape
    one_image = {(c, h, w): (0, 1, 2), (h, w, c): (2, 0, 1)}  # the axes that make it CHW
    if shape in one_image:  # (C, H, W) first: a grey (1, H, W) is one image either way
        return np.transpose(array, one_image[shape])[np.newaxis]
    if len(shape) == 4 and shape[1:] in one_image:
        return np.transpose(array, (0, *(1 + a for a in one_image[shape[1:]])))
    if c == 1 and shape == (h, w):
        return array.reshape(1, 1, h, w)
    if c == 1 and len(shape) == 3 and shape[1:] == (h, w):
        return array.reshape(-1, 1, h, w)
    return None


def _from_image(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ValueError(
            f"{WHO}: {path} is not a .npy array, and reading it as an image needs Pillow: "
            "pip install 'portaconv[images]'"
        ) from None
    if len(input_shape) != 3:
        raise ValueError(
            f"{WHO}: {path} is not a .npy array, and the model takes {input_shape[0]} "
            f"features, not images: give a .npy array of shape {_layouts(input_shape)}"
        )
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            pixels = _pixels(image, path, input_shape)
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        # Pillow's UnidentifiedImageError is an OSError; a truncated file, an OSError or an
        # EOFError as it decodes; a bad header, for some formats, a SyntaxError
        raise ValueError(
            f"{WHO}: {path} is neither a .npy array nor an image Pillow can read ({exc})"
        ) from exc
    _, height, width = input_shape
    if pixels.shape[1:] != (height, width):
        # each channel as a 32-bit float image: one resampling for 8- and 16-bit pixels
        resized = [
            np.asarray(Image.fromarray(channel).resize((width, height), Image.Resampling.BILINEAR))
            for channel in pixels
        ]
        pixels = np.stack(resized)
    return pixels[np.newaxis].astype(np.float32)


_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N")


def _pixels(image: Any, path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """The image's pixels as float32 (C, height, width) in [0, 1], for a model of input
    shape (C, H, W)."""
    channels = input_shape[0]
    if image.mode == "F":  # 32-bit float pixels have no fixed scale
        raise ValueError(
            f"{WHO}: {path} is a 32-bit floating-point image, whose scale is unknown; save "
            "it as an 8- or 16-bit image, or as a .npy array in the dataset's scale"
        )
    mode = image.mode  # as the file has it, for the messages
    grey = mode in _GREY_MODES
    if grey:
        if image.mode in ("1", "LA", "La"):
            image = image.convert("L")  # bilevel to 0/255; alpha dropped
        values = np.asarray(image)
        # 16-bit images open as "I;16" or, in older Pillow and some formats, as "I"
        full_scale = 255 if values.dtype == np.uint8 else 65535
        if values.max(initial=0) > full_scale or values.min(initial=0) < 0:
            raise ValueError(
                f"{WHO}: {path} is a 32-bit integer image with values outside 0..65535; "
                "save it as an 8- or 16-bit image, or as a .npy array"
            )
        pixels = (values.astype(np.float32) / full_scale)[np.newaxis]
    else:
        rgb = np.asarray(image.convert("RGB"))  # palette, alpha, CMYK, YCbCr: to RGB
        pixels = np.moveaxis(rgb, -1, 0).astype(np.float32) / 255
    if channels == 1 and not grey:
        if not (np.array_equal(pixels[0], pixels[1]) and np.array_equal(pixels[0], pixels[2])):
            raise ValueError(
                f"{WHO}: {path} is a colour image ({mode}), but the model takes grey "
                "images (1 channel); convert it to greyscale first"
            )
        pixels = pixels[:1]
    elif channels == 3 and grey:
        raise ValueError(
            f"{WHO}: {path} is a grey image ({mode}), but the model takes colour "
            "images (3 channels, RGB)"
        )
    elif channels not in (1, 3):
        raise ValueError(
            f"{WHO}: {path} is an image, but the model takes {channels} channels; images "
            f"give 1 (grey) or 3 (RGB): give a .npy array of shape {_layouts(input_shape)}"
        )
    return pixels
