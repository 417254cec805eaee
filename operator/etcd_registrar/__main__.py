"""`python -m etcd_registrar`."""

from etcd_registrar.cli import main

raise SystemExit(main())
