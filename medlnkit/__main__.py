from medlnkit.cli import main

raise SystemExit(main())
