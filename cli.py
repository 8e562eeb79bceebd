"""Entry shim: `python cli.py ...` is the same as the `bertsearch` command."""

from bertsearch.cli import main

if __name__ == "__main__":
    main()
