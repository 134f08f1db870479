"""Write train.jsonl and dev.jsonl: customer questions and the passage of the shop's knowledge
base (examples/data/support_kb, cut as `serve.knowledge` cuts it: 300 characters) that answers
each, for `examples/configs/support_search.yaml` (task: embedding). Every third question of a
passage is held out for dev, so dev asks about every passage in words training never saw.

    python examples/data/support_search/make.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

QUESTIONS = {
    "account.md#1": [
        "I forgot my password", "how do I reset my password", "the password link expired",
        "can't sign in to my account", "how do I change the email on my account",
        "I want to use a different email address", "where do I update my login email",
        "reset link not working after a few hours", "how long is the reset link valid",
        "忘记密码怎么办", "怎么修改账户邮箱", "登录不了账户",
    ],
    "refunds.md#1": [
        "can I return an item", "how many days do I have to send something back",
        "do I pay for the return label", "how do I start a return",
        "I opened the box, can I still return it", "return window after delivery",
        "is return shipping free", "where do I find the return form",
        "can I send back a product I don't like", "怎么申请退货", "退货期限是多久",
        "退货要自己付运费吗",
    ],
    "refunds.md#2": [
        "when will I get my money back", "how long does a refund take",
        "refund not on my card yet", "will you tell me when the refund is sent",
        "can I return a gift card", "my earbuds were opened, can I return them",
        "the earbuds are faulty but opened", "refund timing after the warehouse gets it",
        "which card does the refund go to", "退款多久到账", "礼品卡可以退吗",
        "退款会退到哪张卡",
    ],
    "shipping.md#1": [
        "how much is shipping", "is delivery free", "when will my order ship",
        "how long does delivery take", "minimum order for free shipping",
        "if I order in the afternoon when does it ship", "shipping cost under 50 dollars",
        "how many days until my package arrives", "same day dispatch cut-off time",
        "运费多少钱", "几天能送到", "满多少包邮",
    ],
    "shipping.md#2": [
        "where is my order", "how do I track my package", "my order has not moved for a week",
        "I never got a tracking link", "package seems lost", "tracking shows no update",
        "what if my parcel is stuck", "will you send a replacement for a lost order",
        "report a missing delivery", "我的订单到哪了", "包裹好几天没动了",
        "怎么查物流",
    ],
    "store.md#1": [
        "what are your opening hours", "can I call you on Sunday", "when is support available",
        "is there live chat", "do you answer on public holidays", "what time does support close",
        "can I reach someone on Saturday", "how do I contact customer service",
        "support phone hours", "客服几点上班", "周日有人工客服吗", "怎么联系客服",
    ],
    "store.md#2": [
        "what colours do the Aria earbuds come in", "is the Nova tablet available in graphite",
        "what colour is the Nimbus vacuum", "does the Pulse tracker come in coral",
        "how long is the warranty", "Echo speaker colour options", "is there a white version",
        "which colours can I pick for the tracker", "do products have a warranty",
        "耳机有几种颜色", "平板有什么颜色", "保修多久",
    ],
    "售后政策.md#1": [
        "退货政策是什么", "中文客户怎么退货", "退款几天到账", "多少钱包邮", "下午下单什么时候发货",
        "产品坏了可以免费维修吗", "保修期内能换新吗", "退货运费谁出", "几个工作日送达",
        "原包装丢了还能退吗", "售后服务有哪些", "保修期是几年",
    ],
}


def main() -> None:
    from bridgetune.inference.retrieval import read_passages

    passages = {p.source: p.text for p in read_passages(HERE.parent / "support_kb", 300)}
    missing = set(QUESTIONS) - set(passages)
    if missing:
        sys.exit(f"passages not in the knowledge base any more: {sorted(missing)}")
    splits: dict[str, list[dict]] = {"train": [], "dev": []}
    for source, questions in QUESTIONS.items():
        for index, question in enumerate(questions):
            split = "dev" if index % 3 == 2 else "train"
            splits[split].append({"text": question, "positive": passages[source],
                                  "source": source})  # fmt: skip
    for split, rows in splits.items():
        with (HERE / f"{split}.jsonl").open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{split}: {len(rows)} questions")


if __name__ == "__main__":
    main()
