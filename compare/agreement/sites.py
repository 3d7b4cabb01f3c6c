"""Decision sites, importable from here as before: this name is ``contract.sites`` itself (one module object,
so a test's monkeypatch on either name is seen through both)."""
import sys

import contract.sites

sys.modules[__name__] = contract.sites
