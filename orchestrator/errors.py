"""One error tree for the whole orchestrator.

Each exception's docstring is its default message; each layer has a sub-root, so callers catch
exactly the layer they can handle. ``exit_code`` is what the CLI exits with when the error
reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class OrchestratorError(Exception):
    """The orchestrator failed."""

    exit_code = 1
    fields: Mapping[str, str] = {}

    def __init__(self, message: str | None = None, fields: Mapping[str, str] | None = None) -> None:
        """``fields``: the CLI options the message names (``--step``), each with what the HTTP
        API's request calls it (``step``), for ``api_message``."""
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())
        if fields:
            self.fields = dict(fields)

    @property
    def message(self) -> str:
        return str(self.args[0])

    @property
    def api_message(self) -> str:
        """The message as the HTTP API answers it: the options it names as the JSON fields
        (the CLI's message, ``message``, is unchanged)."""
        text = self.message
        for option in sorted(self.fields, key=len, reverse=True):
            text = text.replace(option, self.fields[option])
        return text


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding of validation, located as precisely as the source allows."""

    message: str
    source: str | None = None
    line: int | None = None
    step: str | None = None
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = self.source or "<workflow>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        step = f" step '{self.step}':" if self.step else ""
        label = "" if self.severity is Severity.ERROR else " warning:"
        return f"{where}:{label}{step} {self.message}"


class DefinitionError(OrchestratorError):
    """The workflow definition is invalid."""

    exit_code = 2


class InvalidDefinition(DefinitionError):
    """The workflow definition has errors."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        errors = [p for p in self.problems if p.severity is Severity.ERROR]
        first = str(errors[0]) if errors else "invalid definition"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


class ExpressionError(DefinitionError):
    """The expression is invalid."""


class EvaluationError(OrchestratorError):
    """An expression could not be evaluated against the run's data."""


class InputsError(OrchestratorError):
    """The run's inputs do not match the workflow's inputs schema."""

    exit_code = 2


class UsageError(OrchestratorError):
    """The command was used wrongly."""

    exit_code = 2


class NotFound(OrchestratorError):
    """No such object."""

    exit_code = 2


SHOWN_CHARS = 100


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A user-supplied name or id as a message quotes it: at most ``limit`` characters, with an
    ellipsis (a 10 MB workflow name must not become a 10 MB log line)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class StateStoreError(OrchestratorError):
    """The state store failed."""

    exit_code = 3


class StoreUnreachable(StateStoreError):
    """The state store cannot be reached."""


class StoreRefused(StateStoreError):
    """The state store refused the data (it is not something it can hold)."""


class BrokerError(OrchestratorError):
    """The broker failed."""

    exit_code = 3


class BrokerUnreachable(BrokerError):
    """The broker cannot be reached."""


class StepError(OrchestratorError):
    """A step failed."""

    retryable = True  # False: the same attempt would fail the same way; the retry policy is not asked


class TaskNotFound(StepError):
    """The step's task cannot be resolved."""

    retryable = False


class TaskNotAllowed(TaskNotFound):
    """The step's task is outside ORCHESTRATOR_TASK_MODULES and the built-in steps."""


class OutputNotSerialisable(StepError):
    """The step returned a value that is not JSON-serialisable."""

    retryable = False


class OutputNotStorable(StepError):
    """The state store refused the step's output."""

    retryable = False


class WorkerLost(StepError):
    """The worker running the step was lost too many times (a poison message)."""

    retryable = False


class WaitTimeout(StepError):
    """The step waited longer than its timeout."""


class ApprovalRejected(StepError):
    """The approval was rejected (or timed out with on_timeout: reject)."""

    retryable = False


class ChildRunFailed(StepError):
    """The sub-workflow's child run failed or was cancelled (a retry starts a new child run)."""


class ChildRunRefused(StepError):
    """The sub-workflow's child run could not start (an unknown workflow, inputs its schema
    refuses, or nesting deeper than ORCHESTRATOR_MAX_DEPTH)."""

    retryable = False


class GateNotMet(StepError):
    """The state's exit criteria are not met (an artifact it names does not exist)."""


class NoTransition(StepError):
    """No transition of the state applies, or the run passed its max_transitions."""

    retryable = False


class SecretMissing(StepError):
    """A secret the step reads is not set."""

    retryable = False


class SecretUnreadable(StepError):
    """A stored secret cannot be decrypted with ORCHESTRATOR_SECRET_KEY."""

    retryable = False


class ValidationError(StepError):
    """A step's check failed: its inputs or output against a schema or its annotations, or an assert."""

    retryable = False


class PayloadTooLarge(UsageError):
    """The data is larger than ORCHESTRATOR_MAX_PAYLOAD allows."""


class InputsRefused(InputsError, UsageError):
    """The run's inputs are not data the state store accepts (too deep, not UTF-8, not JSON)."""


class InputsTooLarge(InputsError, PayloadTooLarge):
    """The run's inputs are larger than ORCHESTRATOR_MAX_PAYLOAD allows."""


class BadMessage(UsageError):
    """The message is not one this task can run."""


class Refused(UsageError):
    """The action is not allowed (a non-approver, a wrong keyword, a step in the wrong state)."""


class CircuitOpenError(OrchestratorError):
    """The circuit breaker is open: no call was made."""


class AuditChainBroken(OrchestratorError):
    """The audit trail does not verify: a record was changed, removed or inserted."""


class DeadLetterError(OrchestratorError):
    """The dead-letter operation failed."""

    exit_code = 2


class DeadLetterNotFound(DeadLetterError, NotFound):
    """No such dead-letter entry."""


class DeadLetterRefused(DeadLetterError, Refused):
    """The dead-letter entry cannot be replayed or discarded in its state."""
