"""Short, relative-looking paths for prompts (`<|file_sep|>pkg/mod.py`), derived from URIs."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

# Without a workspace root, keep this many trailing components: enough to tell files apart,
# few enough not to leak a home directory into every prompt.
_FALLBACK_COMPONENTS = 2


def uri_path(uri: str) -> str:
    """The path part of a URI ("file:///a/b.py" -> "/a/b.py"); a plain path is returned as is."""
    if "://" in uri or uri.startswith(("file:", "untitled:")):
        parts = urlsplit(uri)
        path = unquote(parts.path or parts.netloc or uri)
    else:
        path = uri
    path = path.replace("\\", "/")
    # file:///C:/x -> /C:/x on Windows-style URIs
    if len(path) > 3 and path[0] == "/" and path[2] == ":":
        path = path[1:]
    return path


def display_path(uri: str, roots: list[str] | None = None) -> str:
    path = uri_path(uri)
    for root in roots or ():
        base = uri_path(root).rstrip("/")
        if base and path.startswith(base + "/"):
            return path[len(base) + 1 :]
    components = [part for part in path.split("/") if part]
    if not components:
        return uri
    return "/".join(components[-_FALLBACK_COMPONENTS:])
