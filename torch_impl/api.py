"""The torch side's interface to the harness (``contract.interface.FrameworkSide``): every name of
``contract.interface.EXPORTS``, loaded from its mirrored module on first use."""
from contract.interface import lazy_exports

__getattr__ = lazy_exports("torch_impl")
