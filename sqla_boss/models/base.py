"""The declarative base of the pg-boss models, with a ``MetaData`` of its own."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import DateTime, Integer, MetaData, Text, TypeDecorator
from sqlalchemy.dialects.postgresql import ENUM, INTERVAL, UUID
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.models.enums import JobState, QueuePolicy

metadata = MetaData(schema=DEFAULT_SCHEMA)
"""The pg-boss tables. Never the application's own metadata, so its ``create_all`` leaves them alone."""

JobStateType = ENUM(
    JobState,
    name="job_state",
    schema=DEFAULT_SCHEMA,  # SQLAlchemy 2.0 does not take it from the MetaData
    metadata=metadata,
    values_callable=lambda states: [state.value for state in states],
    validate_strings=True,
)
"""``<schema>.job_state``, whose labels are in the order pg-boss's SQL relies on."""


class TextEnum(TypeDecorator[Any]):
    """A ``text`` column whose values are the members of a string enum: written as their values, read back as
    members. pg-boss keeps its policies in plain ``text``, so the database type stays ``text``."""

    impl = Text
    cache_ok = True

    def __init__(self, enum_class: type[enum.Enum]) -> None:
        super().__init__()
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(self.enum_class(value).value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else self.enum_class(value)


class QueuePolicyType(TextEnum):
    """A ``text`` column that holds a queue policy, read and written as :class:`QueuePolicy`."""

    cache_ok = True  # SQLAlchemy reads it from each class itself

    def __init__(self) -> None:
        super().__init__(QueuePolicy)


class Base(DeclarativeBase):
    """Base of the pg-boss models: their own ``MetaData``, default schema ``pgboss``.

    To use another schema, map ``"pgboss"`` to it with SQLAlchemy's ``schema_translate_map``
    (see :func:`sqla_boss.schema_translate_map`).
    """

    metadata = metadata
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        int: Integer,
        str: Text,
        uuid.UUID: UUID(as_uuid=True),
        dt.datetime: DateTime(timezone=True),
        dt.timedelta: INTERVAL(),
        JobState: JobStateType,
        QueuePolicy: QueuePolicyType,
    }
