from tests.redis_server import redis_server  # noqa: F401
from tests.secrets_manager import secrets_manager, secrets_manager_server  # noqa: F401
