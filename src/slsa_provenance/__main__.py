"""`python -m slsa_provenance` and the `slsa-provenance` command: the CLI, run once."""

import gc
from typing import NoReturn


def run() -> NoReturn:
    gc.disable()  # one short run, few reference cycles: collections would only cost time
    from slsa_provenance.cli import main  # after the line above, which speeds up importing it

    code = main()
    gc.freeze()  # the process ends: a last collection over every object it made would only cost time
    raise SystemExit(code)


if __name__ == "__main__":
    run()
