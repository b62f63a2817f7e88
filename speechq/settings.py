"""One settings object, read from `SPEECHQ_*` environment variables or a `.env` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPEECHQ_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    data_dir: Path = Path("./data")
    database_url: str | None = None
    broker_url: str | None = None
    storage_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    config: Path | None = None
    master_key: str | None = None
    webhook_allow_private: bool = False
    # URL inputs (a transcription's `url`) may reach private, loopback or link-local
    # addresses: false everywhere, `speechq up` included (webhooks are the tenant's own).
    fetch_allow_private: bool = False
    # The largest JSON (or urlencoded) body read, refused with 413 past it; a book bigger
    # than this goes up as a file. Above the largest valid JSON request (a 5M-character book).
    max_json_body_mb: float = Field(default=16.0, gt=0)
    # An uploaded EPUB (a zip) may unpack to at most this much, counted while reading.
    max_book_expanded_mb: float = Field(default=200.0, gt=0)
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    result_ttl_hours: int = 168
    # A job still `queued` this long after its last publish is published again: the
    # SQLAlchemy transport can drop a publish, and a broker can be down at submit.
    requeue_after_seconds: int = 60
    # Celery hard time limit for one job; the Redis visibility timeout is set above it.
    job_time_limit_seconds: int = 900
    # A running job's lease, pushed forward by its worker's heartbeat (three beats a
    # lease): when it runs out, the worker died and the sweeper takes the job back.
    job_lease_seconds: float = Field(default=60.0, gt=0)
    # A job taken back this many times (its worker keeps dying on it) fails instead.
    max_job_runs: int = Field(default=3, ge=1)
    max_wait_seconds: int = 60
    # How long /v1/audio/* wait for their job before answering 504 (the job goes on).
    sync_timeout_seconds: float = 300.0
    worker_concurrency: int = Field(default=2, ge=1)
    # Pieces of one long speech job synthesized at once (threads in the job's worker).
    speech_piece_concurrency: int = Field(default=4, ge=1)
    # Audiobook segments one deployment serves at once (a deployment's
    # `audiobook_concurrency` in the config wins); a book never takes more.
    audiobook_concurrency: int = Field(default=4, ge=1)
    log_level: str = "INFO"
    whisper_model_dir: Path | None = None
    piper_voice_path: Path | None = None
    whisper_cpu_threads: int = Field(default=0, ge=0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return _psycopg_driver(self.database_url)
        return f"sqlite:///{self.data_dir.resolve()}/speechq.db"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir.resolve()}/broker.db"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.data_dir.resolve()}/blobs"

    @property
    def is_embedded_database(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


def _psycopg_driver(url: str) -> str:
    # `postgresql://` would pick psycopg2, which we do not ship.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
