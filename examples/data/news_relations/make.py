"""Writes the news_relations example: news-like sentences in English and Chinese about
companies, people, products and cities, from templates and a few dozen names. Deterministic:
`python examples/data/news_relations/make.py` rewrites the same files.

- ner_train.jsonl, ner_dev.jsonl: `{"text", "entities": [{"start", "end", "type"}]}` (types
  ORG, PERSON, PRODUCT, CITY), the span records `task: ner` reads (examples/configs/
  news_ner.yaml);
- relations_train.jsonl, relations_dev.jsonl: `{"text", "head": {"start", "end", "type"},
  "tail": {...}, "label"}` for every ordered pair of a sentence's entities: its relation
  (acquired, invested_in, ceo_of, headquartered_in, launched) or no_relation, so the reverse
  direction is no_relation too (examples/configs/news_relations.yaml); the labels take turns,
  so the first rows hold them all;
- docs.txt: documents of 1 to 4 sentences, one per line, for `bridgetune extract`, from the
  same templates with other draws (some names written in capitals, to be merged as one node);
- docs_gold.jsonl: the true triples of docs.txt (doc, head, relation, tail), to score an
  extraction against.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

NAMES = {
    ("en", "ORG"): ["Acme Corp", "Globex", "Initech", "Northwind Traders", "Umbrella Labs",
                    "Hooli", "Pied Piper", "Cyberdyne Systems", "Tyrell Corp", "Oscorp",
                    "Blue Harbor Capital", "Redwood Ventures", "Silverline Bank", "Vandelay Group"],
    ("zh", "ORG"): ["星辰科技", "华云集团", "蓝海资本", "天工机器人", "远航物流", "金石投资",
                    "青木电子", "长风汽车", "明德医药", "瑞达软件", "北辰能源", "东方数据"],
    ("en", "PERSON"): ["Alice Chen", "Robert Miles", "Maria Lopez", "David Kim", "Sarah Johnson",
                       "Tom Becker", "Emma Wilson", "James Okafor", "Laura Rossi", "Kenji Sato"],
    ("zh", "PERSON"): ["张伟", "李娜", "王强", "刘洋", "陈静", "杨帆", "赵磊", "黄敏", "周杰",
                       "吴婷"],
    ("en", "PRODUCT"): ["Nimbus X", "AeroPhone", "Quantum Drive", "SkyPad", "VoltCar",
                        "EchoBuds", "Atlas OS", "PixelCam"],
    ("zh", "PRODUCT"): ["星云手机", "极光耳机", "天马电动车", "青鸟平板", "飞鱼无人机", "云梯系统"],
    ("en", "CITY"): ["London", "Berlin", "Paris", "Singapore", "Toronto", "Seattle", "Austin",
                     "Sydney"],
    ("zh", "CITY"): ["上海", "北京", "深圳", "杭州", "成都", "广州", "南京", "武汉"],
}  # fmt: skip

# (relation, head type, tail type, templates by language); {h} head, {t} tail, {x} a third
# entity of type `third` when a template has one
TEMPLATES = [
    ("acquired", "ORG", "ORG", {
        "en": ["{h} acquired {t} for $3.5 billion.",
               "{h} has agreed to buy {t}, the companies said on Monday.",
               "{t} was acquired by {h} last year.",
               "Shareholders approved the takeover of {t} by {h}."],
        "zh": ["{h}宣布以35亿元收购{t}。", "{t}已被{h}收购。", "{h}完成了对{t}的收购。"]}),
    ("invested_in", "ORG", "ORG", {
        "en": ["{h} invested $20 million in {t}.", "{t} raised new funding led by {h}.",
               "{h} led a Series B round in {t}."],
        "zh": ["{h}向{t}投资了2亿元。", "{t}获得{h}领投的新一轮融资。", "{h}投资了{t}。"]}),
    ("invested_in", "PERSON", "ORG", {
        "en": ["{h} invested in {t} early on.", "{t} said {h} bought a 5% stake."],
        "zh": ["{h}个人投资了{t}。", "{t}透露，{h}入股了公司。"]}),
    ("ceo_of", "PERSON", "ORG", {
        "en": ["{h} is the chief executive of {t}.", "{t} named {h} as its new CEO.",
               "{t} CEO {h} said the results were strong."],
        "zh": ["{h}是{t}的首席执行官。", "{t}任命{h}为首席执行官。",
               "{t}首席执行官{h}表示，业绩超出预期。"]}),
    ("headquartered_in", "ORG", "CITY", {
        "en": ["{h} is headquartered in {t}.", "{h}, based in {t}, employs 2,000 people.",
               "{h} moved its headquarters to {t}."],
        "zh": ["{h}总部位于{t}。", "总部设在{t}的{h}今年扩招。", "{h}将总部迁至{t}。"]}),
    ("launched", "ORG", "PRODUCT", {
        "en": ["{h} launched the {t} on Tuesday.", "The {t} is made by {h}."],
        "zh": ["{h}发布了{t}。", "{t}由{h}推出。"]}),
]  # fmt: skip
# three entities: the relation of head and tail; every other pair is no_relation
THREE = [
    ("ceo_of", "PERSON", "ORG", "CITY", {
        "en": ["{h}, chief executive of {t}, opened an office in {x}.",
               "Speaking in {x}, Mr. {h} said {t} would keep growing."],
        "zh": ["{t}首席执行官{h}在{x}出席了发布会。"]}),
    ("acquired", "ORG", "ORG", "CITY", {
        "en": ["{h} bought {t} and will close its plant in {x}."],
        "zh": ["{h}收购{t}后关闭了{x}的工厂。"]}),
]  # fmt: skip
# two entities and no relation between them
UNRELATED = [
    ("ORG", "ORG", {"en": ["{a} and {b} both reported earnings on Thursday.",
                           "{a} shares fell 2.5% while {b} shares rose."],
                    "zh": ["{a}和{b}都发布了财报。", "{a}股价下跌，{b}股价上涨。"]}),
    ("PERSON", "CITY", {"en": ["{a} visited {b} last week."], "zh": ["{a}上周访问了{b}。"]}),
    ("PRODUCT", "PRODUCT", {"en": ["Analysts compared the {a} with the {b}."],
                            "zh": ["分析师比较了{a}和{b}。"]}),
    ("PERSON", "ORG", {"en": ["{a} criticised {b} in an interview."],
                       "zh": ["{a}在采访中批评了{b}。"]}),
]  # fmt: skip
PLAIN = {"en": ["Markets closed higher on Friday.", "The deal is expected to close in Q3.",
                "Analysts expect more mergers this year, e.g. in retail."],
         "zh": ["周五股市收涨。", "交易预计在第三季度完成。",
                "分析人士预计今年并购还会增加。"]}  # fmt: skip


def sentence(template: str, slots: dict[str, tuple[str, str]]) -> tuple[str, dict[str, dict]]:
    """The text of `template` with its slots filled, and each slot's span {start, end, type}."""
    text, spans, rest = "", {}, template
    while "{" in rest:
        before, _, after = rest.partition("{")
        slot, _, rest = after.partition("}")
        text += before
        name, kind = slots[slot]
        spans[slot] = {"start": len(text), "end": len(text) + len(name), "type": kind}
        text += name
    return text + rest, spans


def draw(rng: random.Random, language: str, kind: str, taken: set[str], shout: bool) -> str:
    name = rng.choice([n for n in NAMES[language, kind] if n not in taken])
    taken.add(name)
    return name.upper() if shout and language == "en" and rng.random() < 0.08 else name


def one(rng: random.Random, shout: bool = False) -> tuple[str, list[dict], list[tuple]]:
    """A random sentence: (text, entities, relations as (head slot, tail slot, label) over
    every ordered pair of its entities)."""
    language = "zh" if rng.random() < 0.45 else "en"
    taken: set[str] = set()
    roll = rng.random()
    if roll < 0.6:
        label, head, tail, by_language = rng.choice(TEMPLATES)
        slots = {"h": head, "t": tail}
        gold = {("h", "t"): label}
    elif roll < 0.72:
        label, head, tail, third, by_language = rng.choice(THREE)
        slots = {"h": head, "t": tail, "x": third}
        gold = {("h", "t"): label}
    elif roll < 0.94:
        first, second, by_language = rng.choice(UNRELATED)
        slots, gold = {"a": first, "b": second}, {}
    else:
        return rng.choice(PLAIN[language]), [], []
    filled = {s: (draw(rng, language, k, taken, shout), k) for s, k in slots.items()}
    text, spans = sentence(rng.choice(by_language[language]), filled)
    pairs = [(h, t, gold.get((h, t), "no_relation")) for h in spans for t in spans if h != t]
    entities = sorted(spans.values(), key=lambda e: e["start"])
    return text, entities, [(spans[h], spans[t], text, label) for h, t, label in pairs]


def rows(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")


def interleaved(records: list[dict]) -> list[dict]:
    """`records` taken label by label in turn, so that the first rows of the file already hold
    every label (a quick run on the first N rows still sees them all)."""
    by_label: dict[str, list[dict]] = {}
    for record in records:
        by_label.setdefault(record["label"], []).append(record)
    queues = [by_label[label] for label in sorted(by_label)]
    mixed = []
    while any(queues):
        mixed += [queue.pop(0) for queue in queues if queue]
    return mixed


def split(rng: random.Random, count: int) -> tuple[list[dict], list[dict]]:
    """`count` sentences as NER records and as relation rows (every ordered entity pair)."""
    ner, relations = [], []
    for _ in range(count):
        text, entities, pairs = one(rng)
        ner.append({"text": text, "entities": entities})
        relations += [{"text": text, "head": h, "tail": t, "label": label}
                      for h, t, _, label in pairs]  # fmt: skip
    return ner, interleaved(relations)


def documents(rng: random.Random, sentences: int) -> tuple[list[str], list[dict]]:
    """Lines of 1 to 4 sentences (`sentences` in all) and their true triples."""
    docs, gold = [], []
    while sum(len(d) for d in docs) < sentences:
        docs.append([one(rng, shout=True) for _ in range(rng.randint(1, 4))])
    lines = []
    for number, doc in enumerate(docs):
        line = ""
        for text, _, pairs in doc:
            line += (" " if line and text[0].isascii() else "") + text
            gold += [{"doc": number, "head": text[h["start"]:h["end"]], "relation": label,
                      "tail": text[t["start"]:t["end"]]}
                     for h, t, _, label in pairs if label != "no_relation"]  # fmt: skip
        lines.append(line)
    return lines, gold


def main() -> None:
    for name, seed, count in (("train", 27, 700), ("dev", 127, 150)):
        ner, relations = split(random.Random(seed), count)
        rows(HERE / f"ner_{name}.jsonl", ner)
        rows(HERE / f"relations_{name}.jsonl", relations)
    lines, gold = documents(random.Random(2027), 320)
    (HERE / "docs.txt").write_text("\n".join(lines) + "\n", "utf-8")
    rows(HERE / "docs_gold.jsonl", gold)


if __name__ == "__main__":
    main()
