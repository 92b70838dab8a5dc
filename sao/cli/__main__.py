"""`python -m sao.cli` (and `torchrun -m sao.cli train ...`): the same command line as the `sao` console script."""
import sys

from . import main

if __name__ == "__main__":          # not when a spawned worker re-imports the main module as __mp_main__
    sys.exit(main())
