"""The workflow model: what a YAML/JSON file or the Python builder describes.

Values are frozen pydantic models with ``extra="forbid"``: a typo in a key is an error, never a
silently ignored option. Expressions stay text here; ``plan.build_plan`` compiles them once.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from orchestrator.definition.duration import DURATION_PATTERN, Duration, format_duration
from orchestrator.schedule.arithmetic import CATCHUPS, OVERLAPS
from orchestrator.settings import (
    DEFAULT_BREAKER_FAIL_MAX,
    DEFAULT_BREAKER_RESET_TIMEOUT_S,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_TRANSITIONS,
    DEFAULT_RETRY_DELAY_S,
    DEFAULT_RETRY_MAX_DELAY_S,
)

NAME_PATTERN = r"^[a-z0-9_.-]+$"
STEP_ID_PATTERN = r"^[a-z0-9_-]+$"
TASK_PATTERN = r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$"
WORKFLOW_REF_PATTERN = r"^[a-z0-9_.-]+(@[A-Za-z0-9_.-]+)?$"

StepId = Annotated[str, Strict(), StringConstraints(pattern=STEP_ID_PATTERN)]
WorkflowName = Annotated[str, Strict(), StringConstraints(pattern=NAME_PATTERN)]
TaskRef = Annotated[str, Strict(), StringConstraints(pattern=TASK_PATTERN)]
WorkflowRef = Annotated[str, Strict(), StringConstraints(pattern=WORKFLOW_REF_PATTERN, max_length=300)]
ExceptionName = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Za-z_][\w.]*$")]


def _one_or_many(value: Any) -> Any:
    """``needs: fetch`` means ``needs: [fetch]``, as in GitHub Actions."""
    return [value] if isinstance(value, str) else value


class Trigger(StrEnum):
    ALL_SUCCEEDED = "all_succeeded"
    ANY_SUCCEEDED = "any_succeeded"
    ALL_DONE = "all_done"


class Backoff(StrEnum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


@dataclass(frozen=True)
class RetryDecision:
    """A retry policy's answer: whether to try again, after how many seconds, and why."""

    retry: bool
    delay: float
    reason: str


def exception_names(error: BaseException) -> set[str]:
    """Every name a policy may use for ``error``: plain and dotted, for its class and bases."""
    names: set[str] = set()
    for cls in type(error).__mro__:
        names.add(cls.__name__)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return names


class RetryPolicy(_Value):
    """How often and how soon a failed attempt is tried again."""

    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1)
    backoff: Backoff = Backoff.EXPONENTIAL
    delay: Duration = DEFAULT_RETRY_DELAY_S
    max_delay: Duration = DEFAULT_RETRY_MAX_DELAY_S
    jitter: bool = True
    retry_on: tuple[ExceptionName, ...] = ()
    no_retry_on: tuple[ExceptionName, ...] = ()

    @model_validator(mode="after")
    def _sensible(self) -> RetryPolicy:
        if self.max_delay < self.delay:
            raise ValueError(
                f"max_delay ({format_duration(self.max_delay)}) is shorter than delay ({format_duration(self.delay)})"
            )
        both = set(self.retry_on) & set(self.no_retry_on)
        if both:
            raise ValueError(f"{', '.join(sorted(both))} is in both retry_on and no_retry_on")
        return self

    def decide(self, attempt: int, error: BaseException, rand: Callable[[], float] = random.random) -> RetryDecision:
        """After failed attempt number ``attempt``: retry, and after how long?"""
        names = exception_names(error)
        if self.no_retry_on and names & set(self.no_retry_on):
            return RetryDecision(False, 0.0, f"{type(error).__name__} is in no_retry_on")
        if self.retry_on and not names & set(self.retry_on):
            return RetryDecision(False, 0.0, f"{type(error).__name__} is not in retry_on")
        if attempt >= self.max_attempts:
            return RetryDecision(False, 0.0, f"{attempt} of {self.max_attempts} attempts spent")
        # The exponent is capped: past 2**62 every delay is max_delay anyway, and 2**(n-1) for a
        # large attempt number would overflow a float.
        delay = self.delay if self.backoff is Backoff.FIXED else self.delay * 2 ** min(attempt - 1, 62)
        delay = min(delay, self.max_delay)
        if self.jitter:
            delay = delay / 2 + rand() * delay / 2
        return RetryDecision(True, delay, f"attempt {attempt + 1} of {self.max_attempts}")

    def merged_over(self, base: RetryPolicy) -> RetryPolicy:
        """This policy's explicitly set keys over ``base``'s (a step over the defaults)."""
        data = base.model_dump()
        data.update(self.model_dump(include=self.model_fields_set))
        return RetryPolicy.model_validate(data)


class BreakerConfig(_Value):
    """A named circuit breaker, shared by every step that names it."""

    fail_max: int = Field(DEFAULT_BREAKER_FAIL_MAX, ge=1)
    reset_timeout: Duration = DEFAULT_BREAKER_RESET_TIMEOUT_S
    exclude: tuple[ExceptionName, ...] = ()


class Defaults(_Value):
    """Options every step inherits unless it sets its own."""

    retry: RetryPolicy | None = None
    timeout: Duration | None = None


class OnTimeout(StrEnum):
    REJECT = "reject"
    APPROVE = "approve"


EVENT_PATTERN = r"^[A-Za-z0-9_.:/-]{1,200}$"
EventName = Annotated[str, Strict(), StringConstraints(pattern=EVENT_PATTERN)]


class Wait(_Value):
    """A wait that holds no worker: for an external event (by name and key), or a durable timer."""

    event: EventName | None = None
    key: Annotated[str, Strict()] | int | None = Field(None, description="the correlation key; may be an expression")
    timeout: Duration | None = Field(None, gt=0)
    for_: Duration | None = Field(None, alias="for")
    until: Annotated[str, Strict()] | None = Field(None, description="an ISO 8601 time; may be an expression")

    @model_validator(mode="after")
    def _one_wait(self) -> Wait:
        given = [k for k, v in (("event", self.event), ("for", self.for_), ("until", self.until)) if v is not None]
        if len(given) != 1:
            raise ValueError(
                "a wait names exactly one of event, for or until"
                + (f" (it names {' and '.join(given)})" if given else "")
            )
        if self.event is None and (self.key is not None or self.timeout is not None):
            raise ValueError("key and timeout apply only to a wait for an event")
        return self

    @property
    def form(self) -> str:
        return "event" if self.event is not None else "for" if self.for_ is not None else "until"


class Approval(_Value):
    """A decision by people: who may decide, how many must approve, and what happens on timeout."""

    approvers: tuple[Annotated[str, Strict(), StringConstraints(min_length=1, max_length=200)], ...] = ()
    required: int = Field(1, ge=1)
    keyword: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=200)] | None = None
    timeout: Duration | None = Field(None, gt=0)
    on_timeout: OnTimeout = OnTimeout.REJECT
    inputs: dict[str, Any] | None = Field(None, description="JSON Schema of the data an approver adds")

    @model_validator(mode="after")
    def _reachable(self) -> Approval:
        if len(set(self.approvers)) != len(self.approvers):
            raise ValueError("an approver is named twice")
        if self.approvers and self.required > len(self.approvers):
            raise ValueError(f"required is {self.required} but only {len(self.approvers)} approver(s) are named")
        return self


class Compensate(_Value):
    """What undoes a step when its run fails after it succeeded; ``output`` in ``with`` is the
    compensated step's output."""

    task: TaskRef
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    retry: RetryPolicy | None = None
    timeout: Duration | None = Field(None, gt=0)


SCHEMA_REF_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
SchemaRef = Annotated[str, Strict(), StringConstraints(pattern=SCHEMA_REF_PATTERN)]
Schema = dict[str, Any] | SchemaRef  # a JSON Schema, or "module:PydanticModel"


class Cache(_Value):
    """A task step's output kept in the state store and reused while its key and ``ttl`` hold."""

    key: Annotated[str, Strict()] | None = Field(
        None, description="an expression; default: the task, its rendered inputs and a hash of its source"
    )
    ttl: Duration | None = Field(None, gt=0, description="how long an entry is reused; default: no expiry")


STEP_KINDS = ("task", "workflow", "wait", "approval")
_TASK_ONLY = ("input_schema", "output_schema", "assert", "cache")  # checks and caching wrap a task's call
_TAKES_INPUTS = ("task", "workflow")  # the kinds that take ``with`` and ``foreach``


def split_ref(ref: str) -> tuple[str, str | None]:
    """``name@version`` -> (name, version); ``name`` -> (name, None): the active version."""
    name, _, version = ref.partition("@")
    return name, version or None


class Step(_Value):
    """One node of the DAG: what it does (a task, a sub-workflow, a wait or an approval), and when it runs."""

    task: TaskRef | None = Field(None, description='"module:function", or a registered Celery task name')
    workflow: WorkflowRef | None = Field(
        None, description="a registered workflow (NAME, or NAME@VERSION) to run as a child run; with = its inputs"
    )
    wait: Wait | None = None
    approval: Approval | None = None
    description: str | None = None
    needs: Annotated[
        tuple[StepId, ...],
        BeforeValidator(_one_or_many),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": STEP_ID_PATTERN},
                    {"type": "array", "items": {"type": "string", "pattern": STEP_ID_PATTERN}},
                ],
                "description": "the steps this one needs: a step id, or a list of them",
            }
        ),
    ] = ()
    trigger: Trigger = Trigger.ALL_SUCCEEDED
    if_: bool | str | None = Field(None, alias="if")
    foreach: str | list[Any] | None = None
    concurrency: int | None = Field(None, ge=1)
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    retry: RetryPolicy | None = None
    timeout: Duration | None = Field(None, gt=0)
    breaker: str | None = None
    compensate: Compensate | None = None
    input_schema: Schema | None = Field(None, description='JSON Schema of the rendered with, or "module:Model"')
    output_schema: Schema | None = Field(None, description='JSON Schema of the output, or "module:Model"')
    assert_: Annotated[
        tuple[Annotated[str, Strict()], ...],
        BeforeValidator(_one_or_many),
        WithJsonSchema(
            {
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                "description": "expressions over output, inputs and upstream steps that must all hold",
            }
        ),
    ] = Field((), alias="assert")
    cache: Cache | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if not kinds and getattr(self, "end", None) is not None:
            return self  # an end state may do nothing but end the run
        if len(kinds) != 1:
            named = f" (it has {' and '.join(kinds)})" if kinds else ""
            raise ValueError(f"a step does exactly one of {', '.join(STEP_KINDS)}{named}")
        if self.task is None:
            takes_inputs = kinds[0] in _TAKES_INPUTS
            extra = [
                (key, set_, where)
                for key, set_, where in (
                    ("with", bool(self.with_) and not takes_inputs, "a task or workflow step"),
                    ("foreach", self.foreach is not None and not takes_inputs, "a task or workflow step"),
                    ("breaker", self.breaker is not None, "a task step"),
                    ("timeout", self.timeout is not None, "a task step"),
                )
                if set_
            ]
            extra += [(key, True, "a task step") for key in _TASK_ONLY if key in self.model_fields_set_by_alias()]
            if extra:
                key, _, where = extra[0]
                raise ValueError(f"{key} applies only to {where}, not to a {kinds[0]} step")
        return self

    def model_fields_set_by_alias(self) -> set[str]:
        fields = type(self).model_fields
        return {fields[name].alias or name for name in self.model_fields_set}

    @property
    def kind(self) -> str:
        """task, workflow, wait or approval; ``end`` for an end state that does no work."""
        return next((k for k in STEP_KINDS if getattr(self, k) is not None), "end")

    @model_validator(mode="after")
    def _concurrency_needs_foreach(self) -> Step:
        if self.concurrency is not None and self.foreach is None:
            raise ValueError("concurrency applies only to a foreach step")
        return self


class EndStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Transition(_Value):
    """Where a state goes next: ``to``, when its ``if`` holds (none: the default)."""

    to: StepId
    if_: bool | str | None = Field(None, alias="if")


class Gate(_Value):
    """Exit criteria checked when a state's work has succeeded: these files must exist."""

    artifacts: tuple[Annotated[str, Strict(), StringConstraints(min_length=1, max_length=1000)], ...] = Field(
        min_length=1
    )


_NOT_IN_STATES = ("needs", "trigger", "if", "foreach", "concurrency", "compensate")


class State(Step):
    """A state of a state machine: a step (any kind, or none for an end state) that chooses the
    next state with ``next`` or ``transitions``, or ends the run with ``end``."""

    next: StepId | None = None
    transitions: tuple[Transition, ...] = ()
    end: EndStatus | None = None
    gate: Gate | None = None

    @model_validator(mode="after")
    def _a_state(self) -> State:
        for key in _NOT_IN_STATES:
            field = "if_" if key == "if" else key
            if field in self.model_fields_set:
                raise ValueError(f"{key} does not apply to a state: states follow their transitions")
        ways = [k for k, v in (("next", self.next), ("transitions", self.transitions), ("end", self.end)) if v]
        if len(ways) > 1:
            raise ValueError(f"a state names one of next, transitions or end (it names {' and '.join(ways)})")
        if self.gate is not None and self.kind == "end":
            raise ValueError("gate applies to a state that does work (task, workflow, wait or approval)")
        return self


class On(_Value):
    """What starts a run of this workflow by itself: another workflow's run ending, or an event."""

    after: WorkflowName | None = None
    event: EventName | None = None
    status: tuple[Literal["succeeded", "failed", "cancelled"], ...] = Field(("succeeded",), min_length=1)
    if_: bool | str | None = Field(None, alias="if")
    inputs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> On:
        if (self.after is None) == (self.event is None):
            raise ValueError("an on entry names exactly one of after or event")
        if self.event is not None and "status" in self.model_fields_set:
            raise ValueError("status applies only to an after entry")
        return self

    @property
    def source(self) -> tuple[str, str]:
        """('after', WORKFLOW) or ('event', EVENT)."""
        return ("after", self.after) if self.after is not None else ("event", self.event or "")


# Strings the validation checks (naming the schedule when one is wrong); the JSON Schema lists them.
CatchupName = Annotated[
    str,
    Strict(),
    WithJsonSchema({"type": "string", "enum": list(CATCHUPS), "description": "after downtime: none, latest or all"}),
]
OverlapName = Annotated[
    str,
    Strict(),
    WithJsonSchema({"type": "string", "enum": list(OVERLAPS), "description": "the previous run still active"}),
]


class Schedule(_Value):
    """A cron or interval schedule that starts runs of this workflow: checked as a whole (cron or
    every, time zone, catchup, overlap) by validation, which names the schedule in each problem."""

    name: Annotated[str, Strict(), StringConstraints(pattern=NAME_PATTERN, max_length=200)]
    cron: Annotated[str, Strict()] | None = Field(None, description='a cron expression, e.g. "0 6 * * 1-5"')
    every: Annotated[
        str | float | None,
        WithJsonSchema(
            {
                "anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"type": "number", "minimum": 1}],
                "description": "an interval instead of cron: 30s, 5m, 1h (at least 1s)",
            }
        ),
    ] = None
    timezone: Annotated[str, Strict()] = Field("UTC", description="an IANA time zone for cron, e.g. Europe/Paris")
    inputs: dict[str, Any] = Field(default_factory=dict, description="the run's inputs; may read schedule.*")
    catchup: CatchupName = "latest"
    overlap: OverlapName = "skip"


class Workflow(_Value):
    """A whole workflow definition."""

    name: WorkflowName
    description: str | None = None
    inputs: dict[str, Any] | None = Field(None, description="JSON Schema of the run's inputs")
    outputs: dict[str, Any] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    steps: dict[StepId, Step] = Field(default_factory=dict)
    states: dict[StepId, State] = Field(default_factory=dict)
    initial: StepId | None = None
    max_transitions: int = Field(DEFAULT_MAX_TRANSITIONS, ge=1)
    breakers: dict[Annotated[str, Strict()], BreakerConfig] = Field(default_factory=dict)
    on: tuple[On, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    compensate_on_cancel: bool = False

    @model_validator(mode="after")
    def _steps_or_states(self) -> Workflow:
        if bool(self.steps) == bool(self.states):
            both = " (it has both)" if self.steps else ""
            raise ValueError(f"a workflow has steps (a DAG) or states (a state machine), one of them{both}")
        if not self.states and ({"initial", "max_transitions"} & self.model_fields_set):
            raise ValueError("initial and max_transitions apply only to a workflow with states")
        return self

    @property
    def is_machine(self) -> bool:
        return bool(self.states)

    @property
    def nodes(self) -> Mapping[str, Step]:
        """Its steps, or its states."""
        return self.states or self.steps

    def snapshot(self) -> dict[str, Any]:
        """The canonical JSON form, stored with every run; loading it gives an equal model."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    def content_hash(self) -> str:
        """A stable hash of the definition: equal models hash equal, whatever their source."""
        canonical = json.dumps(self.snapshot(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the mapping at ``loc`` (a pydantic error location), for hints."""
    model: type[BaseModel] | None = Workflow
    path = list(loc)
    while path and model is not None:
        head = path.pop(0)
        if model is Workflow and head in ("steps", "states", "breakers") and path:
            path.pop(0)
            kinds: dict[str, type[BaseModel]] = {"steps": Step, "states": State, "breakers": BreakerConfig}
            model = kinds[head]
        elif head in ("retry",):
            model = RetryPolicy
        elif head == "wait":
            model = Wait
        elif head == "approval":
            model = Approval
        elif head == "gate":
            model = Gate
        elif head == "compensate":
            model = Compensate
        elif head == "cache":
            model = Cache
        elif model is State and head == "transitions" and path:
            path.pop(0)
            model = Transition
        elif head == "defaults":
            model = Defaults
        elif model is Workflow and head == "on" and path:
            path.pop(0)
            model = On
        elif model is Workflow and head == "schedules" and path:
            path.pop(0)
            model = Schedule
        else:
            model = None
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]
