import gc

from slsa_provenance.cli import main

code = main()
gc.freeze()  # the process ends: a last collection over every object it made would only cost time
raise SystemExit(code)
