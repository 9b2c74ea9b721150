from slsa_provenance.cli import main

raise SystemExit(main())
