"""Schema migrations: an append-only list, each applied once and recorded in the migration table.

A new database gets today's tables in one go and every migration recorded as applied; an
existing one gets the migrations it has not seen, in order. A released migration never changes:
add a new one (`m002_...`, using playhouse.migrate) next to the model change instead.
"""

from collections.abc import Callable

from peewee import Database
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as apply

from storyapp.db import lock
from storyapp.models import TABLES, Job, JobCluster, Migration, Worker


def m001_initial(db: Database) -> None:
    db.create_tables(TABLES)


def m003_worker_leases(db: Database) -> None:
    migrator = SchemaMigrator.from_database(db)
    apply(
        migrator.add_column("job", "planner", Job.planner),
        migrator.add_column("jobcluster", "lease_holder", JobCluster.lease_holder),
        migrator.add_column("jobcluster", "leased_at", JobCluster.leased_at),
        migrator.add_column("jobcluster", "lease_until", JobCluster.lease_until),
    )
    db.create_tables([Worker])


MIGRATIONS: list[Callable[[Database], None]] = [m001_initial, m003_worker_leases]


def migrate(db: Database, migrations: list[Callable[[Database], None]] = MIGRATIONS) -> list[str]:
    """Brings `db` up to date; returns the names applied. Safe to run twice, or from several
    processes at once: the first migrates while the others wait, then find nothing to do."""
    with db.bind_ctx(TABLES), db.atomic():
        lock("storyapp.migrate", db)
        if not db.table_exists(Migration._meta.table_name):
            db.create_tables(TABLES)
            names = [m.__name__ for m in migrations]
            Migration.insert_many([{"name": n} for n in names]).execute()
            return names
        applied = {m.name for m in Migration.select(Migration.name)}
        ran = []
        for migration in migrations:
            if migration.__name__ not in applied:
                migration(db)
                Migration.create(name=migration.__name__)
                ran.append(migration.__name__)
        return ran
