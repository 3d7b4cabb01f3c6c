from compare.report.cli import main

raise SystemExit(main())
