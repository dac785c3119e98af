from tests.redis_cluster import redis_cluster, redis_cluster_session  # noqa: F401
from tests.redis_server import redis_server  # noqa: F401
from tests.secrets_manager import secrets_manager, secrets_manager_server  # noqa: F401
