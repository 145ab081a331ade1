"""Stand-in for ARX's R5 SDK (see tests/stand_ins/README.md)."""
