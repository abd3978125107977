"""``python -m selectllm.llm.simulator``: see :func:`selectllm.llm.simulator.server.main`."""

import sys

from selectllm.llm.simulator.server import main

sys.exit(main())
