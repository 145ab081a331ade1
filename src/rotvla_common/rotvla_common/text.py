"""Strings from outside (chunk fields, instructions, file contents in error messages) are
bounded before they are echoed into a status, a log line or /diagnostics."""

DETAIL_CHARS = 200  # longest detail of a rejection


def bounded(text: str, limit: int = DETAIL_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    return text if len(text) <= limit else text[: max(0, limit - 24)] + f"... ({len(text)} chars in all)"


MAX_JSON_BYTES = 1 << 20  # no metadata file of ours (config, statistics, info, episode) comes near


def read_json(path, max_bytes: int = MAX_JSON_BYTES):
    """A JSON file from outside (a checkpoint's, a dataset's, a recording's, a result's):
    refused before it is read when over ``max_bytes`` (a 150 MB config.json stalled serving
    for seconds), and when it is no JSON, with a ValueError that names the file; callers
    raise it as their own error class."""
    import json
    from pathlib import Path

    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path}: {size} bytes, more than such a file holds ({max_bytes})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {bounded(str(error))}") from None


def read_json_object(path, error: type[Exception] = ValueError) -> dict:
    """``read_json`` of a file that must hold a JSON object (a metadata file), every refusal
    raised as ``error``, the caller's own class."""
    try:
        data = read_json(path)
    except ValueError as refused:
        raise error(str(refused)) from None
    if not isinstance(data, dict):
        raise error(f"{path}: not a JSON object")
    return data
