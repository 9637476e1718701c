"""Writes the three example tasks (run once; the JSONL files are committed). Self-authored phrase lists,
seeded, so the files are reproducible: python examples/own_tasks/make_data.py"""

import itertools
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
rng = random.Random("olora-own-tasks")

# 1. intents: which team should answer a customer message (a closed label set)
INTENT = {
    "refund": ["I want my money back for {item}", "please refund the {item} I returned", "how do I get a refund for the {item}",
               "the {item} was faulty, I need a refund", "can you reverse the charge for the {item}"],
    "delivery": ["where is my {item}", "the {item} has not arrived yet", "my {item} was delivered to the wrong address",
                 "can you change the delivery date of my {item}", "the courier lost my {item}"],
    "account": ["I cannot log in to buy the {item}", "please reset my password, I was ordering a {item}",
                "how do I change the email on my account", "my account is locked after ordering a {item}",
                "delete my account and the saved {item}"],
}
ITEMS = ["kettle", "lamp", "rug", "toaster", "chair", "blender"]

# 2. priority: how urgent a ticket from the operations team is (another label set, different words)
PRIORITY = {
    "urgent": ["the {system} is down for every user", "customers cannot pay because the {system} fails",
               "the {system} lost data this morning", "security alert: someone broke into the {system}"],
    "normal": ["the {system} is slow since yesterday", "a button in the {system} shows the wrong colour",
               "one report in the {system} has a typo", "the {system} logs too many warnings"],
}
SYSTEMS = ["checkout", "warehouse app", "mail server", "billing service", "website", "stock database"]

# 3. summaries: one-line summary of a short meeting note (free-form answers, scored by ROUGE-L)
TEAMS = ["design", "sales", "support", "finance", "logistics"]
TOPICS = [("the spring catalogue", "finish the spring catalogue"), ("the new website", "launch the new website"),
          ("the supplier contract", "sign the supplier contract"), ("the holiday rota", "agree the holiday rota"),
          ("the customer survey", "send the customer survey")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


def split(rows: list[dict], n_test: int) -> tuple[list[dict], list[dict]]:
    rng.shuffle(rows)
    return rows[n_test:], rows[:n_test]


def write(name: str, train: list[dict], test: list[dict]) -> None:
    for part, rows in (("train", train), ("test", test)):
        with open(HERE / f"{name}.{part}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)


intents = [{"message": t.format(item=i).capitalize() + ".", "intent": k}
           for k, ts in INTENT.items() for t, i in itertools.product(ts, ITEMS)]
write("intents", *split(intents, 30))
tickets = [{"ticket": t.format(system=s).capitalize() + ".", "priority": k}
           for k, ts in PRIORITY.items() for t, s in itertools.product(ts, SYSTEMS)]
write("priority", *split(tickets, 16))
notes = [
    {"note": f"The {team} team met about {topic}. After some discussion they decided to {goal} by {day}. "
             f"Everyone agreed to check progress at the next meeting.",
     "summary": f"The {team} team will {goal} by {day}."}
    for team, (topic, goal), day in itertools.product(TEAMS, TOPICS, DAYS)
]
write("summaries", *split(notes, 25))
