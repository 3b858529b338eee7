"""The stories' text search, kept by the database engine itself: SQLite's FTS5, PostgreSQL's
full-text search. Every string a story says (title, sentences, key points, category, names,
quote) is indexed, so any way a story is written, rewritten, merged or deleted leaves the
index in step without a line of storyapp code: on SQLite, triggers on the story table; on
PostgreSQL, a generated column with a GIN index.

Both engines stem English words (porter; PostgreSQL's `english`), so "floods" finds "flooding".
A query is the words of what the reader typed, all of them required: no engine's query syntax
reaches the engine, so no query can be malformed.

The triggers belong to the story table: a migration that rebuilds it on SQLite (playhouse's
way to change a column's type or constraints there) drops them with it, and must call
`create()` again. tests/test_migrations.py searches a database upgraded from m001 to catch it.
"""

import re

from peewee import SQL, Database, Node, NodeList, PostgresqlDatabase, Value

# The text of a story, from its JSON `content`: every string in it, wherever it sits.
_SQLITE_TEXT = "(SELECT group_concat(value, ' ') FROM json_tree({row}.content) WHERE type = 'text')"

SQLITE = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS storysearch USING fts5("
    "text, tokenize = 'porter unicode61 remove_diacritics 2')",
    # A row of the same id first goes: one left behind (a story table dropped and made again)
    # would make the insert fail.
    "CREATE TRIGGER IF NOT EXISTS storysearch_insert AFTER INSERT ON story BEGIN "
    "DELETE FROM storysearch WHERE rowid = new.id; "
    f"INSERT INTO storysearch (rowid, text) VALUES (new.id, {_SQLITE_TEXT.format(row='new')}); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS storysearch_update AFTER UPDATE OF content ON story BEGIN "
    "DELETE FROM storysearch WHERE rowid = old.id; "
    f"INSERT INTO storysearch (rowid, text) VALUES (new.id, {_SQLITE_TEXT.format(row='new')}); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS storysearch_delete AFTER DELETE ON story BEGIN "
    "DELETE FROM storysearch WHERE rowid = old.id; "
    "END",
]
SQLITE_FILL = (
    "INSERT INTO storysearch (rowid, text) "
    f"SELECT story.id, {_SQLITE_TEXT.format(row='story')} FROM story "
    "WHERE story.id NOT IN (SELECT rowid FROM storysearch)"
)

# to_tsvector over jsonb indexes every string value in it, and no number (the citations).
# Adding the column computes it for every existing story.
POSTGRES = [
    "ALTER TABLE story ADD COLUMN IF NOT EXISTS search tsvector GENERATED ALWAYS AS "
    "(to_tsvector('english'::regconfig, content::jsonb)) STORED",
    "CREATE INDEX IF NOT EXISTS story_search ON story USING gin (search)",
]


def create(db: Database) -> None:
    """The index and what keeps it, filled for the stories there are; safe to run twice."""
    if isinstance(db, PostgresqlDatabase):
        for statement in POSTGRES:
            db.execute_sql(statement)
        return
    for statement in SQLITE:
        db.execute_sql(statement)
    db.execute_sql(SQLITE_FILL)


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def matching(db: Database, text: str) -> Node:
    """A subquery of the ids of the stories holding every word of `text` (none without one)."""
    found = words(text)
    if not found:
        return NodeList((SQL("SELECT id FROM story WHERE 1 = 0"),), parens=True)
    if isinstance(db, PostgresqlDatabase):
        return NodeList(
            (
                SQL("SELECT id FROM story WHERE search @@ plainto_tsquery('english'::regconfig,"),
                Value(" ".join(found)),
                SQL(")"),
            ),
            parens=True,
        )
    # Each word a quoted phrase: FTS5 then takes it as a word, never as an operator.
    phrase = " ".join(f'"{w}"' for w in found)  # \w+ holds no quote
    return NodeList(
        (SQL("SELECT rowid FROM storysearch WHERE storysearch MATCH"), Value(phrase)),
        parens=True,
    )
