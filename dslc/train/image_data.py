"""Image folders as torchvision's ImageFolder lays them out, streamed: `images("path", augment=[...], mean, std)`.

Layout: `root/<class>/*.png|jpg|...`, classes sorted by name (their index is the label). When `root/train/`
exists, it is the training set and `root/val/` (if present) the held-out set, with train's classes.

Decoding (Pillow) happens batch by batch, in the background prefetch thread of `data.batches` (numpy engine)
or in DataLoader workers (`torch_dataset`): only the file list is held in memory, so a data set larger than
memory trains. Each image is converted to the network input's channels (a grey image for an RGB network
becomes RGB, and back: `Image.convert`), scaled to [0, 1], normalised per channel with `mean` / `std`.

Sizing to the network input [N, C, H, W]:
    evaluation, and training without "crop": resize the shorter side to the input's (H or W), centre-crop HxW
    "crop"      random resized crop (torchvision's RandomResizedCrop: 8%-100% of the area, aspect 3/4..4/3),
                resized to HxW
    "pad_crop"  resize as for evaluation, pad 4 pixels (zeros) on each side, random HxW crop (CIFAR style)
    "flip"      horizontal flip with probability 1/2
The random choices of a sample are a function of (seed, epoch, sample index) only: runs, resumed runs and any
number of DataLoader workers see the same augmented images.

A file that cannot be decoded (unreadable, truncated, not an image) STOPS training with an error naming it,
rather than being skipped with a warning: skipping would silently change the data set (and its size, which
checkpoints and the epoch order depend on) part-way through an epoch; fix or remove the file and resume.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dslc.frontend.train_config import IMAGE_AUGMENTATIONS as AUGMENTATIONS
from dslc.train.streaming import LazyArray

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
PAD = 4


def _data_error(msg: str):
    from dslc.train.data import DataError
    return DataError(msg)


def scan_folder(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, image files, labels) of an ImageFolder directory; `classes` fixes the class list (val/)."""
    if not root.is_dir():
        raise _data_error(f"image folder {root} not found")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise _data_error(f"{root} has no class folders (expected {root}/<class>/<image>.png|jpg, "
                          f"as torchvision's ImageFolder)")
    if classes is None:
        classes = found
    else:
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise _data_error(f"{root} has class folder(s) {', '.join(unknown)} that the training set "
                              f"{root.parent / 'train'} does not have")
    files, labels = [], []
    for label, name in enumerate(classes):
        d = root / name
        if not d.is_dir():
            continue
        imgs = sorted(p for p in d.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not imgs and name in found:
            raise _data_error(f"class folder {d} has no images ({', '.join(EXTENSIONS[:3])}, ...)")
        files += imgs
        labels += [label] * len(imgs)
    return classes, files, np.asarray(labels, dtype=np.int64)


class ImageFolderArray(LazyArray):
    """The images of a folder as a lazy float32 array [n, C, H, W]; C, H, W come from the network input
    (`for_input`). Until then its shape is [n, C?, H?, W?] with names."""

    def __init__(self, files: list[Path], mean, std, augment, size: tuple | None = None, where: str = ""):
        self.files, self.mean, self.std, self.augment = files, mean, std, tuple(augment)
        self.size, self.where = size, where
        self.shape = (len(files),) + (size or ("C", "H", "W"))
        self.dtype = np.dtype(np.float32)

    def for_input(self, ttype, what, src):
        shape = tuple(ttype.shape)
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]) or shape[1] not in (1, 3):
            raise _data_error(f"the data `{src}` gives images; {what} is {ttype}, expected [N, C, H, W] with "
                              f"C = 1 (grey) or 3 (RGB) and fixed H, W")
        c = shape[1]
        for label, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, c):
                raise _data_error(f"the data `{src}`: {label} has {len(v)} values, the network input has {c} "
                                  f"channel(s)")
        return ImageFolderArray(self.files, self.mean, self.std, self.augment, shape[1:], self.where)

    def batch(self, idx, key=None):
        if self.size is None:
            raise _data_error(f"{self.where}: images are decoded to a network input's shape; fit the data to a "
                              f"network first")
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx),) + self.size, np.float32)
        for j, i in enumerate(idx):
            rng = np.random.default_rng([int(key[0]), int(key[1]), int(i)]) if key is not None else None
            out[j] = self.load(int(i), rng)
        return out

    def load(self, i: int, rng: np.random.Generator | None) -> np.ndarray:
        """Sample i as float32 [C, H, W]: decoded, converted, sized, augmented when rng is given, normalised."""
        from PIL import Image, UnidentifiedImageError
        c, h, w = self.size
        path = self.files[i]
        try:
            with Image.open(path) as im:
                im = im.convert("L" if c == 1 else "RGB")   # decodes the whole file: a truncated one fails here
                im = self._sized(im, h, w, rng if rng is not None and self.augment else None)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            raise _data_error(f"{path}: cannot decode the image ({e}); fix or remove the file (a broken image "
                              f"stops training: skipping it would change the data set mid-run)") from None
        a = np.asarray(im, dtype=np.float32) * np.float32(1 / 255)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if rng is not None and "flip" in self.augment and rng.random() < 0.5:
            a = a[:, :, ::-1]
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return (a - mean) / std

    def _sized(self, im, h: int, w: int, rng):
        from PIL import Image
        if rng is not None and "crop" in self.augment:
            box = random_resized_box(im.width, im.height, rng)
            return im.resize((w, h), Image.BILINEAR, box=box)
        im = resize_center_crop(im, h, w)
        if rng is not None and "pad_crop" in self.augment:
            padded = Image.new(im.mode, (w + 2 * PAD, h + 2 * PAD))
            padded.paste(im, (PAD, PAD))
            x0, y0 = int(rng.integers(0, 2 * PAD + 1)), int(rng.integers(0, 2 * PAD + 1))
            im = padded.crop((x0, y0, x0 + w, y0 + h))
        return im


def resize_center_crop(im, h: int, w: int):
    """Resize so the image covers HxW with its aspect kept, then cut the centre HxW."""
    from PIL import Image
    scale = max(h / im.height, w / im.width)
    nw, nh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
    if (nw, nh) != im.size:
        im = im.resize((nw, nh), Image.BILINEAR)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return im.crop((x0, y0, x0 + w, y0 + h))


def random_resized_box(width: int, height: int, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop box (10 tries, then the centre crop of the clamped aspect)."""
    area = width * height
    log_ratio = np.log(ratio)
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = float(np.exp(rng.uniform(*log_ratio)))
        cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < cw <= width and 0 < ch <= height:
            x0, y0 = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
            return (x0, y0, x0 + cw, y0 + ch)
    in_ratio = width / height
    cw, ch = (width, int(round(width / ratio[1]))) if in_ratio > ratio[1] else \
        (int(round(height * ratio[0])), height) if in_ratio < ratio[0] else (width, height)
    x0, y0 = (width - cw) // 2, (height - ch) // 2
    return (x0, y0, x0 + cw, y0 + ch)


def images(path: str | os.PathLike, augment=(), mean=(0.0,), std=(1.0,)):
    """The `images("path", augment=[...], mean=[...], std=[...])` data source (see the module docstring)."""
    from dslc.train.data import Dataset, Split
    root = Path(path)
    bad = [a for a in augment if a not in AUGMENTATIONS]
    if bad:
        raise _data_error(f"images: unknown augmentation {', '.join(map(repr, bad))} (known: "
                          f"{', '.join(AUGMENTATIONS)})")
    if any(not isinstance(s, (int, float)) or s <= 0 for s in std):
        raise _data_error(f"images: std must be positive numbers, got {list(std)}")
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes, files, labels = scan_folder(train_dir)
    test = None
    if train_dir != root and (root / "val").is_dir():
        _c, vfiles, vlabels = scan_folder(root / "val", classes)
        # evaluation never augments: the held-out split has no augmentations
        test = Split([ImageFolderArray(vfiles, mean, std, (), where=str(root / "val"))], [vlabels])
    train = Split([ImageFolderArray(files, mean, std, augment, where=str(train_dir))], [labels])
    return Dataset(f"images({root})", train, test, task="classification", num_classes=len(classes),
                   info={"path": str(root), "classes": classes, "augment": list(augment)})


def torch_dataset(split, seed: int = 0, train: bool = True):
    """A map-style `torch.utils.data.Dataset` over a data split (streamed or in memory), for a DataLoader with
    workers and a DistributedSampler. torch is imported here only.

        ds = torch_dataset(dataset.train, seed=s.seed)      # a fitted split: data.fit_to_graph(...).train
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=s.seed)
        loader = DataLoader(ds, batch_size=b, sampler=sampler, num_workers=4)
        for epoch in range(epochs):
            sampler.set_epoch(epoch); ds.set_epoch(epoch)   # both: the order and the augmentations
            for xs, ys in loader: ...

    `ds[i]` is `(xs, ys)`: tuples of torch tensors (one per network input / target) of sample i, its inputs
    decoded, sized, augmented (train=True: a function of (seed, epoch, i) only, so any number of workers give
    the same samples) and normalised as the numpy engine's batches. `len(ds)` is the split's size. The default
    collate stacks them into the same batches `data.batches` yields. `set_epoch(e)` must be called before each
    epoch's iteration starts (DataLoader workers copy the dataset when the iterator is created).
    """
    import torch
    from torch.utils.data import Dataset
    from dslc.train.streaming import gather

    class SplitDataset(Dataset):
        def __init__(self):
            self.split, self.seed, self.train, self.epoch = split, int(seed), bool(train), 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)

        def __len__(self) -> int:
            return len(self.split)

        def __getitem__(self, i):
            idx = np.array([int(i)])
            key = (self.seed, self.epoch) if self.train else None
            # np.array: a writable, contiguous copy, 0-d for a label (ascontiguousarray would make it 1-d)
            xs = tuple(torch.from_numpy(np.array(gather(x, idx, key)[0])) for x in self.split.xs)
            ys = tuple(torch.from_numpy(np.array(gather(y, idx, key)[0])) for y in self.split.ys)
            return xs, ys

    return SplitDataset()
