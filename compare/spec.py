"""The workload contract, importable from here as before: this name is ``contract.spec`` itself (one module object,
so a test's monkeypatch on either name is seen through both)."""
import sys

import contract.spec

sys.modules[__name__] = contract.spec
