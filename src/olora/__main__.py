from olora.cli import main

raise SystemExit(main())
