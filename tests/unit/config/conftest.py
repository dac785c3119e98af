from tests.secrets_manager import secrets_manager, secrets_manager_server  # noqa: F401
