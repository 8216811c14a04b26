"""CIFAR-10 loading and the seed's preprocessing.

Sources, in the order `load_cifar10` tries them:
  * an image-folder tree `<root>/{train,test}/<class>/*.jpg|png` (e.g. ../shared/datasets/cifar10-jpeg),
  * the official CIFAR-10 python batches (`data_batch_1..5`, `test_batch`),
  * Keras' downloader (only when online).
Decoded arrays are cached as .npz so a tree of 60,000 JPEGs is decoded once; the cache key
includes every file's path, size and modification time, so a changed tree is decoded again.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the CIFAR-10 training set (RGB, on 0..1 pixels).
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}


class DatasetError(RuntimeError):
    """A data set path that does not hold what it should."""


def cache_dir() -> Path:
    root = os.environ.get("MOBILENET_ACCEL_CACHE") or Path.home() / ".cache" / "mobilenet-accel"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def normalize(images_u8: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 standardized per channel (the seed's preprocessing)."""
    return (images_u8.astype(np.float32) / 255.0 - MEAN) / STD


def center_crop(images: np.ndarray, size: int, width: int | None = None) -> np.ndarray:
    """The central size x size (or size x width) window of NHWC images."""
    width = size if width is None else width
    h, w = images.shape[1:3]
    if size > h or width > w:
        raise ValueError(f"crop {size}x{width} larger than image {h}x{w}")
    top, left = (h - size) // 2, (w - width) // 2
    return images[:, top:top + size, left:left + width]


def _decode(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if arr.shape != (32, 32, 3):
        raise DatasetError(f"{path}: expected a 32x32 RGB image, got {arr.shape}")
    return arr


def load_image_folder(split_dir: Path, limit_per_class: int | None = None,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode `<split_dir>/<class>/*` into (uint8 NHWC, int64 labels) in Keras' class order."""
    split_dir = Path(split_dir)
    files, labels = [], []
    for label, cls in enumerate(CLASSES):
        cls_dir = split_dir / cls
        if not cls_dir.is_dir():
            raise DatasetError(f"{split_dir}: missing class folder '{cls}'")
        names = sorted(p for p in cls_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not names:
            raise DatasetError(f"{cls_dir}: no images")
        names = names[:limit_per_class] if limit_per_class else names
        files += names
        labels += [label] * len(names)
    from tqdm import tqdm
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        images = list(tqdm(pool.map(_decode, files, chunksize=256), total=len(files),
                           desc=f"decode {split_dir.name}", unit="img", disable=not progress))
    return np.stack(images), np.asarray(labels, np.int64)


def load_python_batches(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the official `cifar-10-batches-py` files."""
    parts = [read_python_batch(Path(root) / f"data_batch_{i}") for i in range(1, 6)]
    return {"train": (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])),
            "test": read_python_batch(Path(root) / "test_batch")}


def read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC images, int64 labels) of one CIFAR-10 python batch file, checked."""
    d = _unpickle(path)
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DatasetError(f"{path}: not a CIFAR-10 python batch (no 'data' and 'labels')")
    x = np.asarray(d[b"data"])
    y = np.asarray(d[b"labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) == 0:
        raise DatasetError(f"{path}: 'data' must be uint8 rows of 3072 pixels, got "
                           f"{x.dtype} {x.shape}")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) \
            or np.any((y < 0) | (y >= len(CLASSES))):
        raise DatasetError(f"{path}: 'labels' must be {len(x)} class numbers 0..9")
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y.astype(np.int64)


def _unpickle(path: Path):
    if path.is_file() and path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file, not a CIFAR-10 python batch")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or e})") from e
    except Exception as e:  # noqa: BLE001 - unpickling arbitrary bytes raises anything
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__})") from e


def _is_image_folder(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def folder_signature(root: Path) -> str:
    """A key for the decoded-array cache: the folder's path and every file's relative path,
    size and modification time, so adding, removing, replacing or editing an image gives a
    new key (a stale cache used to survive changes to the data set)."""
    h = hashlib.sha1(str(root.resolve()).encode())
    for split in ("train", "test"):
        for dirpath, dirnames, filenames in os.walk(root / split):
            dirnames.sort()
            for name in sorted(filenames):
                st = os.stat(os.path.join(dirpath, name))
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_cifar10(root: str | Path | None = None, progress: bool = True
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return {"train": (x, y), "test": (x, y)} with x uint8 (N, 32, 32, 3)."""
    if root is None:
        import keras
        try:
            (xtr, ytr), (xte, yte) = keras.datasets.cifar10.load_data()
        except Exception as e:  # noqa: BLE001 - the downloader raises many kinds
            raise DatasetError("no CIFAR-10 path given and Keras' download failed "
                               f"({e}); pass --data PATH") from e
        return {"train": (xtr, ytr.ravel().astype(np.int64)), "test": (xte, yte.ravel().astype(np.int64))}
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such data set path")
    if (root / "data_batch_1").exists():
        return load_python_batches(root)
    if not _is_image_folder(root):
        raise DatasetError(f"{root}: neither an image folder (train/, test/) nor CIFAR-10 python batches")
    cached = cache_dir() / f"cifar10-{folder_signature(root)}.npz"
    if cached.exists():
        with np.load(cached) as z:
            return {"train": (z["xtr"], z["ytr"]), "test": (z["xte"], z["yte"])}
    xtr, ytr = load_image_folder(root / "train", progress=progress)
    xte, yte = load_image_folder(root / "test", progress=progress)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
    tmp.replace(cached)
    return {"train": (xtr, ytr), "test": (xte, yte)}


def default_dataset_path() -> Path | None:
    """../shared/datasets/cifar10-jpeg next to the checkout, or $CIFAR10_PATH, if present."""
    env = os.environ.get("CIFAR10_PATH")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    for cand in (here.parent / "shared" / "datasets" / "cifar10-jpeg",):
        if _is_image_folder(cand):
            return cand
    return None
