"""``python3 -m mapelab.ce.daemon``: run the reference CE daemon (see :mod:`.service`)."""

import sys

from .service import main

sys.exit(main())
