"""The built-in text scanner: normalization against obfuscation, each category on a clear
example and not on a benign look-alike, minors' context, spam behaviour, self-harm never
punished, and the pipeline and its in-memory twins."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyhold.safety.behaviour import SendTracker
from keyhold.safety.builtin_scanner import BuiltinScanner
from keyhold.safety.normalize import normalize
from keyhold.safety.phrases import PatternError, PhraseBook
from keyhold.safety.pipeline import MemoryScanner, StaticScanner, build_scanner
from keyhold.safety.scanning import ALLOW, CATEGORIES, ScanContext, Verdict

VOCABULARY = frozenset({"kill", "you", "stupid", "loot", "idiot", "nudes"})


@pytest.fixture(scope="module")
def scanner() -> BuiltinScanner:
    return BuiltinScanner()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- normalization: one case per kind of obfuscation -------------------------------------


@pytest.mark.parametrize(
    ("text", "word", "trick"),
    [
        ("K1LL", "kill", "leet"),
        ("$tup1d", "stupid", "leet"),
        ("1d10t", "idiot", "leet"),
        ("k i l l", "kill", "spacing"),
        ("k.i.l.l", "kill", "spacing"),
        ("ki-ll", "kill", "spacing"),
        ("k\u0456ll", "kill", "homoglyph"),  # Cyrillic i (U+0456)
        ("n\u03bfdes", "nodes", "homoglyph"),  # Greek omicron
        ("ki\u200bll", "kill", "invisible"),  # zero-width space
        ("ki\u2060ll", "kill", "invisible"),  # word joiner
    ],
)
def test_each_obfuscation_is_undone(text: str, word: str, trick: str) -> None:
    norm = normalize(text, VOCABULARY)
    assert word in norm.words
    assert trick in norm.tricks


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("kiiiiill yoooou", ("kill", "you")),
        ("\uff2b\uff29\uff2c\uff2c", ("kill",)),  # full-width
        ("\U0001d424\U0001d422\U0001d425\U0001d425", ("kill",)),  # mathematical bold
        ("KiLL", ("kill",)),
        ("\U0001f52a tonight", ("knife", "tonight")),
        ("\U0001f52b\U0001f4a3", ("gun", "bomb")),
        ("caf\u00e9", ("cafe",)),
    ],
)
def test_case_width_repeats_marks_and_emoji(text: str, words: tuple[str, ...]) -> None:
    assert normalize(text, VOCABULARY).words == words


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("\u1d0b\u026a\u029f\u029f", ("kill",)),  # small capitals (not in the confusables table)
        ("\u03bai\u2113\u2113", ("kill",)),  # Greek kappa: its capital imitates K; script l
        ("\u1d4f\u1da6\u02e1\u02e1", ("kill",)),  # superscript and modifier letters
        ("ki\u00adll", ("kill",)),  # soft hyphen
        ("\U0001d458\U0001d456\U0001d459\U0001d459", ("kill",)),  # mathematical italic
        ("p a y   t h e   m o n e y", ("pay", "the", "money")),  # spaced letters, wider gaps between words
        ("g0nna 3nd 1t on the 2nd", ("gonna", "end", "it", "on", "the", "2nd")),  # "3nd" is no ordinal
    ],
)
def test_other_letter_forms_and_spacings(text: str, words: tuple[str, ...]) -> None:
    assert normalize(text, VOCABULARY | {"end", "it", "pay", "money"}).words == words


def test_contractions_and_possessives() -> None:
    norm = normalize("i'd say no one's laughing, your school's page", VOCABULARY)
    assert " i would say no one is laughing your school page " == norm.expanded


def test_doubled_letters_that_make_a_word_stay() -> None:
    # "loot" must not become "lot" (a game word is not a parking lot), nor "good" "god".
    assert normalize("the loot was good", VOCABULARY).words == ("the", "loot", "was", "good")


def test_numbers_stay_numbers_and_shorthand_is_spelled_out() -> None:
    norm = normalize("u owe me $500 on 12.5", VOCABULARY)
    assert "500" in norm.words
    assert " you owe me 500 " in norm.expanded


def test_links_become_hosts_and_look_alike_hosts_show() -> None:
    norm = normalize("see https://login.p\u0430ypal.com.evil.example/x and www.example.org", VOCABULARY)
    hosts = [link.host for link in norm.links]
    assert hosts == ["login.p\u0430ypal.com.evil.example", "www.example.org"]
    assert norm.links[0].skeleton_host == "login.paypal.com.evil.example"
    assert norm.links[1].skeleton_host == norm.links[1].host


def test_no_false_match_across_word_boundaries() -> None:
    book = PhraseBook([("kys", "kill yourself"), ("kill", "kill you")])
    assert book.matches(normalize("upskill yourself this year", book.vocabulary)) == []
    assert book.matches(normalize("skill you up", book.vocabulary)) == []
    assert "kys" in book.matches(normalize("k i l l y o u r s e l f", book.vocabulary))
    assert book.matches(normalize("k.i.l.l you", book.vocabulary)) == ["kill"]


def test_phrase_language_errors_are_named() -> None:
    with pytest.raises(PatternError, match="unknown word class"):
        PhraseBook([("x", "{NOPE} you")])
    with pytest.raises(PatternError, match="no letters or digits"):
        PhraseBook([("x", "!!! you")])


# --- each category: a clear example fires, a benign look-alike does not ------------------

CLEAR = {
    "violent_threat": "i'm going to stab you when you leave work tomorrow",
    "sexual_extortion": "pay me $300 or i post your nudes for all your followers",
    "grooming": "don't tell your parents we talk, it's our little secret",
    "hate": "immigrants are vermin and should be wiped out",
    "harassment": "you're a worthless loser, nobody likes you",
    "scam": "your bank account has been suspended, verify your identity within 24 hours at secure-bank-verify.com",
    "spam": "BUY CHEAP FOLLOWERS now!!! click here: cheapfollows.biz",
    "self_harm": "i want to kill myself tonight",
}
LOOK_ALIKES = {
    "violent_threat": "we need to kill the boss before the timer runs out",
    "sexual_extortion": "send pics from the wedding!! everyone wants to see them",
    "grooming": "don't tell mom about the surprise party!!",
    "hate": "the report says hate crimes against immigrants rose again last year",
    "harassment": "stop it you idiot, i love you",
    "scam": "never share your seed phrase, real support will never ask for it",
    "spam": "can you pick up milk on the way home",
    "self_harm": "this exam is killing me lol",
}


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_fires_on_a_clear_example(scanner: BuiltinScanner, category: str) -> None:
    verdict = scanner.scan_now(CLEAR[category], ScanContext())
    assert verdict.category == category
    assert verdict.scores[category] > 0
    assert any(name.startswith(f"signal:{category}/") for name in verdict.fired)
    if category == "self_harm":
        assert verdict.support
    else:
        assert verdict.action in ("flag", "hold", "block")
        assert verdict.policy


@pytest.mark.parametrize("category", CATEGORIES)
def test_benign_look_alike_is_allowed(scanner: BuiltinScanner, category: str) -> None:
    verdict = scanner.scan_now(LOOK_ALIKES[category], ScanContext())
    assert verdict.action == "allow"
    assert verdict.category is None
    assert not verdict.support


@pytest.mark.parametrize(
    "text",
    [
        "i'm gonna k1ll y0u",
        "i'll s t a b you after school",
        "i w\u0456ll k\u0456ll you",
        "gonna sh\u200boot you tonight",
        "\uff49 \uff47\uff4f\uff4e\uff4e\uff41 \uff4b\uff49\uff4c\uff4c \uff59\uff4f\uff55",
    ],
)
def test_obfuscated_threats_are_caught(scanner: BuiltinScanner, text: str) -> None:
    verdict = scanner.scan_now(text, ScanContext())
    assert verdict.category == "violent_threat"
    assert verdict.action in ("hold", "block")


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("would be a shame if something happened to your car", "violent_threat"),
        ("i know where you live. see you soon", "violent_threat"),
        ("ill m*rder u", "violent_threat"),
        ("i'm gonna unalive myself", "self_harm"),
        ("gonna go sewerslide tbh", "self_harm"),
        ("remember those photos? venmo me 400 and it goes away", "sexual_extortion"),
        ("add me on the other app, the one with disappearing msgs", "grooming"),
        ("PayPal: suspicious activity. secure it at p\u0430ypal-secure.com", "scam"),
        ("b u y   n o w at cheapfollows.biz!!!", "spam"),
    ],
)
def test_euphemism_algospeak_and_look_alike_links(scanner: BuiltinScanner, text: str, category: str) -> None:
    verdict = scanner.scan_now(text, ScanContext())
    assert verdict.category == category
    assert verdict.action != "allow" or verdict.support


# Other wordings of each category than the phrases' own examples: the lexicons and the cue
# combinations (threat verb x target x harm, leverage x payment x deadline, secrecy, age, body,
# meeting, group x stereotype, insult x second person, first-person intent and goodbyes).
@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("keep talking and you'll end up in a wheelchair", "violent_threat"),
        ("your kids walk home alone, right? be a shame if something happened", "violent_threat"),
        ("wire 500 by tomorrow or your husband gets the videos", "sexual_extortion"),
        (
            "those pictures of you would look great on your school's instagram unless you pay",
            "sexual_extortion",
        ),
        ("delete these messages so your parents don't see, our secret", "grooming"),
        ("what colour is your underwear? you're so mature for 13", "grooming"),
        ("nigerians are all scammers and thieves", "hate"),
        ("the only good muslim is a dead one", "hate"),
        ("everyone at work talks about how useless you are", "harassment"),
        ("you're honestly the most annoying person, nobody wants you around", "harassment"),
        ("stuck abroad and my card got blocked, could you send $600 through western union?", "scam"),
        ("Looking for a side hustle? Earn from your phone, DM me for details", "spam"),
        ("i'm not gonna be here much longer. thank you for everything", "self_harm"),
        ("been stockpiling my pills, i think i have enough now", "self_harm"),
    ],
)
def test_other_wordings_are_caught(scanner: BuiltinScanner, text: str, category: str) -> None:
    verdict = scanner.scan_now(text, ScanContext())
    assert verdict.category == category
    assert verdict.action != "allow" or verdict.support


@pytest.mark.parametrize(
    "text",
    [
        "muslim and jewish students organised the interfaith dinner together",
        "my gran is deaf and she's the funniest person i know",
        "i'm going to shoot your wedding photos on saturday",
        "sorted my will with the solicitor today, one less thing",
        "i used to self harm but i've been clean for 3 years",
        "don't tell the kids yet, we're getting a puppy!",
        "got you an amazon gift card for your birthday, the code's inside",
        "you're next in line at the barber",
    ],
)
def test_other_benign_look_alikes_are_not_blocked_or_held(scanner: BuiltinScanner, text: str) -> None:
    verdict = scanner.scan_now(text, ScanContext())
    assert verdict.action in ("allow", "flag")
    assert verdict.action == "allow" or verdict.category != "self_harm"


def test_banter_and_games_are_dampened(scanner: BuiltinScanner) -> None:
    plain = scanner.scan_now("i'll kill you", ScanContext())
    banter = scanner.scan_now("i'll kill you if you're late again lol", ScanContext())
    assert banter.scores["violent_threat"] < plain.scores["violent_threat"]
    assert banter.action == "allow"
    assert any(name.startswith("dampener:violent_threat/") for name in banter.fired)


async def test_scan_is_the_same_as_scan_now(scanner: BuiltinScanner) -> None:
    text = CLEAR["hate"]
    assert await scanner.scan(text, ScanContext()) == scanner.scan_now(text, ScanContext())


# --- grooming weighs more from an adult non-friend to a minor ----------------------------


def test_grooming_weighs_more_with_a_minor_recipient(scanner: BuiltinScanner) -> None:
    text = "how old are you? you seem nice"
    plain = scanner.scan_now(text, ScanContext())
    minor = scanner.scan_now(text, ScanContext(recipient_minor=True, sender_adult_non_friend=True))
    assert minor.scores["grooming"] > plain.scores["grooming"] > 0
    assert plain.action == "allow"
    assert minor.action in ("flag", "hold", "block")
    assert minor.category == "grooming"


def test_minor_context_alone_flags_nothing(scanner: BuiltinScanner) -> None:
    context = ScanContext(recipient_minor=True, sender_adult_non_friend=True)
    verdict = scanner.scan_now("practice moved to 5pm, bus leaves at 4", context)
    assert verdict.action == "allow"
    assert verdict.scores["grooming"] == 0


# --- spam from behaviour ---------------------------------------------------------------


def test_same_text_to_many_conversations_is_spam() -> None:
    scanner = BuiltinScanner(SendTracker(clock=Clock()))
    text = "hey check this out example-offers.com"
    first = scanner.scan_now(text, ScanContext(sender_id=7, conversation_id=1))
    verdicts = [scanner.scan_now(text, ScanContext(sender_id=7, conversation_id=c)) for c in range(2, 13)]
    last = verdicts[-1]
    assert first.action == "allow"
    assert last.category == "spam"
    assert last.action in ("hold", "block")
    assert "signal:spam/behaviour_repeated_10" in last.fired
    # Another sender with the same text starts from nothing.
    other = scanner.scan_now(text, ScanContext(sender_id=8, conversation_id=1))
    assert other.action == "allow"


def test_a_greeting_to_many_friends_is_at_most_flagged() -> None:
    scanner = BuiltinScanner(SendTracker(clock=Clock()))
    text = "happy new year, wishing you all the best"
    verdicts = [scanner.scan_now(text, ScanContext(sender_id=4, conversation_id=c)) for c in range(1, 13)]
    assert verdicts[1].action == "allow"
    assert verdicts[-1].action in ("allow", "flag")


def test_repeats_in_one_conversation_do_not_count() -> None:
    scanner = BuiltinScanner(SendTracker(clock=Clock()))
    text = "are you coming to the game tonight"
    verdicts = [scanner.scan_now(text, ScanContext(sender_id=3, conversation_id=5)) for _ in range(20)]
    assert all(v.action == "allow" for v in verdicts)


def test_tracker_forgets_after_the_window_and_stays_bounded() -> None:
    clock = Clock()
    tracker = SendTracker(window_seconds=60, max_texts=5, max_conversations=4, clock=clock)
    assert [tracker.record(1, "same text", c) for c in range(1, 4)] == [1, 2, 3]
    clock.now += 61
    assert tracker.record(1, "same text", 9) == 1
    assert max(tracker.record(1, "same text", c) for c in range(10, 20)) == 4  # capped per text
    for sender in range(100):
        tracker.record(sender, f"text {sender}", 1)
    assert len(tracker) == 5


def test_a_new_account_makes_spam_signals_weigh_more() -> None:
    scanner = BuiltinScanner()
    text = "check out my channel and subscribe"
    old = scanner.scan_now(text, ScanContext(sender_account_age_days=400))
    new = scanner.scan_now(text, ScanContext(sender_account_age_days=1))
    assert new.scores["spam"] > old.scores["spam"] > 0
    # A new account is never a signal by itself.
    assert (
        scanner.scan_now("hi, nice to meet you", ScanContext(sender_account_age_days=0)).scores["spam"] == 0
    )


def test_a_message_that_is_mostly_links_is_spam_evidence(scanner: BuiltinScanner) -> None:
    mostly_links = scanner.scan_now("my channel: a.example.com b.example.com", ScanContext())
    some_text = scanner.scan_now(
        "my channel is about cooking and travel and music, a.example.com", ScanContext()
    )
    assert "signal:spam/+behaviour_link_ratio" in mostly_links.fired
    assert mostly_links.scores["spam"] > some_text.scores["spam"] > 0
    # Links alone are not spam.
    alone = scanner.scan_now("here: https://docs.example.com/d/1", ScanContext())
    assert alone.action == "allow" and alone.scores["spam"] == 0 and alone.fired == ()


# --- self-harm is never punished ----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "i want to kill myself, i have the pills ready, goodbye note is written",
        "k.m.s fr, i can't do this anymore",
        "i've been cutting again and i want to die",
    ],
)
def test_self_harm_never_blocks_or_holds(scanner: BuiltinScanner, text: str) -> None:
    verdict = scanner.scan_now(text, ScanContext())
    assert verdict.category == "self_harm"
    assert verdict.action in ("allow", "flag")
    assert verdict.support


def test_acute_self_harm_reaches_a_moderator(scanner: BuiltinScanner) -> None:
    verdict = scanner.scan_now(
        "i took a bunch of pills and i want to die, i wrote my goodbye letters", ScanContext()
    )
    assert verdict.action == "flag"
    assert verdict.support


def test_self_harm_with_a_secret_is_still_support_not_grooming(scanner: BuiltinScanner) -> None:
    verdict = scanner.scan_now("c u t t i n g again. don't tell anyone pls", ScanContext())
    assert verdict.category == "self_harm"
    assert verdict.support


# --- the learned model: one more signal, never a block by itself -------------------------


def test_the_model_is_loaded_and_answers_probabilities(scanner: BuiltinScanner) -> None:
    assert scanner.model is not None
    assert set(scanner.model_thresholds) == set(CATEGORIES)
    assert all(0.5 <= t <= 0.95 for t in scanner.model_thresholds.values())
    norm = normalize("i will hurt you", scanner.vocabulary)
    first = scanner.model.probabilities(norm)
    assert set(first) == {*CATEGORIES, "benign"}
    assert sum(first.values()) == pytest.approx(1.0)
    assert scanner.model.probabilities(norm) == first  # deterministic


def test_the_model_was_trained_on_the_tuning_sets_only() -> None:
    from keyhold.safety import text_model_data

    assert sorted(text_model_data.TRAINED_ON) == [
        "tests/data/safety/dev.jsonl",
        "tests/data/safety/dev2.jsonl",
    ]


def test_training_refuses_the_held_out_file() -> None:
    import importlib.util

    script = Path(__file__).parents[1] / "scripts" / "train-safety-model.py"
    spec = importlib.util.spec_from_file_location("train_safety_model", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit, match="never used for training"):
        module.load(["elsewhere/heldout.jsonl"])  # refused by name, before anything is read


@pytest.mark.parametrize("category", CATEGORIES)
def test_the_model_alone_never_blocks(scanner: BuiltinScanner, category: str) -> None:
    certain = {c: 1.0 if c == category else 0.0 for c in (*CATEGORIES, "benign")}
    verdict = scanner.scan_now("see you at lunch", ScanContext(), probabilities=certain)
    assert f"signal:{category}/model" in verdict.fired
    assert verdict.action != "block"
    if category == "self_harm":
        assert verdict.support and verdict.action in ("allow", "flag")


def test_links_are_no_model_features() -> None:
    from keyhold.safety.text_model import features

    found = features(normalize("notes here: https://docs.example.com/d/1 thanks", VOCABULARY))
    assert found == {"w:notes", "w:here", "w:thanks", "b:notes here"}


def test_phrases_only_without_the_model() -> None:
    phrases_only = BuiltinScanner(model=None)
    verdict = phrases_only.scan_now(CLEAR["violent_threat"], ScanContext())
    assert verdict.category == "violent_threat"
    assert not any(name.endswith("/model") for name in verdict.fired)


# --- pipeline and twins -------------------------------------------------------------------


async def test_build_scanner_without_rules_is_the_builtin_scanner(tmp_path: Path) -> None:
    pipeline = build_scanner(tmp_path)
    verdict = await pipeline.scan(CLEAR["violent_threat"], ScanContext())
    assert verdict.category == "violent_threat"
    fine = await pipeline.scan("see you at lunch", ScanContext())
    assert (fine.action, fine.category, fine.fired) == ("allow", None, ())
    assert set(fine.scores) == set(CATEGORIES) and not any(fine.scores.values())
    await pipeline.aclose()


async def test_in_memory_twins() -> None:
    held = Verdict("hold", "scam", {"scam": 1.0}, ("test",))
    static = StaticScanner(held)
    assert await static.scan("anything", ScanContext()) == held
    memory = MemoryScanner({"bad": held})
    assert await memory.scan("bad", ScanContext(sender_id=2)) == held
    assert await memory.scan("fine", ScanContext()) == ALLOW
    assert [text for text, _ in memory.calls] == ["bad", "fine"]
    assert memory.calls[0][1].sender_id == 2
