"""Every tunable default in one place, and the environment-driven settings."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Definitions
DEFAULT_MAX_DEFINITION_BYTES = 1024 * 1024
DEFAULT_MAX_NESTING = 64
DEFAULT_MAX_DEFINITION_NODES = 100_000  # values in a workflow file after YAML aliases are expanded
DEFAULT_MAX_EXPRESSION_CHARS = 4096
DEFAULT_MAX_EXPRESSION_DEPTH = 32
DEFAULT_MAX_EXPRESSION_RESULT = 10_000_000  # characters of JSON: the largest value an expression builds
DEFAULT_MAX_EXPRESSION_WORK = 4 * DEFAULT_MAX_EXPRESSION_RESULT  # characters built or compared in one evaluation
DEFAULT_MAX_ATTEMPTS = 1
DEFAULT_RETRY_DELAY_S = 1.0
DEFAULT_RETRY_MAX_DELAY_S = 300.0
DEFAULT_STEP_TIMEOUT_S: float | None = None
DEFAULT_BREAKER_FAIL_MAX = 5
DEFAULT_BREAKER_RESET_TIMEOUT_S = 30.0

# Runtime
DEFAULT_DATABASE_URL = "sqlite:///orchestrator.db"
DEFAULT_EMBEDDED_BROKER_URL = "memory://"
DEFAULT_QUEUE = "orchestrator"
DEFAULT_RECONCILE_INTERVAL_S = 30.0
DEFAULT_RECONCILE_STALE_S = 60.0
DEFAULT_POLL_INTERVAL_S = 0.2
DEFAULT_POISON_LIMIT = 3
DEFAULT_VISIBILITY_TIMEOUT_S = 3600.0
DEFAULT_MAX_COUNTDOWN_S = 60.0
DEFAULT_HARD_TIMEOUT_GRACE_S = 5.0
DEFAULT_DLQ_BATCH = 500
DEFAULT_TRIAL_TTL_S = 60.0
DEFAULT_BREAKER_UNAVAILABLE_WAIT_S = 5.0
DEFAULT_CACHE_UNAVAILABLE_WAIT_S = 2.0  # the store cannot be read before a cached or asserted call: wait, no call
DEFAULT_LEASE_S = 30.0
DEFAULT_RECORD_PATIENCE_S = 20.0
DEFAULT_LOCAL_STEPS = 100  # steps one delivery may run in-process after its own (0: every step is a message)
DEFAULT_LOCAL_BUDGET_S = 5.0  # ... and only while it has run for less than this
DEFAULT_WORKER_FORGET_S = 7 * 86400.0
DEFAULT_UNKNOWN_BROKER_REDISPATCH_S = 3600.0

# Waits, signals and people
DEFAULT_SIGNAL_TTL = "7d"
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_MAX_PAYLOAD_DEPTH = 64  # how deep inputs, signal data and message bodies may nest
DEFAULT_MESSAGE_ESCAPE_FACTOR = 6  # a message body's JSON may be this many times its data (\u0000 for one character)
DEFAULT_MESSAGE_ENVELOPE_BYTES = 64 * 1024  # what a Celery message adds around its arguments
DEFAULT_WAIT_SWEEP_LIMIT = 500

# Composition
DEFAULT_MAX_DEPTH = 10
DEFAULT_MAX_FOREACH_ITEMS = 100_000  # items one foreach may expand to: each is a row, inserted in one transaction
DEFAULT_MAX_CHAIN_DEPTH = 10
DEFAULT_MAX_TRANSITIONS = 100
DEFAULT_SERVE_HOST = "127.0.0.1"
DEFAULT_SERVE_PORT = 8080
DEFAULT_BODY_DRAIN_BYTES = 16 * 1024 * 1024  # of a body refused as too large, read (and dropped) before the 413
DEFAULT_METRICS_CACHE_S = 2.0  # a scrape within this of the last one gets the same figures
DEFAULT_FLOWER_ADDRESS = "127.0.0.1"  # Flower's own default is every interface
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})  # where `serve` may bind with no API token configured
DEFAULT_SHUTDOWN_GRACE_S = 5  # `serve` stopping: how long open requests (event streams) may take to end

# Live updates (server-sent events)
DEFAULT_LIVE_POLL_S = 0.25  # how often the server reads the event log for changed runs (one query)
DEFAULT_LIVE_PING_S = 15.0  # a `: ping` comment on a quiet stream
DEFAULT_LIVE_QUEUE = 256  # events a stream may fall behind before it is dropped (the client reconnects)
DEFAULT_LIVE_RECONNECT_S = (0.2, 10.0)  # the listener's backoff after its connection drops: first, longest
DEFAULT_LIVE_CHECK_S = 30.0  # a quiet listener connection is checked this often
DEFAULT_LIVE_STATUSES_KEPT = 10_000  # runs whose last status the list stream remembers
DEFAULT_LIVE_LOOK_BACK_S = 10.0  # each read of the event log looks again this far back (late commits)
DEFAULT_LIVE_READ_RETRY_S = 1.0  # the run list could not be read: again after this

# Schedules
DEFAULT_BEAT_POLL_S = 1.0  # how often beat reads the schedules from the state store
DEFAULT_SCHEDULE_GRACE_S = 60.0  # a tick seen later than this was missed: catchup decides
DEFAULT_SCHEDULE_FIRES_KEPT_S = 7 * 86400.0  # how long a schedule's record of each tick is kept

# The audit trail
DEFAULT_SERVICE_ACTOR = "service"  # the actor of a Celery message or a client call that names none
DEFAULT_AUDIT_LIST_LIMIT = 50
DEFAULT_AUDIT_CHUNK = 1000  # records read per transaction when the chain is walked


class Settings(BaseSettings):
    """Configuration from ``ORCHESTRATOR_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str | None = None
    task_modules: str = ""
    queue: str = DEFAULT_QUEUE
    reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S
    reconcile_stale_s: float = DEFAULT_RECONCILE_STALE_S
    poison_limit: int = DEFAULT_POISON_LIMIT
    visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S
    max_countdown_s: float = DEFAULT_MAX_COUNTDOWN_S
    lease_s: float = DEFAULT_LEASE_S
    local_steps: int = Field(DEFAULT_LOCAL_STEPS, ge=0)
    local_budget_s: float = Field(DEFAULT_LOCAL_BUDGET_S, ge=0)
    actor: str | None = None
    signal_ttl: str = DEFAULT_SIGNAL_TTL
    max_depth: int = DEFAULT_MAX_DEPTH
    artifact_root: str = ""  # where gate artifacts are looked up; empty: the working directory
    max_chain_depth: int = DEFAULT_MAX_CHAIN_DEPTH
    max_foreach_items: int = Field(DEFAULT_MAX_FOREACH_ITEMS, ge=1)
    max_payload: str = str(DEFAULT_MAX_PAYLOAD_BYTES)
    beat_poll_s: float = DEFAULT_BEAT_POLL_S
    schedule_grace_s: float = DEFAULT_SCHEDULE_GRACE_S
    api_tokens: str = ""  # name:role:token,... for `orchestrator serve`
    audit_key: str | None = None  # when set, each audit record's hash is an HMAC-SHA256 with this key
    secret_key: SecretStr | None = None  # the Fernet key of the secrets table: never shown in a repr or a log
    live_notify: bool = False  # PostgreSQL: the event log's trigger NOTIFYs, and `serve` LISTENs (else it polls)
    http_allow: str = ""  # hosts and CIDRs the HTTP step may reach though they are link-local or metadata
    # No setting may be named secrets_*: ORCHESTRATOR_SECRETS_<NAME> is a secret's variable.

    @property
    def signal_ttl_s(self) -> float:
        from orchestrator.definition.duration import parse_duration

        return parse_duration(self.signal_ttl)

    @property
    def secret_key_text(self) -> str | None:
        return self.secret_key.get_secret_value() if self.secret_key is not None else None

    @property
    def max_payload_bytes(self) -> int:
        """``ORCHESTRATOR_MAX_PAYLOAD``: bytes, or with a unit (``512KiB``, ``1MiB``, ``2MB``)."""
        return parse_size(self.max_payload)

    @property
    def default_actor(self) -> str:
        """Who a command acts as: ``ORCHESTRATOR_ACTOR``, else the OS user."""
        if self.actor:
            return self.actor
        import getpass

        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return "unknown"

    @property
    def countdown_limit(self) -> float:
        """The longest delay a message may carry; longer waits are held in the database, so no
        message ever sits unacknowledged past the broker's visibility timeout."""
        return min(self.max_countdown_s, self.visibility_timeout_s / 2)

    @property
    def task_module_list(self) -> list[str]:
        return [m.strip() for m in self.task_modules.split(",") if m.strip()]

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: the CLI then runs a worker in-process."""
        return not self.broker_url


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    import re

    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size {text!r}: use bytes, or e.g. 512KiB, 1MiB, 2MB")
    return int(match.group(1)) * _SIZE_UNITS[unit]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings; a variable that does not parse is a usage error naming it (exit 2), not a traceback."""
    from pydantic import ValidationError

    from orchestrator.errors import UsageError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "ORCHESTRATOR_" + str(first["loc"][0]).upper() if first["loc"] else "an ORCHESTRATOR_ variable"
        raise UsageError(f"{name}: {first['msg']} (got {str(first.get('input'))[:80]!r})") from None
