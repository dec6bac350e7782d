"""Train a language model: `python train.py [--config FILE] [--workdir DIR] [key=value ...]`.

With no arguments, trains the quickstart config (a small GPT) on the embedded default corpus
(the Python standard library's source). `python train.py --help` explains every option.
"""

import sys

from jaxlm.cli import main

if __name__ == "__main__":
    sys.exit(main())
