"""People's names the English NER model cannot see: in lower case and in other scripts.

spaCy's small English model and guard's cue and given-name recognizers expect a
capitalised Latin name. This module adds one rule per gap, each a linear scan
(RE2 or a plain loop) with no model to load:

* lower case (``my name is maria garcia``): a name cue, then a word of the given-name
  list (``names.py``) matched case-insensitively, then the surname if the next word
  is not a function word;
* Latin letters beyond Latin-1 (``Nguyễn Văn An``, ``Łukasz Nowak``): capitalised
  words folded to ASCII with ``anyascii``, the first one a given name or a Vietnamese
  family name;
* scripts with case (Cyrillic, Greek): two or three capitalised words of the script;
* scripts without case (Arabic, Hebrew, Devanagari, Thai): a word after a name cue
  (English or in the script), or a given name of a short per-script list followed
  by another word of the script;
* Chinese and Japanese: a run of 2-4 Han characters beginning with a common family
  name, alone in the text or after a cue (``我叫``, ``私は``) or before an honorific
  (``先生``, ``さん``); Korean: a Hangul word of 2-4 syllables beginning with a common
  family name, alone among non-Hangul text, after a cue (``제 이름은``) or before ``씨``/``님``.

What these rules miss is listed in docs/explanation/guard.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from anyascii import anyascii
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from processors.guard.names import GIVEN_NAMES
from processors.guard.policy import Entity
from processors.guard.text_recognizer import TextRecognizer
from streams.contracts.linear_regex import compile_linear


def _words(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text``: the lists below read as prose."""
    return frozenset(text.split())


CUE_SCORE = 0.6
RULE_SCORE = 0.5
# Where a rule here and one of recognizers.py report the very same span (a capitalised
# name after a cue, "José García"), Presidio keeps one of two equal scores by the order
# the results arrive in. Scores a step apart keep the outcome independent of that order.
LOWER_CASE_SCORE = 0.55  # below PersonCueRecognizer's 0.6
FOLDED_SCORE = 0.45  # below GivenNameRecognizer's 0.5
UNCUED_SCORE = 0.42  # a lower-case pair with no cue: just above the default threshold

# -- lower case -----------------------------------------------------------------------
# Cues that introduce a person; matched case-insensitively, the cue is never reported.
_CUES = (
    r"my\s+name\s+is|my\s+name's|name\s*:|i\s+am|i'm|this\s+is|signed\s*:?|dear|hi|hello|hey"
    r"|regards|thanks|thank\s+you|cheers|sincerely|contact|call|ask|email|e-mail|cc|invite"
    r"|meet|met|from|with|by|to|for|customer|client|patient|applicant|employee|colleague"
)
# Cues are found first, then the words after each: a cue that is itself followed by a
# cue ("thanks to maria") must not hide the name behind it. The words are read with a
# plain loop: RE2's Python binding copies the text on each call that starts at an
# offset, so a call per cue would be quadratic.
_CUE = compile_linear(rf"(?i:\b(?:{_CUES}))\s*,?\s+")
#: A lower-case ASCII word: where a given name with no cue in front may start.
_LOWER_WORD = compile_linear(r"\b[a-z][a-z'-]{1,39}\b")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'-")
#: Longest word read after a cue; a longer run of letters is no name.
MAX_WORD = 40


def _word_at(text: str, start: int) -> int:
    """End of the ASCII word starting at ``start`` (``start`` itself when there is none)."""
    end = start
    limit = min(len(text), start + MAX_WORD)
    while end < limit and text[end] in _WORD_CHARS:
        end += 1
    return end if end > start and text[start].isalpha() else start


# Words that follow a given name without being a surname ("call maria at noon").
FUNCTION_WORDS = _words(
    """
    a an the and or but nor so yet if then than that this these those there here to of in on at
    by for from with about as into onto over under after before again also too very just not no
    is am are was were be been being has have had do does did will would shall should can could
    may might must i me my we us our you your he him his she her it its they them their who whom
    what when where why how which please thanks thank today tomorrow yesterday now soon later
    asap tonight morning evening again back up down out off re fw fwd via per regarding about
    said says told asked wants needs called emailed wrote sent
    """
)


class LowerCaseNameRecognizer(TextRecognizer):
    """A given name from the list after a name cue, in any case, with its surname.

    Given names that are also everyday words (Will, Grace, May) are not in the list,
    so "i will grace the event" is left alone.
    """

    SCORE = LOWER_CASE_SCORE
    ENTITY = Entity.PERSON
    NAME = "LowerCaseNameRecognizer"

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report ``given [surname]`` after each cue whose next word is a listed given name."""
        results = []
        cued: set[int] = set()
        for cue in _CUE.finditer(text):
            start = cue.end()
            end = _word_at(text, start)
            if end == start or text[start:end].capitalize() not in GIVEN_NAMES:
                continue
            cued.add(start)
            results.append(self.result(start, self._surname_end(text, end)))
        results += self._uncued(text, cued)
        return results

    @staticmethod
    def _surname_end(text: str, end: int) -> int:
        """End of the surname after a given name ending at ``end`` (``end`` when none)."""
        after = end
        while after < len(text) and after - end < MAX_WORD and text[after] == " ":
            after += 1
        surname_end = _word_at(text, after) if after > end else after
        if surname_end > after and text[after:surname_end].lower() not in FUNCTION_WORDS:
            return surname_end
        return end

    def _uncued(self, text: str, cued: set[int]) -> list[RecognizerResult]:
        """Lower-case ``given surname`` pairs with no cue ("lucas patel will join").

        Without a cue only a pair counts: a listed given name written in lower case and
        followed by a word that is not a function word. The list leaves out names that
        are everyday words, so a lower-case listed name is itself unusual; scored lower
        than a cued name (``UNCUED_SCORE``).
        """
        results = []
        for match in _LOWER_WORD.finditer(text):
            start = match.start()
            if start in cued or match.group(0).capitalize() not in GIVEN_NAMES:
                continue
            end = self._surname_end(text, match.end())
            if end > match.end():
                results.append(self.result(start, end, UNCUED_SCORE))
        return results


# -- Latin beyond Latin-1, and Vietnamese ------------------------------------------------
VIETNAMESE_FAMILY_NAMES = _words(
    "Nguyen Tran Le Pham Hoang Huynh Phan Vu Vo Dang Bui Do Ho Ngo Duong Ly Dinh Trinh Mai"
    " Truong Lam Luong Cao Ta Ha Quach Luu Thai Kieu Doan Trieu"
)
# Capitalised words of any Latin letters, at least one of them outside ASCII (the
# ASCII-only case is GivenNameRecognizer's).
_LATIN_RUN = compile_linear(r"\p{Lu}\p{Ll}+(?:[ ]+\p{Lu}\p{Ll}+){1,3}")
_ASCII = compile_linear(r"[\x00-\x7f]*")


class FoldedNameRecognizer(TextRecognizer):
    """Capitalised names with letters beyond Latin-1, read through their ASCII folding."""

    SCORE = FOLDED_SCORE
    ENTITY = Entity.PERSON
    NAME = "FoldedNameRecognizer"

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report runs whose first word folds to a given name or a Vietnamese family name."""
        results = []
        for match in _LATIN_RUN.finditer(text):
            run = match.group(0)
            if _ASCII.fullmatch(run) or _foreign_script(run):
                continue
            first = anyascii(run.split()[0])
            if first in GIVEN_NAMES or first in VIETNAMESE_FAMILY_NAMES:
                results.append(self.result(match.start(), match.end()))
        return results


def _foreign_script(run: str) -> bool:
    """True when the run is not Latin (Cyrillic and Greek have their own rule)."""
    return any("\u0370" <= char <= "\u052f" for char in run)


# -- Cyrillic and Greek: capitalised words ------------------------------------------------
# Literal ranges: RE2 has no class intersection (Cyrillic AND upper case).
_CYRILLIC_WORD = "[\u0400-\u042f][\u0430-\u045f]+"
_GREEK_WORD = "[\u0386\u0388-\u038f\u0391-\u03a9][\u03ac-\u03ce]+"
_CASED_RUN = compile_linear(
    rf"{_CYRILLIC_WORD}(?:[ ]+{_CYRILLIC_WORD}){{1,2}}|{_GREEK_WORD}(?:[ ]+{_GREEK_WORD}){{1,2}}"
)

# -- scripts without case: cue + word, or listed given name + word ------------------------
_ARABIC = "\u0600-\u06ff\u0750-\u077f"
_HEBREW = "\u05d0-\u05ea\u05f0-\u05f4"
_DEVANAGARI = "\u0900-\u097f"
_THAI = "\u0e00-\u0e7f"
_UNCASED_WORD = rf"(?:[{_ARABIC}]+|[{_HEBREW}]+|[{_DEVANAGARI}]+|[{_THAI}]+)"
_NATIVE_CUES = (
    # Arabic "my name is"; Hebrew "my name is", "they call me"; Hindi "my name"; Thai
    # "name"; Russian and Greek "my name is". Not "I am" (أنا, אני): a verb follows it
    # far more often than a name.
    "اسمي|שמי|קוראים לי|मेरा नाम|नाम|ชื่อ|ผมชื่อ|ฉันชื่อ|меня зовут|моё имя|мое имя|με λένε|ονομάζομαι"
)
_UNCASED_AFTER_CUE = compile_linear(
    rf"(?:(?i:\b(?:{_CUES})\s*,?\s+)|(?:{_NATIVE_CUES})\s*:?\s*)"
    rf"(?P<name>{_UNCASED_WORD}(?:[ ]+{_UNCASED_WORD})?)"
)
_CUED_NAME = _UNCASED_AFTER_CUE.groupindex["name"]
_UNCASED_PAIR = compile_linear(rf"(?P<first>{_UNCASED_WORD})[ ]+{_UNCASED_WORD}")
_FIRST = _UNCASED_PAIR.groupindex["first"]
NATIVE_GIVEN_NAMES = _words(
    # Arabic
    "محمد أحمد علي حسن حسين عمر خالد يوسف إبراهيم ابراهيم مصطفى كريم طارق سمير عبدالله"
    " فاطمة عائشة مريم زينب خديجة نور سارة ليلى سلمى ياسمين هدى رانيا أميرة"
    # Persian, Urdu
    " رضا مهدی حسین علی زهرا"
    # Hebrew
    " דוד משה יוסף אברהם יעקב יצחק דניאל נועם איתי שרה רחל מרים נועה תמר יעל שירה"
    # Hindi
    " राहुल अमित प्रिया राज सुनील अनिल सुनीता पूजा रवि विजय अर्जुन नेहा दिव्या आदित्य"
    # Thai
    " สมชาย สมศักดิ์ สมศรี สุดา วิชัย ประเสริฐ มาลี"
)
# A word after a cue in these scripts is a name unless it is one of these.
NATIVE_NOT_NAMES = _words("هو هي في من على عن هذا هذه לא זה את של है हूँ हूं और")

# -- Chinese, Japanese, Korean -------------------------------------------------------------
CHINESE_FAMILY_NAMES = frozenset(  # one character each
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
    "龚邵万钱严覃武戴莫孔向汤張劉陳楊黃趙吳孫馬鄭謝許韓馮鄧蕭葉蘇呂盧鍾譚陸"
)
CHINESE_COMPOUND_FAMILY_NAMES = _words("欧阳 司马 诸葛 上官 歐陽 司馬 諸葛 东方 令狐 皇甫")
JAPANESE_FAMILY_NAMES = _words(
    "佐藤 鈴木 高橋 田中 伊藤 渡辺 渡邊 山本 中村 小林 加藤 吉田 山田 佐々木 山口 松本 井上 木村"
    " 清水 山崎 阿部 池田 橋本 山下 石川 中島 前田 藤田 小川 後藤 岡田 長谷川 村上 近藤 石井 斎藤"
    " 坂本 遠藤 青木 藤井 西村 福田 太田 三浦 藤原 岡本 松田 中川 中野 原田 小野 竹内 金子 和田"
    " 中山 石田 上田 森田 小島 柴田 原 宮崎 酒井 工藤 横山 宮本 内田 高木 安藤 島田"
    " 谷口 大野 丸山"
)
KOREAN_FAMILY_NAMES = frozenset(  # one syllable each
    "김이박최정강조윤장임한오서신권황안송류전홍고문양손배백허유남심노하곽성차주우구민진나지엄채원"
    "천방공현함변염여추도소석선설마길연위표명기반왕금옥육인맹제모탁국어은편용"
)
_HAN_RUN = compile_linear(r"[\p{Han}々]+")
_HANGUL_WORD = compile_linear(r"[가-힣]+")
_CJK_CUES = (
    "我叫",
    "我是",
    "名叫",
    "叫做",
    "名字是",
    "联系",
    "聯繫",
    "发给",
    "發給",
    "转给",
    "轉給",
    "交给",
    "告诉",
    "通知",
    "私は",
    "名前は",
    "私の名前は",
)
# Japanese and Chinese names are often written with a space (ASCII or ideographic)
# between family and given name: "鈴木 大輔", "小林\u3000直子".
_NAME_SPACES = " \u3000"
#: Characters of a given name read after such a space.
MAX_GIVEN = 3
HAN_HONORIFICS = ("先生", "女士", "小姐", "老师", "老師", "同志", "様", "氏", "君")
_KANA_HONORIFICS = ("さん", "さま", "くん", "ちゃん")
_KOREAN_CUED = compile_linear(r"(?:제 이름은|이름은|저는|나는)\s*(?P<word>[가-힣]{2,8})")
_CUED_WORD = _KOREAN_CUED.groupindex["word"]
# 씨 and 님 after a name of 2-4 syllables that starts a word.
_KOREAN_HONORIFIC = compile_linear(r"(?:^|[^가-힣])(?P<name>[가-힣]{2,4})(?:씨|님)")
_HONOURED = _KOREAN_HONORIFIC.groupindex["name"]
# Endings glued to a name ("김민준입니다", "김민준은"); removed, but they are no cue.
_KOREAN_ENDINGS = ("입니다", "이에요", "예요", "에게", "은", "는", "이", "가", "을", "를", "께")


class ScriptNameRecognizer(TextRecognizer):
    """Names in Cyrillic, Greek, Arabic, Hebrew, Devanagari, Thai, Chinese, Japanese, Korean."""

    SCORE = RULE_SCORE
    ENTITY = Entity.PERSON
    NAME = "ScriptNameRecognizer"

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Report every span one of the script rules finds."""
        spans = dict.fromkeys([*_cased(text), *_uncased(text), *_han(text), *_hangul(text)])
        return [self.result(start, end, score) for start, end, score in spans]


def _cased(text: str) -> Iterator[tuple[int, int, float]]:
    for match in _CASED_RUN.finditer(text):
        yield match.start(), match.end(), RULE_SCORE


def _uncased(text: str) -> Iterator[tuple[int, int, float]]:
    for match in _UNCASED_AFTER_CUE.finditer(text):
        words = match.group(_CUED_NAME).split()
        start = match.start(_CUED_NAME)
        if words[0] in NATIVE_NOT_NAMES:
            continue
        end = start + len(words[0])
        if len(words) > 1 and words[1] not in NATIVE_NOT_NAMES:
            end = match.end(_CUED_NAME)
        yield start, end, CUE_SCORE
    for match in _UNCASED_PAIR.finditer(text):
        if match.group(_FIRST) in NATIVE_GIVEN_NAMES:
            yield match.start(), match.end(), RULE_SCORE


def _han(text: str) -> Iterator[tuple[int, int, float]]:
    for match in _HAN_RUN.finditer(text):
        start = match.start()
        run = match.group(0)
        cued = False
        for cue in _CJK_CUES:
            at = run.find(cue)
            if at >= 0 and at + len(cue) < len(run):
                start, run, cued = start + at + len(cue), run[at + len(cue) :], True
                break
        for honorific in HAN_HONORIFICS:
            if run.endswith(honorific) and len(run) > len(honorific):
                run, cued = run[: -len(honorific)], True
                break
        if not cued and text.startswith(_KANA_HONORIFICS, start + len(run)):
            cued = True
        surname = _family_name_length(run)
        if surname == 0:
            continue
        if len(run) == surname:
            given = _spaced_given_name(text, start + len(run))
            if given:
                yield start, given, CUE_SCORE if cued else RULE_SCORE
                continue
        if cued:
            # After a cue the run goes on into the sentence: family name + 1-2 characters.
            # A two-character family name alone before an honorific ("田中さん") counts.
            length = min(len(run), surname + 2)
            if length >= 2:
                yield start, start + length, CUE_SCORE
        elif 2 <= len(run) <= 4 and len(run) > surname and _alone(text, start, start + len(run)):
            yield start, start + len(run), RULE_SCORE


def _spaced_given_name(text: str, end: int) -> int:
    """End of a 1-3 character Han given name after one space at ``end``, 0 if none."""
    if end >= len(text) or text[end] not in _NAME_SPACES:
        return 0
    position = end + 1
    while position < len(text) and position - end <= MAX_GIVEN and _is_han(text[position]):
        position += 1
    length = position - end - 1
    if not 1 <= length <= MAX_GIVEN or _han_or_hangul(text[position : position + 1]):
        return 0
    return position


def _family_name_length(run: str) -> int:
    """Length of the family name ``run`` starts with, 0 when it starts with none."""
    for size in (3, 2):
        if len(run) < size:
            continue
        if run[:size] in JAPANESE_FAMILY_NAMES or run[:size] in CHINESE_COMPOUND_FAMILY_NAMES:
            return size
    if run[:1] in CHINESE_FAMILY_NAMES or run[:1] in JAPANESE_FAMILY_NAMES:
        return 1
    return 0


def _alone(text: str, start: int, end: int) -> bool:
    """True when no CJK character touches ``text[start:end]`` (kana particles aside)."""
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    return not _han_or_hangul(before) and not _han_or_hangul(after)


# Han ideographs (with 々) and Hangul, by code point: a comparison per character, where
# an RE2 call per character would cost more than the rule itself.
_HAN_OR_HANGUL = (
    (0x1100, 0x11FF),
    (0x3005, 0x3005),
    (0x3130, 0x318F),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3),
    (0xF900, 0xFAFF),
    (0x20000, 0x3134F),
)


_HAN = ((0x3005, 0x3005), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))


def _is_han(char: str) -> bool:
    point = ord(char)
    return any(low <= point <= high for low, high in _HAN)


def _han_or_hangul(char: str) -> bool:
    if not char:
        return False
    point = ord(char)
    return any(low <= point <= high for low, high in _HAN_OR_HANGUL)


def _hangul(text: str) -> Iterator[tuple[int, int, float]]:
    # Patterns that match only at a cue or an honorific: ordinary Korean prose yields no
    # match to look at (a match per Hangul word costs RE2's binding an offset conversion).
    for match in _KOREAN_CUED.finditer(text):
        word = _without_ending(match.group(_CUED_WORD))
        if word[:1] in KOREAN_FAMILY_NAMES and 2 <= len(word) <= 4:
            start = match.start(_CUED_WORD)
            yield start, start + len(word), CUE_SCORE
    for match in _KOREAN_HONORIFIC.finditer(text):
        if match.group(_HONOURED)[:1] in KOREAN_FAMILY_NAMES:
            yield match.start(_HONOURED), match.end(_HONOURED), CUE_SCORE
    first_two = list(islice(_HANGUL_WORD.finditer(text), 2))
    if len(first_two) == 1:
        # The only Hangul word of the text: a Korean name in a prompt in another language.
        # In Korean prose, three syllables starting with a family-name syllable are mostly
        # ordinary words ("정말로").
        match = first_two[0]
        word = _without_ending(match.group(0))
        if word[:1] in KOREAN_FAMILY_NAMES and len(word) == 3:
            yield match.start(), match.start() + 3, RULE_SCORE


def _without_ending(word: str) -> str:
    for ending in _KOREAN_ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 2:
            return word[: -len(ending)]
    return word
