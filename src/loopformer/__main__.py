"""`python -m loopformer`: the command line."""

from .cli import main

main()
