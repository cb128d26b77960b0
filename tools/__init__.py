"""Scripts and their helpers; importable as `tools.<module>` from the repository root."""
