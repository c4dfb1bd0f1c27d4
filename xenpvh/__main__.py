from xenpvh.cli import main

raise SystemExit(main())
