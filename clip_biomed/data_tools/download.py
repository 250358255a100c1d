"""Fetch, unpack and verify the published dataset archives (biomedcoop.md Appendix A).

Each archive ``<NAME>.zip`` holds ``<NAME>/split_<NAME>.json`` and ``<NAME>/<NAME>/<class
folders>``; it is unpacked into ``<root>/<NAME>/``. Archives come from the Hugging Face dataset
repository (plain HTTPS, resumable through a ``.part`` file) or Google Drive (gdown), or from an
archive you already have (a local path or file:// URL), e.g. on a machine without internet.
"""
from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Dict, List, Optional

from clip_biomed.data_tools.catalog import is_published, published_dataset
from clip_biomed.data_tools.images import read_rgb_image
from clip_biomed.data_tools.splits import SPLIT_KEYS, SplitFileError, published_layout, read_split_file

SOURCES = ("hf", "gdrive")
_CHUNK = 1 << 20
_PROGRESS_EVERY = 64 << 20


def download_command(name: str, root: str) -> str:
    return f"python -m clip_biomed.data_tools download {name} --root {root}"


def verify_command(name: str, root: str) -> str:
    return f"python -m clip_biomed.data_tools verify {name} --root {root}"


# ---------------------------------------------------------------------------------------------- fetch
def _local_path(location: str) -> Optional[str]:
    """The file a local path or file:// URL points at, or None for a remote URL."""
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file":
        return urllib.request.url2pathname(parsed.path)
    if parsed.scheme in ("http", "https"):
        return None
    return os.path.expanduser(location)


def _http_download(url: str, dest: str) -> None:
    """Download to ``dest + '.part'`` and rename when complete; a rerun resumes the .part file
    with an HTTP Range request (or starts over when the server ignores it)."""
    part = dest + ".part"
    start = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"User-Agent": "clip-biomed-downloader"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the .part file already holds everything
            os.replace(part, dest)
            return
        raise
    with response:
        if start and response.status != 206:
            start = 0  # no range support: start over
        total = response.headers.get("Content-Length")
        total = int(total) + start if total else None
        print(f"Downloading {url}" + (f" (resuming at {start / 1e6:.1f} MB)" if start else ""))
        done, next_report = start, start + _PROGRESS_EVERY
        with open(part, "ab" if start else "wb") as f:
            for block in iter(lambda: response.read(_CHUNK), b""):
                f.write(block)
                done += len(block)
                if done >= next_report:
                    print(f"  {done / 1e6:.0f} MB" + (f" of {total / 1e6:.0f} MB" if total else ""))
                    next_report += _PROGRESS_EVERY
    if total is not None and done != total:
        raise OSError(f"Download of {url} stopped at {done} of {total} bytes; run the command again to resume")
    os.replace(part, dest)


def _gdrive_download(file_id: str, dest: str) -> None:
    import gdown  # only this source needs it

    if gdown.download(id=file_id, output=dest, quiet=False, resume=True) is None:
        raise OSError(f"gdown could not download Google Drive file {file_id} (quota exceeded or link changed?); "
                      f"try --source hf")


def fetch_archive(name: str, root: str, source: str = "hf", archive: Optional[str] = None) -> str:
    """Return a local path of ``name``'s archive: ``archive`` (a local path or file:// URL is used
    in place, an http(s) URL is downloaded) or the published one from ``source``, downloaded to
    ``<root>/<name>.zip``."""
    if archive is not None:
        local = _local_path(archive)
        if local is not None:
            if not os.path.isfile(local):
                raise FileNotFoundError(f"Archive not found: {local}")
            return local
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; choose one of {list(SOURCES)}")
    dest = os.path.join(root, f"{name}.zip")
    if os.path.isfile(dest):
        print(f"Using the archive already downloaded at {dest}")
        return dest
    os.makedirs(root, exist_ok=True)
    url = archive or (published_dataset(name).hf_url if source == "hf" else
                      f"https://drive.google.com/uc?id={published_dataset(name).gdrive_id}")
    try:
        if source == "gdrive" and archive is None:
            _gdrive_download(published_dataset(name).gdrive_id, dest)
        else:
            _http_download(url, dest)
    except OSError as err:  # URLError, timeouts, refused connections, HTTP errors, gdown failures
        raise OSError(f"{err}. Without network access here, download {url} on a machine that has it, copy "
                      f"the file over and run: {download_command(name, root)} --archive /path/to/{name}.zip") from err
    return dest


# --------------------------------------------------------------------------------------------- unpack
def unpack_archive(archive: str, name: str, root: str) -> str:
    """Unpack ``archive`` into ``<root>/<name>/`` and return that folder.

    The folder holding ``split_<name>.json`` inside the archive is taken as the dataset folder,
    so archives with or without the top-level ``<name>/`` unpack the same way; members outside
    it and macOS ``__MACOSX/`` metadata are skipped.
    """
    split_name = f"split_{name}.json"
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive} is not a zip archive ({err}); delete it and download again") from err
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir() and "__MACOSX" not in PurePosixPath(m.filename).parts]
        split_members = [m for m in members if PurePosixPath(m.filename).name == split_name]
        if len(split_members) != 1:
            raise ValueError(
                f"{archive} should hold exactly one {split_name} (layout {name}/{split_name} + "
                f"{name}/{name}/<class folders>), found {len(split_members)}")
        prefix = PurePosixPath(split_members[0].filename).parent
        dataset_dir = os.path.join(root, name)
        inside = [m for m in members if prefix in PurePosixPath(m.filename).parents]
        print(f"Unpacking {len(inside)} files from {archive} into {dataset_dir}")
        for member in inside:
            relative = PurePosixPath(member.filename).relative_to(prefix)
            if ".." in relative.parts:
                raise ValueError(f"{archive} has an unsafe member path {member.filename!r}; not unpacking it")
            target = os.path.join(dataset_dir, *relative.parts)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    return dataset_dir


# --------------------------------------------------------------------------------------------- verify
@dataclass
class DatasetCheck:
    """What ``verify_dataset`` found; ``ok`` when nothing is missing or unreadable."""

    name: str
    root: str
    split_path: str
    image_dir: str
    problem: Optional[str] = None  # the split file itself is missing or invalid
    counts: Dict[str, int] = field(default_factory=dict)
    missing: List[str] = field(default_factory=list)
    unreadable: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.missing and not self.unreadable

    def report(self, max_listed: int = 10) -> str:
        listed = sum(self.counts.values())
        if self.ok:
            counts = ", ".join(f"{key} {count:,}" for key, count in self.counts.items())
            return f"{self.name}: OK, {listed:,} images listed in {self.split_path} ({counts}), all present"
        lines = [f"{self.name}: PROBLEMS in {os.path.join(self.root, self.name)}"]
        if self.problem:
            lines.append(f"  {self.problem}")
        for what, paths in (("missing", self.missing), ("unreadable", self.unreadable)):
            if paths:
                lines.append(f"  {len(paths):,} of {listed:,} images listed in the split file are {what} "
                             f"(relative to {self.image_dir}):")
                lines += [f"    {path}" for path in paths[:max_listed]]
                if len(paths) > max_listed:
                    lines.append(f"    ... and {len(paths) - max_listed:,} more")
        if is_published(self.name):
            lines.append(f"  fix: {download_command(self.name, self.root)}")
        return "\n".join(lines)


def verify_dataset(name: str, root: str, check_images: bool = False) -> DatasetCheck:
    """Check ``<root>/<name>``: split file present and valid, every listed image present (and
    decodable, with ``check_images``, which reads every image and is slow for large datasets)."""
    root = os.path.abspath(os.path.expanduser(root))
    check = DatasetCheck(name, root, *published_layout(root, name))
    if not os.path.isfile(check.split_path):
        check.problem = f"split file not found: {check.split_path}"
        return check
    try:
        split = read_split_file(check.split_path)
    except SplitFileError as err:
        check.problem = str(err)
        return check
    check.counts = {key: len(split[key]) for key in SPLIT_KEYS}
    for key in SPLIT_KEYS:
        for entry in split[key]:
            path = os.path.join(check.image_dir, entry.path)
            if not os.path.isfile(path):
                check.missing.append(entry.path)
            elif check_images:
                try:
                    read_rgb_image(path, dataset=name)
                except OSError:
                    check.unreadable.append(entry.path)
    return check


def download_dataset(name: str, root: str, source: str = "hf", archive: Optional[str] = None,
                     keep_archive: bool = False) -> DatasetCheck:
    """Fetch, unpack and verify one dataset. A complete dataset is left alone unless ``archive``
    is given. A downloaded archive is deleted once it has been unpacked and verified (unless
    ``keep_archive``); an archive you passed is never deleted."""
    root = os.path.abspath(os.path.expanduser(root))
    if archive is None:
        check = verify_dataset(name, root)
        if check.ok:
            print(f"{name} is already complete in {root} (delete {os.path.join(root, name)} to download it again)")
            return check
    path = fetch_archive(name, root, source=source, archive=archive)
    unpack_archive(path, name, root)
    check = verify_dataset(name, root)
    downloaded = archive is None or _local_path(archive) is None
    if check.ok and downloaded and not keep_archive:
        os.remove(path)
    return check
