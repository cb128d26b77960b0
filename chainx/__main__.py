"""`python -m chainx`: the `chainx` command, for an interpreter without the entry point
installed (a GPU machine whose own python holds torch, say)."""

from chainx.cli import run

if __name__ == "__main__":  # not in the workers that the sweep's pool spawns
    run()
