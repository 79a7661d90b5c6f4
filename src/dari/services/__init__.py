"""Services: the messenger's behaviour. They know nothing of transports or SQL dialects."""

from dari.services.core import Caller, Core
from dari.services.registry import Services

__all__ = ["Caller", "Core", "Services"]
