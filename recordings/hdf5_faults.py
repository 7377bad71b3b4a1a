"""What HDF5 raises when a file is damaged, and the same fault in a lab user's words.

h5py does not give a damaged file one exception type: a bad metadata checksum while opening an
object is a KeyError, a chunk that fails its Fletcher-32 checksum or lies past the end of the
file is an OSError, a garbled dataspace can surface as ValueError, TypeError or RuntimeError.
Code that reads an episode catches `READ_ERRORS` around HDF5 calls (and only those), and turns
what it caught into a reason with `describe`.
"""

from __future__ import annotations

from recordings.attributes import AttributesHang

#: Everything h5py raises for a damaged or truncated file. Only ever caught around HDF5 reads,
#: so a bug of ours elsewhere is never mistaken for a damaged file.
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError)

#: HDF5 message fragment -> what it means for the user. First match wins.
_MEANINGS: tuple[tuple[str, str], ...] = (
    ("no space left", "the disk is full"),
    ("disk quota", "the disk quota is used up"),
    ("file too large", "the file reached the size limit of its file system"),
    ("filter returned failure", "stored data fails its checksum (the bytes on disk were changed)"),
    ("fletcher32", "stored data fails its checksum (the bytes on disk were changed)"),
    ("incorrect metadata checksum", "the file's internal structure fails its checksum (the bytes on disk were changed)"),
    ("checksum", "a checksum in the file does not match (the bytes on disk were changed)"),
    ("truncated file", "the file is truncated (cut off while copying or writing)"),
    ("addr overflow", "the file points past its own end (truncated or damaged)"),
    ("address of object past end", "the file points past its own end (truncated or damaged)"),
    ("past end of allocation", "the file points past its own end (truncated or damaged)"),
    ("file signature not found", "it is not an HDF5 file"),
    ("bad object header", "an object header is damaged"),
    ("wrong version number", "the file's internal structure is damaged (unknown version number)"),
    ("bad version number", "the file's internal structure is damaged (unknown version number)"),
    ("bad signature", "the file's internal structure is damaged (a block signature is wrong)"),
    ("wrong signature", "the file's internal structure is damaged (a block signature is wrong)"),
)

#: What to do about a damaged file, said once per message.
DAMAGED_FIX = "restore it from a backup or move it out of the store"


def short(text: str, limit: int = 160) -> str:
    """One line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(error: BaseException) -> str:
    """A damaged-file exception from h5py -> a reason a person can read (HDF5's own words kept
    short in brackets, for whoever digs deeper)."""
    if isinstance(error, AttributesHang):  # already in the user's words
        return str(error)
    text = str(error) or type(error).__name__
    lowered = text.lower()
    for fragment, meaning in _MEANINGS:
        if fragment in lowered:
            return f"{meaning} [{short(text, 120)}]"
    return f"HDF5 reports an error [{type(error).__name__}: {short(text, 120)}]"


def member(group, path: str):
    """The object at `path` in an h5py group, or None when there is no such link.

    h5py's `group.get(path)` also answers None when the object is there but cannot be opened
    (its header fails its checksum raises KeyError, which `get` swallows): a damaged dataset
    would read as a missing optional one. Here an existing but damaged object raises."""
    if path not in group:
        return None
    return group[path]


def attribute(attrs, name: str, default=None):
    """An attribute's value, or `default` when there is no such attribute. h5py's
    `attrs.get(name, default)` also answers the default when the attribute is there but its
    storage fails its checksum; here that raises."""
    if name not in attrs:
        return default
    return attrs[name]
