"""``python -m msgcube.cli``: the same as the ``msgcube`` command."""

from msgcube.cli.main import main

main()
