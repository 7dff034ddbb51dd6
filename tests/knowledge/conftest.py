import pytest

from knowledge.models import KnowledgeBase
from knowledge.services import knowledge_base_create


@pytest.fixture
def kb(db: None) -> KnowledgeBase:
    return knowledge_base_create(slug="acme", name="ACME support")
