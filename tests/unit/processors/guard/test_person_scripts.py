"""Names in lower case and in other scripts, through the real analyzer and guard engine."""

from __future__ import annotations

import pytest

from processors.guard.engine import GuardItem
from processors.guard.names import GIVEN_NAMES
from processors.guard.person_scripts import (
    FUNCTION_WORDS,
    FoldedNameRecognizer,
    LowerCaseNameRecognizer,
    ScriptNameRecognizer,
)
from processors.guard.pii import PresidioAnalyzer
from processors.guard.policy import Entity
from tests.support.guard import EngineFactory, make_policy


def people(analyzer: PresidioAnalyzer, text: str) -> list[str]:
    [found] = analyzer.analyze_batch([text], {Entity.PERSON}, 0.4)
    return [text[d.start : d.end] for d in found]


def own(recognizer: object, text: str) -> list[str]:
    return [text[r.start : r.end] for r in recognizer.analyze(text, ["PERSON"], None)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("my name is maria garcia and i need help", "maria garcia"),
        ("please contact john smith about the invoice", "john smith"),
        ("dear priya sharma, your order shipped", "priya sharma"),
        ("regards, ahmed khan", "ahmed khan"),
        ("call fatima at noon", "fatima"),
        ("thanks to maria for the help", "maria"),
        ("I AM OLIVIA BROWN", "OLIVIA BROWN"),
    ],
)
def test_lower_case_names_after_a_cue(text: str, name: str) -> None:
    assert own(LowerCaseNameRecognizer(), text) == [name]


@pytest.mark.parametrize(
    "text",
    [
        "i will grace the event with my presence",
        "may i ask you something",
        "i am happy to help, call me later",
        "contact support for a refund",
        "thanks for the report, regards from the team",
        "the rose garden is open to all",
    ],
)
def test_lower_case_words_that_are_also_names_are_left_alone(
    analyzer: PresidioAnalyzer, text: str
) -> None:
    assert own(LowerCaseNameRecognizer(), text) == []
    assert people(analyzer, text) == []


def test_everyday_words_stay_out_of_the_given_name_list() -> None:
    # The lower-case rule trusts the list: a given name that is also a common word
    # would turn every "i will ..." into a person.
    for word in ("Will", "Grace", "May", "Rose", "Bill", "Mark", "Hope", "Joy", "Faith"):
        assert word not in GIVEN_NAMES
    assert "the" in FUNCTION_WORDS


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Мария Иванова", "Мария Иванова"),
        ("Письмо от Алексей Петрович Смирнов вчера", "Алексей Петрович Смирнов"),
        ("Γιώργος Παπαδόπουλος", "Γιώργος Παπαδόπουλος"),
        ("محمد أحمد", "محمد أحمد"),
        ("اسمي ليلى حداد", "ليلى حداد"),
        ("מחר אני פוגש את דוד כהן", "דוד כהן"),
        ("मेरा नाम राहुल शर्मा है", "राहुल शर्मा"),
        ("my name is สมชาย ใจดี", "สมชาย ใจดี"),
        ("王小明", "王小明"),
        ("Please email 张伟 tomorrow", "张伟"),
        ("我叫王小明\uff0c来自北京。", "王小明"),
        ("田中太郎", "田中太郎"),
        ("Please forward the contract to 鈴木 大輔 today", "鈴木 大輔"),
        ("小林\u3000直子さんに連絡してください", "小林\u3000直子"),
        ("请把合同发给吴丽娜。", "吴丽娜"),
        ("田中さんに連絡してください", "田中"),
        ("contact 김민준 today", "김민준"),
        ("저는 김민준입니다", "김민준"),
        ("김민준님 안녕하세요", "김민준"),
    ],
)
def test_names_in_other_scripts(analyzer: PresidioAnalyzer, text: str, name: str) -> None:
    assert name in own(ScriptNameRecognizer(), text)
    assert any(name in found for found in people(analyzer, text))


@pytest.mark.parametrize(
    "text",
    [
        "Привет, как дела? Всё хорошо.",
        "Это был хороший день",
        "مرحبا كيف حالك اليوم",
        "שלום, מה שלומך היום",
        "今天天气很好\uff0c我们去公园吧。",
        "東京は大きい都市です。",
        "오늘 날씨가 정말로 좋네요",
        "नमस्ते, आप कैसे हैं",
    ],
)
def test_ordinary_sentences_in_other_scripts_name_nobody(text: str) -> None:
    assert own(ScriptNameRecognizer(), text) == []


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Nguyễn Văn An", "Nguyễn Văn An"),
        ("Hồ sơ của Trần Thị Mai đã xong", "Trần Thị Mai"),
        ("Łukasz Nowak", "Łukasz Nowak"),
        ("Weg nach Zürich Straße", None),  # folds to Zurich: not a given name
    ],
)
def test_extended_latin_names_are_folded(text: str, name: str | None) -> None:
    assert own(FoldedNameRecognizer(), text) == ([name] if name else [])


def test_a_name_in_another_script_is_hashed_by_the_engine(
    analyzer: PresidioAnalyzer, make_engine: EngineFactory
) -> None:
    engine = make_engine(analyzer, make_policy(PERSON="hash"))
    text = "Ticket from Мария Иванова and 王小明, cc maria garcia"
    [result] = engine.inspect_batch([GuardItem("r", "t", text)])
    for name in ("Мария", "Иванова", "王小明", "maria garcia"):
        assert name not in result.text
    assert result.verdict.entity_counts == {"PERSON": 3}


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("lucas patel will join the call tomorrow.", "lucas patel"),
        ("The ticket was opened by scarlett rodriguez last week.", "scarlett rodriguez"),
        ("forwarded from olivia nakamura's inbox", "olivia nakamura's"),
    ],
)
def test_lower_case_pairs_with_no_cue(text: str, name: str) -> None:
    assert name in own(LowerCaseNameRecognizer(), text)


@pytest.mark.parametrize(
    "text",
    [
        "jack the car up before you change the tyre",
        "lucas is a name we considered for the project",  # a lone name: no surname
        "restart the service and check the logs",
    ],
)
def test_no_cue_needs_a_listed_name_and_a_surname(text: str) -> None:
    assert own(LowerCaseNameRecognizer(), text) == []
