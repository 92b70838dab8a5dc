"""The license gate: a pure function from what a source says about an item to a verdict.

Policy (paper section 3, plus one rule the paper could not have): keep only CC0 1.0,
CC-BY 3.0/4.0 and CC Sampling+ 1.0; reject everything else with a reason that names the
license and shows the raw value; reject Freesound items whose author opted out of generative-AI
training (``gen_ai_preference``) or asked for a release the declared model use does not make (the
table in sao.licensing.model_use), and those whose preference is not one of Freesound's values.
Exact matching only (sao.licensing.canonical): "Attribution-NonCommercial" starts with
"Attribution" and must never pass. The admitted licenses are the table in sao.licensing.table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .canonical import UNKNOWN, canonical_license, family
from .model_use import DEFAULT_MODEL_USE, GEN_AI_PREFERENCES, NO_GEN_AI, model_use
from .table import ALLOWED_LICENSES

_SHOWN_CHARS = 100


def shown(value: object) -> str:
    """A raw value for a reason: repr'd (quotes, escapes of newlines and control characters), truncated."""
    r = repr(value)
    return r if len(r) <= _SHOWN_CHARS else r[:_SHOWN_CHARS - 3] + "..."


def normalise_gen_ai_preference(value: object) -> str | None:
    """A gen_ai_preference string with case, surrounding blanks and ``_``/space for ``-`` normalised
    (``No_Gen_AI`` is ``no-gen-ai``); None for a non-string, which no normalising makes a known value."""
    if not isinstance(value, str):
        return None
    return value.strip().lower().replace("_", "-").replace(" ", "-")


@dataclass(frozen=True)
class LicensePolicy:
    allowed: frozenset = ALLOWED_LICENSES
    model_use: str = DEFAULT_MODEL_USE      # sao.licensing.model_use: which gen_ai_preference values admit

    def __post_init__(self) -> None:
        model_use(self.model_use)           # ValueError naming the known uses

    @property
    def admitted_gen_ai_preferences(self) -> frozenset:
        return model_use(self.model_use).admits

    def describe(self) -> dict:
        # every gate decision records this (details.inputs.policy): a change of model use, or of what the
        # table says it admits, makes the gate decide again, and a release can tell which use decided
        return {"allowed": sorted(self.allowed), "model_use": self.model_use,
                "admitted_gen_ai_preferences": sorted(self.admitted_gen_ai_preferences)}


@dataclass(frozen=True)
class GateResult:
    verdict: str            # "pass" or "reject"
    reason: str             # machine-countable prefix, then details: "license-not-allowed: cc-by-nc-4.0"
    canonical: str
    details: dict = field(default_factory=dict)

    @property
    def category(self) -> str:
        return self.reason.split(":", 1)[0]


def _given(value: object) -> bool:
    """The source said something: anything but None or a blank string (a number or list is said, wrongly)."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def _agree(from_title: str, from_url: str) -> bool:
    """A title and a URL name the same license: equal ids, or a version-less title ("Attribution")
    whose family is the URL's (cc-by-4.0). A title with another version disagrees."""
    return from_title == from_url or (family(from_title) == from_title and family(from_url) == from_title)


def resolve_license(url: object, title: object = None) -> tuple[str, str | None]:
    """Canonical id from a URL and/or a title (FMA gives both). Returns (canonical, problem).

    Every statement the source gives must be recognised: a URL or a title that is given but
    unknown makes the whole license unknown (the other one cannot vouch for it), and two known
    ones must agree (``problem`` then says how they disagree)."""
    has_url, has_title = _given(url), _given(title)
    from_url = canonical_license(url) if has_url else UNKNOWN
    from_title = canonical_license(title) if has_title else UNKNOWN
    if (has_url and from_url == UNKNOWN) or (has_title and from_title == UNKNOWN):
        return UNKNOWN, None
    if has_url and has_title and not _agree(from_title, from_url):
        return UNKNOWN, f"title {shown(title)} ({from_title}) and URL {shown(url)} ({from_url}) disagree"
    return (from_url if has_url else from_title), None


def license_gate(license_url: object, license_title: object = None, *, gen_ai_preference: object = None,
                 policy: LicensePolicy = LicensePolicy()) -> GateResult:
    """The verdict on one item. Every reject reason shows the raw value it judged (repr'd, truncated)."""
    has_url, has_title = _given(license_url), _given(license_title)
    if not has_url and not has_title:
        return GateResult("reject", "license-missing: the source gives no license", UNKNOWN)
    canonical, problem = resolve_license(license_url, license_title)
    if problem:
        return GateResult("reject", f"license-conflict: {problem}", canonical)
    if canonical == UNKNOWN:
        bad = [v for v, given in ((license_url, has_url), (license_title, has_title))
               if given and canonical_license(v) == UNKNOWN]
        return GateResult("reject", f"license-unknown: {shown(bad[0])} is not a recognised license", canonical)
    raw = shown(license_url if has_url else license_title)
    if canonical not in policy.allowed:
        if family(canonical) == canonical and any(family(a) == canonical for a in policy.allowed):
            return GateResult("reject", f"license-version-unknown: {raw} names {canonical} without a version",
                              canonical)
        return GateResult("reject", f"license-not-allowed: {canonical} (from {raw})", canonical)
    refusal = _gen_ai_refusal(gen_ai_preference, policy)
    if refusal:
        return GateResult("reject", refusal, canonical)
    return GateResult("pass", f"license-allowed: {canonical}", canonical)


def _gen_ai_refusal(value: object, policy: LicensePolicy) -> str | None:
    """The opt-out reason (always starting ``opt-out``: releases count these as opt-outs), or None
    when the author consents: no preference stated (None), or a known value the policy's model use admits."""
    if value is None:
        return None
    pref = normalise_gen_ai_preference(value)
    if pref not in GEN_AI_PREFERENCES:
        what = "is not a string" if pref is None else "is not a known value"
        return f"opt-out-unknown: gen_ai_preference {shown(value)} {what}"
    if pref in policy.admitted_gen_ai_preferences:          # the model-use table decides, nothing here
        return None
    # no-gen-ai refuses every use: naming the use would suggest another one could be admitted
    why = "" if pref == NO_GEN_AI else f" does not admit model use {policy.model_use}"
    return f"opt-out: gen_ai_preference={pref}{why}"
