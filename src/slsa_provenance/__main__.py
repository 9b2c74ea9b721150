import gc

gc.disable()  # one short run, few reference cycles: collections would only cost time

from slsa_provenance.cli import main  # noqa: E402 (after the line above, which speeds up importing it)

code = main()
gc.freeze()  # the process ends: a last collection over every object it made would only cost time
raise SystemExit(code)
