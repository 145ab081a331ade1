"""Strings from outside (chunk fields, instructions, file contents in error messages) are
bounded before they are echoed into a status, a log line or /diagnostics."""

DETAIL_CHARS = 200  # longest detail of a rejection


def bounded(text: str, limit: int = DETAIL_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    return text if len(text) <= limit else text[: max(0, limit - 24)] + f"... ({len(text)} chars in all)"
