"""Find the classes and image files of a data folder (`data=directory`), checking its layout.

A folder holds one subfolder of images per class, optionally inside train/, val/ and test/
subfolders that fix the split. Which files count as images is decided by experiments.data.images
(one extension list for training and prediction); everything else is ignored and counted.

Symbolic links are followed only while they stay inside the folder: a link that points outside
it, at the folder itself or at a folder that contains the link (a loop), or at nothing, is
skipped, listed in one warning and recorded (`FolderScan.skipped_links`), so a link to the data
folder can no longer become a new class holding every image again.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from experiments.data.images import IMAGE_EXTENSIONS, is_image_name
from experiments.errors import UserInputError

log = logging.getLogger("sweeplab.data")
SHOWN_LINKS = 5

SPLIT_FOLDERS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


@dataclass
class FolderScan:
    """What a data folder holds: class names in label order and the image files found.

    `files[split]` lists (path, label) per fixed split (`train`, `val`, `test` subfolders), or
    under the single key `all` when the folder is not split.
    """

    root: Path
    class_names: list[str]
    files: dict[str, list[tuple[str, int]]]
    ignored: list[str] = field(default_factory=list)  # non-image files, left out
    skipped_links: list[str] = field(default_factory=list)  # "link -> target (why)", not followed


def check_folder(path: str | None) -> Path:
    """The data folder as an absolute path, or a UserInputError saying what is wrong with it."""
    if path is None or str(path).strip() == "":
        raise UserInputError(
            "data=directory needs a folder: set data.path=FOLDER, a folder with one subfolder of "
            "images per class (optionally inside train/, val/ and test/ subfolders)."
        )
    folder = Path(str(path)).expanduser().resolve()
    if not folder.exists():
        raise UserInputError(
            f"data.path={path!r} does not exist (resolved to {folder}); give a folder with one "
            "subfolder of images per class."
        )
    if not folder.is_dir():
        raise UserInputError(
            f"data.path={path!r} is a file, not a folder; give the folder that holds one subfolder "
            "of images per class (e.g. photos/cat/*.jpg, photos/dog/*.jpg)."
        )
    return folder


def scan_folder(path: str | None, warn: bool = True) -> FolderScan:
    """Find the classes and image files under `path`; non-image files are ignored and counted."""
    root = check_folder(path)
    links = _Links(root)
    try:
        scan = _scan(root, links)
    except UserInputError as err:  # say which links were left out: they may be the reason
        if not links.skipped:
            raise
        raise UserInputError(f"{err} {links.describe()}") from err
    scan.skipped_links = links.skipped
    if warn:
        links.warn()
    return scan


def _scan(root: Path, links: _Links) -> FolderScan:
    subdirs = _subdirs(root, links)
    split_dirs = {
        SPLIT_FOLDERS[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_FOLDERS
    }
    if split_dirs and len(split_dirs) == len(subdirs):
        if "train" not in split_dirs:
            raise UserInputError(
                f"data.path={str(root)!r} has split folders {sorted(d.name for d in subdirs)} but "
                "no train/ folder; a fixed split needs train/ (val/ and test/ are optional)."
            )
        per_split = {split: _class_files(d, links) for split, d in split_dirs.items()}
        class_names = sorted({name for found in per_split.values() for name in found[0]})
        ignored = [f for found in per_split.values() for f in found[1]]
        _check_classes(root, class_names, {n: [] for n in class_names}, per_split)
        files = {
            split: [(p, class_names.index(name)) for name, paths in found[0].items() for p in paths]
            for split, found in per_split.items()
        }
        return FolderScan(root, class_names, files, ignored)
    by_class, ignored = _class_files(root, links)
    class_names = sorted(by_class)
    _check_classes(root, class_names, by_class, None)
    files = {"all": [(p, i) for i, name in enumerate(class_names) for p in by_class[name]]}
    return FolderScan(root, class_names, files, ignored)


class _Links:
    """Decides which symbolic links under the data folder are followed, and notes the others."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.skipped: list[str] = []

    def follow(self, path: Path) -> bool:
        """True for a plain entry or a link that stays inside the folder without looping."""
        if not path.is_symlink():
            return True
        target = path.resolve()
        if not target.exists():
            why = "points at nothing"
        elif target != self.root and self.root not in target.parents:
            why = "points outside the data folder"
        elif target.is_dir() and (target == path.parent or target in path.parent.parents):
            why = "points at a folder that contains it (a loop)"
        else:
            return True
        note = f"{path} -> {target} ({why})"
        if note not in self.skipped:  # the top folder is listed twice (split check, classes)
            self.skipped.append(note)
        return False

    def describe(self) -> str:
        shown = "; ".join(self.skipped[:SHOWN_LINKS])
        extra = len(self.skipped) - SHOWN_LINKS
        return (
            f"Skipped {len(self.skipped)} symbolic link(s) that leave the folder, loop or point "
            f"at nothing: {shown}{f' and {extra} more' if extra > 0 else ''}. Only links that "
            "stay inside the data folder are followed."
        )

    def warn(self) -> None:
        if not self.skipped:
            return
        message = f"data.path={str(self.root)!r}: {self.describe()}"
        warnings.warn(message, stacklevel=3)
        log.warning(message)


def _subdirs(folder: Path, links: _Links) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if not p.name.startswith(".") and links.follow(p) and p.is_dir()
    )


def _class_files(folder: Path, links: _Links) -> tuple[dict[str, list[str]], list[str]]:
    """Image files per class subfolder (searched recursively), and the non-image files seen."""
    by_class: dict[str, list[str]] = {}
    ignored: list[str] = []
    for class_dir in _subdirs(folder, links):
        images: list[str] = []
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and links.follow(Path(dirpath, d))
            )
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if not links.follow(Path(full)):
                    continue
                if is_image_name(name):
                    images.append(full)
                else:
                    ignored.append(full)
        by_class[class_dir.name] = images
    return by_class, ignored


def _check_classes(
    root: Path,
    class_names: list[str],
    by_class: dict[str, list[str]],
    per_split: dict[str, tuple[dict[str, list[str]], list[str]]] | None,
) -> None:
    where = f"data.path={str(root)!r}"
    if not class_names:
        loose = [p for p in root.iterdir() if p.is_file() and is_image_name(p.name)]
        hint = (
            f" It holds {len(loose)} image file(s) directly: move them into one subfolder per class."
            if loose
            else ""
        )
        raise UserInputError(
            f"{where} has no class subfolders.{hint} Expected one subfolder of images per class, "
            "e.g. FOLDER/cat/*.jpg and FOLDER/dog/*.jpg."
        )
    if len(class_names) < 2:
        raise UserInputError(
            f"{where} has only one class folder ({class_names[0]!r}); a classifier needs at least "
            "two classes, one subfolder each."
        )
    if per_split is None:
        empty = [name for name in class_names if not by_class[name]]
    else:
        totals = {
            n: sum(len(found[0].get(n, [])) for found in per_split.values()) for n in class_names
        }
        empty = [name for name in class_names if totals[name] == 0]
        if not empty:
            missing = [n for n in class_names if not per_split["train"][0].get(n)]
            if missing:
                raise UserInputError(
                    f"{where}: class folder(s) {missing} have no images under train/; every class "
                    "must have training images."
                )
    if empty:
        raise UserInputError(
            f"{where}: class folder(s) {empty} contain no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "add images or remove those folders."
        )
