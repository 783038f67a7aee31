from voc.cli import main

raise SystemExit(main())
