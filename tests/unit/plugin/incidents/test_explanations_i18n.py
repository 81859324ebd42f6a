"""Explanations in the store's language: every rule and every incident type with a macro (system, POS, access, alarm,
ONVIF) has a sentence in every shipped language, and each renders with real facts (explanation_facts.json: the facts
the test suite's rules and services rendered, recorded from Explainer.render, plus the few types no test renders,
written from the code that makes them; its `source` says which)."""

from __future__ import annotations

import functools
import inspect
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import pytest

from plugin.config.loader import parse_config
from plugin.config.service import SiteConfig
from plugin.errors import ConfigError
from plugin.incidents.explain import TEMPLATES, Explainer, shipped_languages, template_name
from plugin.rules.registry import RULES

FACTS = Path(__file__).with_name("explanation_facts.json")
MACRO = re.compile(r"\{%-?\s*macro\s+(\w+)\(")
# ids an operator searches for: whatever the English sentence shows of them, every language shows too
IDS = ("camera", "zone", "door", "lane", "sink", "site", "panel", "store", "high_value_zone", "exit_zone",
       "staff_zone", "line_rule", "door_zone", "txn_id", "operator", "url", "path")  # fmt: skip
# English words that must not be left in another language's sentence (once the facts' own text is taken out)
ENGLISH = re.compile(r"\b(was|is|were|are|people|person|threshold|since|nobody|entered|reported|reports|blocked|"
                     r"receipt|camera|without|while|limit)\b")  # fmt: skip


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__datetime__"}:
            return datetime.fromisoformat(value["__datetime__"])
        return {k: _revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


CASES: dict[str, dict[str, Any]] = json.loads(FACTS.read_text(encoding="utf-8"))


@functools.cache
def _explainer(language: str) -> Explainer:
    """One per language (compiling the templates is the slow part)."""
    return Explainer("UTC", language)


def _macros(language: str) -> set[str]:
    text = (TEMPLATES / template_name(language)).read_text(encoding="utf-8")
    return {m for m in MACRO.findall(text) if not m.startswith("_")}


def _incident_rules() -> list[str]:
    """The registry's rules that raise incidents (a rule that only counts, like line_crossing, never says RuleHit)."""

    def raises(rule: type) -> bool:
        return any("RuleHit(" in inspect.getsource(c) for c in rule.__mro__ if c.__module__.startswith("plugin.rules"))

    return [r.type_key for r in RULES if raises(r)]


def test_the_shipped_languages_are_the_ones_the_config_offers() -> None:
    assert shipped_languages() == ["en", "de", "es", "fr"]
    assert set(get_args(SiteConfig.model_fields["language"].annotation)) == set(shipped_languages())
    assert parse_config({"site": {"language": "de"}}).site.language == "de"
    with pytest.raises(ConfigError, match=r"site\.language: .*'en', 'de', 'fr' or 'es'"):
        parse_config({"site": {"language": "it"}})


@pytest.mark.parametrize("language", shipped_languages())
def test_every_rule_and_incident_type_has_a_sentence(language: str) -> None:
    english = _macros("en")
    rules = _incident_rules()
    assert "loitering" in rules and "line_crossing" not in rules and len(rules) >= 12
    assert set(rules) <= english  # every rule that raises incidents has an English sentence
    for family in ("system_", "pos_", "access_", "alarm_", "onvif_", "camera_"):
        assert any(m.startswith(family) for m in english), family
    assert _macros(language) == english  # the same sentences in every language, no more, no fewer
    covered = {case["type"] for case in CASES.values()}
    assert english <= covered  # and the facts file has real facts for each


@pytest.mark.parametrize("language", shipped_languages())
@pytest.mark.parametrize("case", sorted(CASES), ids=str)
def test_each_sentence_renders_with_real_facts(language: str, case: str) -> None:
    entry = CASES[case]
    facts = _revive(entry["facts"])
    english = _explainer("en").render(entry["type"], facts)
    if "english" in entry:
        assert english == entry["english"]  # the recorded facts still fit today's English sentence
    text = _explainer(language).render(entry["type"], facts)
    assert text and "\n" not in text and "{{" not in text and "  " not in text
    if language == "en":
        return
    assert text != english
    for key in IDS:
        value = facts.get(key)
        if isinstance(value, str) and value and value in english:
            assert value in text, f"{key} {value!r} is in the English sentence but not in {language}: {text}"
    stripped = text
    for value in sorted((v for v in facts.values() if isinstance(v, str) and len(v) >= 3), key=len, reverse=True):
        stripped = stripped.replace(value, " ")
    left = ENGLISH.findall(stripped)
    assert not left, f"English words {left} left in {language}: {text}"


def test_numbers_are_written_the_local_way() -> None:
    queue = _revive(CASES["queue/end"]["facts"])
    assert "1.5 per min" in Explainer("UTC").render("queue", queue)
    assert "1,5 bedient pro Minute" in Explainer("UTC", "de").render("queue", queue)
    assert "1,5 personnes servies par minute" in Explainer("UTC", "fr").render("queue", queue)
    refund = _revive(CASES["pos_refund_no_customer/start"]["facts"])
    assert "Erstattung über 59,99 an Kasse 3" in Explainer("UTC", "de").render("pos_refund_no_customer", refund)
    assert "Devolución de 59,99 en la caja 3" in Explainer("UTC", "es").render("pos_refund_no_customer", refund)


def test_sentences_read_as_written() -> None:
    """A few whole sentences, read back: the wording (not only that something rendered)."""
    loiter = _revive(CASES["loitering/end"]["facts"])
    assert Explainer("Europe/Berlin", "de").render("loitering", loiter) == (
        "Person #12 hielt sich 23 s in Zone z auf (Schwelle 8 s), Kamera cam1, 15:00:00-15:00:23"
    )
    assert Explainer("Europe/Paris", "fr").render("loitering", loiter) == (
        "La personne #12 est restée 23 s dans la zone z (seuil 8 s), caméra cam1, 15:00:00-15:00:23"
    )
    assert Explainer("Europe/Madrid", "es").render("loitering", loiter) == (
        "La persona #12 permaneció 23 s en la zona z (umbral 8 s), cámara cam1, 15:00:00-15:00:23"
    )
    armed = _revive(CASES["zone_intrusion/start"]["facts"])
    assert Explainer("UTC", "de").render("zone_intrusion", armed) == (
        "Person #1 ist in Zone stockroom-door, während die Alarmzentrale shop-panel scharf geschaltet war, "
        "Kamera cam1, 22:29:55-22:30:10 (15 s)"
    )
    tamper = _revive(CASES["camera_tamper/start"]["facts"])
    assert (
        Explainer("UTC", "es")
        .render("camera_tamper", tamper)
        .startswith("La imagen de la cámara cam1 está tapada (sabotaje)")
    )
