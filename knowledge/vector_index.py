"""One partial HNSW (cosine) index per embedding dimension in use.

pgvector can only index a column of fixed dimension, so the untyped ``vector`` column is indexed
through an expression cast to ``vector(N)`` restricted to rows of that dimension. Queries must use
the same expression (``vector_expression``) for the planner to pick the index."""

from django.db import connection

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


def index_name(dimensions: int) -> str:
    return f"faq_embedding_hnsw_{dimensions}"


def vector_expression(dimensions: int) -> str:
    return f"(vector::vector({int(dimensions)}))"


def create_index_sql(dimensions: int) -> str:
    dims = int(dimensions)
    return (
        f"CREATE INDEX IF NOT EXISTS {index_name(dims)} ON knowledge_faqembedding "
        f"USING hnsw ({vector_expression(dims)} vector_cosine_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) WHERE dimensions = {dims}"
    )


def ensure_vector_index(dimensions: int) -> None:
    with connection.cursor() as cursor:
        # Look first: CREATE INDEX, even IF NOT EXISTS, fails in a transaction with pending (deferred
        # foreign-key) trigger events, e.g. after vectors were written earlier in it.
        cursor.execute("SELECT to_regclass(%s)", [index_name(dimensions)])
        if cursor.fetchone()[0] is None:
            cursor.execute(create_index_sql(dimensions))
