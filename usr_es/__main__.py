"""`python -m usr_es` runs the `usr` command line."""

from .cli import main

main()
