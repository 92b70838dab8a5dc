"""The one table of model uses: how the trained model will be released decides which Freesound
``gen_ai_preference`` values admit a recording (``[policy].model_use``).

Freesound's four values (MTG/freesound ``freesound/settings.py`` ``AI_PREF_*``; the wording is the
account settings' own, ``accounts/models.py`` ``AIPreference``):

* ``no-additional-preferences``: "no additional statement, your sounds remain subject to the
  Creative Commons license terms selected for them";
* ``open-source-models``: train Gen AI models "only when the trained models are released as Open
  Source Models and made freely available to the public";
* ``noncommercial-open-source-models``: the same, and "not trained in a commercial setting nor used
  for commercial purposes";
* ``no-gen-ai``: "your sounds not be used for the purpose of training Gen AI models".

So a preference is a condition on the release of the model, which only the person training it can
state; ``[policy].model_use`` is that statement, every release records it and its attribution report
repeats it. The gate reads admission from ``admits`` below and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass

NO_ADDITIONAL_PREFERENCES = "no-additional-preferences"
OPEN_SOURCE_MODELS = "open-source-models"
NONCOMMERCIAL_OPEN_SOURCE_MODELS = "noncommercial-open-source-models"
NO_GEN_AI = "no-gen-ai"
# Freesound's values, exactly; any other value is refused as unknown (it may be a new, stricter one)
GEN_AI_PREFERENCES = (NO_ADDITIONAL_PREFERENCES, OPEN_SOURCE_MODELS, NONCOMMERCIAL_OPEN_SOURCE_MODELS, NO_GEN_AI)


@dataclass(frozen=True)
class ModelUse:
    name: str                  # the [policy].model_use value, recorded with every gate decision and release
    summary: str               # what the person declaring it promises, as the attribution report states it
    admits: frozenset          # the gen_ai_preference values whose recordings this use may train on


# Why each row admits what it does:
#  * no-gen-ai is an opt-out of every generative model: no row admits it.
#  * no-additional-preferences adds nothing to the CC license the gate already checked: every row admits it.
#  * open-source-models asks that the model be released as an open model, freely available: only the
#    open-weights rows. A non-commercial open release is still an open, freely available one (Freesound's
#    own data packs treat it so: sounds/management/commands/create_data_pack.py, condition_gen_ai_allowed).
#  * noncommercial-open-source-models also asks for no commercial training or use: open-weights-noncommercial only.
#  * research-only and closed-weights release no weights, so neither meets an "only when released openly"
#    condition, however non-commercial the research is: a model that is never released is not an open
#    model, and a later release would be a new use that needs new gate decisions. Both admit only
#    no-additional-preferences, the fewest of any use; research-only, the narrower promise (no release and
#    no commercial use), is the default, so a configuration that says nothing admits the least.
MODEL_USES: tuple[ModelUse, ...] = (
    ModelUse("research-only",
             "research only: the weights are never released and the model is not used commercially",
             frozenset({NO_ADDITIONAL_PREFERENCES})),
    ModelUse("closed-weights",
             "closed weights: the weights are not released (kept private, or behind a service or product); "
             "commercial use allowed",
             frozenset({NO_ADDITIONAL_PREFERENCES})),
    ModelUse("open-weights-noncommercial",
             "open weights, non-commercial: the weights are released freely to the public for non-commercial "
             "use only, and the model is neither trained in a commercial setting nor used commercially",
             frozenset({NO_ADDITIONAL_PREFERENCES, OPEN_SOURCE_MODELS, NONCOMMERCIAL_OPEN_SOURCE_MODELS})),
    ModelUse("open-weights-commercial",
             "open weights, commercial use allowed: the weights are released freely to the public under terms "
             "that allow commercial use",
             frozenset({NO_ADDITIONAL_PREFERENCES, OPEN_SOURCE_MODELS})),
)
BY_NAME: dict[str, ModelUse] = {row.name: row for row in MODEL_USES}
DEFAULT_MODEL_USE = "research-only"

# [policy] keys that no longer exist, and what replaced them. refused_gen_ai_preferences is not mapped
# to a model use: it said which values to refuse, not how the model will be released, and its default
# (refuse only no-gen-ai) would read as "open weights, non-commercial", a promise nobody made.
RETIRED_POLICY_KEYS = {
    "refused_gen_ai_preferences": (
        "removed: which gen_ai_preference values admit a recording now follows from how the model will be "
        "released; remove this key and set [policy].model_use to one of "
        + ", ".join(row.name for row in MODEL_USES) + f" (default {DEFAULT_MODEL_USE}; sao/licensing/model_use.py "
        "says what each admits)"),
}


def model_use_problem(value: object) -> str | None:
    """What is wrong with a model use from outside (config, code), or None: exactly one of the table's names."""
    if isinstance(value, str) and value in BY_NAME:
        return None
    return f"{value!r} is not one of {', '.join(row.name for row in MODEL_USES)}"


def model_use(name: str) -> ModelUse:
    """The table's row for NAME; ValueError naming the known uses otherwise."""
    problem = model_use_problem(name)
    if problem:
        raise ValueError(f"model_use: {problem}")
    return BY_NAME[name]


def admits(name: str, preference: str) -> bool:
    """Whether model use NAME may train on a recording whose gen_ai_preference is PREFERENCE (exact value)."""
    return preference in model_use(name).admits
