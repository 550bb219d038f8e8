"""`python -m embaug_jax ...` is the same as the `embaug` console script."""

import sys

from embaug_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
