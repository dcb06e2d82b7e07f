"""The built-in scanner's settings, as data: thresholds that turn a category's score into an
action, the policy sentence per category, context weights, benign-context dampeners, and what
links say. The phrases themselves are in `signal_phrases.py`.

A dampener that fires multiplies the scores of its categories (the strongest dampener per
category counts, they do not stack). Values were set on the tuning sets
`tests/data/safety/dev.jsonl` and `dev2.jsonl` and on examples written for the tests, never on
the held-out file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """The lowest score for each action (None: this category never takes it)."""

    block: float | None
    hold: float | None
    flag: float | None
    support: float | None = None  # self-harm: point the member to support resources


THRESHOLDS: dict[str, Thresholds] = {
    "violent_threat": Thresholds(block=0.8, hold=0.6, flag=0.4),
    "sexual_extortion": Thresholds(block=0.8, hold=0.6, flag=0.4),
    "grooming": Thresholds(block=0.9, hold=0.65, flag=0.4),
    "hate": Thresholds(block=0.8, hold=0.6, flag=0.4),
    "harassment": Thresholds(block=0.85, hold=0.65, flag=0.4),
    "scam": Thresholds(block=0.85, hold=0.6, flag=0.4),
    "spam": Thresholds(block=0.9, hold=0.7, flag=0.4),
    # Never punished: support at a modest score, a moderator (flag) when it looks acute.
    "self_harm": Thresholds(block=None, hold=None, flag=0.8, support=0.4),
}

POLICIES: dict[str, str] = {
    "violent_threat": "Keyhold does not deliver threats of violence.",
    "sexual_extortion": "Keyhold does not deliver threats to share someone's intimate images.",
    "grooming": "Keyhold does not deliver messages that look like grooming of a young person.",
    "hate": "Keyhold does not deliver attacks on people for who they are.",
    "harassment": "Keyhold does not deliver harassment.",
    "scam": "Keyhold does not deliver messages that look like fraud.",
    "spam": "Keyhold does not deliver bulk or unsolicited promotion.",
    "self_harm": "",
}


@dataclass(frozen=True)
class ModelSignal:
    """The learned model's answer as a signal: from its per-category threshold (chosen by
    cross-validation, `text_model_data.THRESHOLDS`) the weight rises linearly from `low` at the
    threshold to `high` at probability 1. `high` stays below every block threshold: the model
    alone flags or holds, a block needs phrase evidence as well."""

    low: float
    high: float


MODEL_SIGNAL = ModelSignal(low=0.45, high=0.7)

# Grooming signals weigh more from an adult who is not a friend to a minor: the score s becomes
# 1 - (1 - s) ** MINOR_CONTEXT_POWER (0.3 -> 0.54, 0.5 -> 0.78).
MINOR_CONTEXT_POWER = 2.2
# An account younger than this many days: spam and scam scores that are already there weigh
# more (a new account alone is never a signal).
NEW_ACCOUNT_DAYS = 7.0
NEW_ACCOUNT_POWER = 1.5

# Benign contexts: (name, pattern, factor, categories). A factor of 0.3 keeps 30% of the score.
# fmt: off
DAMPENERS: list[tuple[str, str, float, tuple[str, ...]]] = [
    ("banter", "lol|lmao|lmfao|haha|hahaha|jk|kidding|rofl|bro", 0.45, ("violent_threat", "grooming")),
    ("banter_harassment", "lol|lmao|haha|jk|kidding", 0.85, ("harassment",)),
    ("affection", "i love you|ya|u|her|him || love you|ya|u|her|him|them tho|though|mate|lots|loads|xx|x|really || ily || luv you|ya || menace || lol|jk|haha|lmao love you|u|ya || love you", 0.3, ("harassment", "violent_threat")),
    ("friendly", "birthday|gift|congrats|congratulations|party || drop off", 0.5, ("violent_threat",)),
    ("trivial_reason", "if you are late || for spoiling || for eating || if you do not text || if you forget || you ate|drank|took|stole|finished|used|had the|my last? || if you tell anyone i || if you spoil", 0.4, ("violent_threat",)),
    ("competition", "beat|destroy|smash|crush|wreck you at|in", 0.2, ("violent_threat",)),
    ("hyperbole", "literally|lowkey|legit", 0.75, ("violent_threat",)),
    ("game", "boss|ranked|respawn|spawn|hp|level|game|raid|quest|build|loot|npc|headshot|snipe|camp|tower|timer|lobby|gg|noob|pvp|fortnite|minecraft|valorant|chess|cod|fifa|kills|mario|kart|round || one shot", 0.25, ("violent_threat",)),
    ("game_harassment", "ranked|game|match|chess|mario|kart|fifa|cod|round|noob|gg", 0.5, ("harassment",)),
    ("cooking", "heat|sauce|eggs|recipe|chicken|oven|flour|simmer|boil|bake|dough || fold in", 0.25, ("violent_threat",)),
    ("idiom", "killing me || kill it || kill me now || dying to || shoot you an|a || shoot me an|a || killed it || murdered it || bloodbath || tore us apart || could kill for || kill for a || shoot the|your|my|a|some wedding|photos|pics|video|film|portraits|scene|hoops|headshots", 0.2, ("violent_threat", "self_harm")),
    ("news", "news|article|suspect|trial|court|headline|charged|arrested|sentenced|jailed|history|propaganda|documentary|bbc|cnn|reuters || police said || according to", 0.25, ("violent_threat", "hate", "scam", "harassment", "sexual_extortion")),
    ("news_report", "report|reports|reported", 0.25, ("violent_threat", "hate", "harassment")),
    ("news_says", "says|said", 0.5, ("violent_threat", "hate")),
    ("counter_speech", "that is so wrong || is wrong || not true || is racist || so racist || stop saying || people are saying", 0.3, ("hate",)),
    ("quote", "movie|song|lyrics|radio|karaoke|singing|quote|film|episode|novel|villain|story|character|script|fiction|scene|book|chapter|rewatch|sequel|series || line in || stuck in my head", 0.3, ("violent_threat", "hate", "harassment", "self_harm")),
    ("scam_warning", "scam|scammer|scammers|warn|pretending|fake|phishing|psa || be careful || never share || will never ask || do not share || ignore it || heads up || do not click", 0.25, ("scam", "sexual_extortion", "spam")),
    ("first_party_notice", "call the number on || number on the back of your card || in the app || no action is? needed", 0.6, ("scam",)),
    ("gift_giving", "for your birthday|bday|christmas|anniversary|graduation || happy birthday || got you a|an", 0.4, ("scam",)),
    ("personal_share", "my cousin|sister|brother|friend|mum|mom|dad|aunt|uncle|neighbour|neighbor ... selling|bakery|shop|opens|stall|market || no pressure || said i would share", 0.4, ("spam",)),
    ("hyperbole_self", "lol|lmao|haha|embarrassing|cringe", 0.5, ("self_harm",)),
    ("support_talk", "therapist|therapy|hotline|988|prevention|proud|recovery|doctor|paper|research|sources|dose|nurse|accident|stitches|psych|counselor|antidepressant || since i last || years since || clean for|from|since || used to think|cut|self_harm || in a good place || talking helps || feeling better || days|weeks|months|years without|free|clean || are old || essay || speech || samaritans || lifeline || helpline || counsellor", 0.3, ("self_harm", "harassment", "violent_threat")),
    ("concern", "are you ok || want to talk || here for you || i am here || no pressure || feel bad || can we talk", 0.4, ("self_harm", "harassment")),
    ("family_logistics", "cake|candles|practice|coach|pickup|aunt|uncle|grandma || surprise party || field trip || permission slip || team chat || pick you both || your mom asked || your mom has || the schedule || bus leaves || birthday present || his|her birthday || proposal || timetable || homework || rehearsal || library || school club || ask your mum|mom|dad || ask a parent || has been emailed || tell me or dad|mum|mom || will not be in trouble || strangers", 0.35, ("grooming",)),
    ("negated_trait", "are_not|is_not|never|arent|isnt a|an? {TRAIT}|{DEHUMANIZED} || is a myth || stereotype|stereotypes || it is racist to", 0.3, ("hate",)),
    ("reclaimed", "proud|pride|community|center|screening|queerest || book club || we are the", 0.4, ("hate",)),
    ("baby_pics", "baby pics|photos || birthday || wedding", 0.35, ("sexual_extortion",)),
    ("intimate_leverage", "or ... {INTIMATE} ... {EXPOSE} || {INTIMATE} ... {EXPOSE} ... unless || nudes|naked|nude|recording|recordings ... or", 0.55, ("scam", "spam")),
]

# Signals read from the text as written (after NFKC), where normalization would lose them.
RAW_SIGNALS: list[tuple[str, str, str, float]] = [
    ("hate", "echo", r"\(\(\(", 0.45),
    ("spam", "+exclamations", r"!!!", 0.15),
    ("spam", "+megaphone", r"(?:📢|👉|➡|→|🔥{2,})", 0.2),
]

# Brands whose names in a link's host, off their own domains, mark a look-alike domain.
BRAND_DOMAINS: dict[str, tuple[str, ...]] = {
    "paypal": ("paypal.com", "paypal.me"),
    "chase": ("chase.com",),
    "chasebank": ("chase.com",),
    "amazon": ("amazon.com", "amazon.co.uk", "amazon.de"),
    "amzn": ("amazon.com", "amzn.to"),
    "apple": ("apple.com", "icloud.com"),
    "appleid": ("apple.com",),
    "icloud": ("icloud.com",),
    "netflix": ("netflix.com",),
    "usps": ("usps.com",),
    "dhl": ("dhl.com",),
    "ups": ("ups.com",),
    "fedex": ("fedex.com",),
    "irs": ("irs.gov",),
    "coinbase": ("coinbase.com",),
    "wellsfargo": ("wellsfargo.com",),
    "bankofamerica": ("bankofamerica.com",),
    "walmart": ("walmart.com",),
    "microsoft": ("microsoft.com",),
    "google": ("google.com",),
    "instagram": ("instagram.com",),
    "facebook": ("facebook.com",),
    "steam": ("steampowered.com", "steamcommunity.com"),
    "discord": ("discord.com", "discord.gg"),
    "binance": ("binance.com",),
    "metamask": ("metamask.io",),
}
SHORTENERS = frozenset({"bit.ly", "tinyurl.com", "t.co", "goo.gl", "is.gd", "cutt.ly", "rb.gy", "ow.ly", "tiny.cc"})
CHEAP_TLDS = frozenset({"xyz", "top", "info", "ru", "tk", "ml", "ga", "cf", "gq", "click", "link", "shop", "store", "biz", "online", "site", "pw", "su"})
# fmt: on
LINK_SIGNALS: dict[str, tuple[str, float]] = {
    # name: (category, weight); names starting with + are supporting evidence only
    "homograph_link": ("scam", 0.75),
    "lookalike_domain": ("scam", 0.55),
    "+shortener": ("scam", 0.15),
    "+cheap_tld_scam": ("scam", 0.15),
    "+cheap_tld_spam": ("spam", 0.25),
    "+link": ("spam", 0.15),
}
