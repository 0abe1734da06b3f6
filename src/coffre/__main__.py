from coffre.cli.entry import main

raise SystemExit(main())
