# The shop knowledge base, its secret key and an HTTP client against the live server, as the chat
# tests use them.
from tests.chat.conftest import api, secret_key, shop  # noqa: F401
