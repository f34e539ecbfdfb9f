"""The rules an action went through, in the order ``decision.decide`` applies them, and how each ended.

Rebuilt from what is stored of a decision (its status, reason code, cap and review), so that an
auditor reads the same account of every action, however old: the first rule that refused or held it
names the reason, the rules after it were not reached, and a credit cut by a cap says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.actions import ActionStatus, Reason
from domain.fraud import Refusal

#: The rules of a stored decision, in order (parsing and the link come first; refused there, a
#: record is not stored and so has no trail).
RULES = ("record", "account_link", "plausibility", "overlap", "methodology", "volume", "caps", "review", "reversal")

_RULE_OF_REASON = {
    **{r.value: "plausibility" for r in Refusal if r not in (Refusal.OVERLAPPING_TRIP, Refusal.SAME_TRIP_OTHER_PARTNER)},
    Refusal.OVERLAPPING_TRIP.value: "overlap",
    Refusal.SAME_TRIP_OTHER_PARTNER.value: "overlap",
    Reason.UNKNOWN_CATEGORY.value: "methodology",
    Reason.NO_METHODOLOGY.value: "methodology",
    Reason.NO_REDUCTION.value: "methodology",
    Reason.PARTNER_VOLUME_ANOMALY.value: "volume",
    Reason.REJECTED_BY_OPERATOR.value: "review",
}


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    #: passed, refused, held, cut, approved, rejected, reversed, or not_reached
    outcome: str
    detail: str | None = None


def rule_of(reason: str) -> str:
    """The rule a reason code comes from; a methodology's own exclusions (``factor_not_sourced``…) are its."""
    return _RULE_OF_REASON.get(reason, "methodology")


def trail(
    status: str, reason: str | None, cap_reason: str | None, points_withheld: int, reviewed: str | None
) -> list[RuleOutcome]:
    """How each rule ended for a stored action (``reviewed``: the operator's decision, if it was held)."""
    stopped_at = None
    if status == ActionStatus.REJECTED and reason and reason != Reason.REJECTED_BY_OPERATOR:
        stopped_at = rule_of(reason)
    outcomes = [RuleOutcome("record", "passed"), RuleOutcome("account_link", "passed")]
    for rule in ("plausibility", "overlap", "methodology"):
        if stopped_at is None:
            outcomes.append(RuleOutcome(rule, "passed"))
        elif stopped_at == rule:
            outcomes.append(RuleOutcome(rule, "refused", reason))
        else:
            outcomes.append(RuleOutcome(rule, "passed" if RULES.index(rule) < RULES.index(stopped_at) else "not_reached"))
    held = reviewed is not None or status == ActionStatus.PENDING_REVIEW
    if stopped_at is not None:
        outcomes += [RuleOutcome(rule, "not_reached") for rule in ("volume", "caps")]
    elif held:
        outcomes.append(RuleOutcome("volume", "held", Reason.PARTNER_VOLUME_ANOMALY.value))
    else:
        outcomes.append(RuleOutcome("volume", "passed"))
    if stopped_at is None and status in (ActionStatus.CREDITED, ActionStatus.REVERSED):
        cut = RuleOutcome("caps", "cut", f"{points_withheld} points withheld: {cap_reason}")
        outcomes.append(cut if points_withheld else RuleOutcome("caps", "passed"))
    elif stopped_at is None:
        outcomes.append(RuleOutcome("caps", "not_reached"))
    if reviewed is not None:
        outcomes.append(RuleOutcome("review", "approved" if reviewed == "approve" else "rejected"))
    if status == ActionStatus.REVERSED:
        outcomes.append(RuleOutcome("reversal", "reversed"))
    return outcomes
