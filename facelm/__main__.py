from facelm.cli import main

raise SystemExit(main())
