"""``python -m mapelab.testbed.br``: the BR process (contract in :mod:`mapelab.testbed.br.service`)."""

import sys

from .service import main

sys.exit(main())
