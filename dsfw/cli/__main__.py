from dsfw.cli.app import main

raise SystemExit(main())
