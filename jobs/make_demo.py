"""Write jobs/demo.jsonl: a small job in all three line shapes, chat and embeddings (run once; committed)."""

import json
import random
from pathlib import Path

random.seed(7)
topics = ["tides", "volcanoes", "bees", "compilers", "sourdough", "glaciers", "jazz", "tea", "comets", "moss"]
lines = []
for i in range(300):
    topic = topics[i % len(topics)]
    kind = i % 4
    if kind == 0:  # OpenAI Batch API line
        lines.append({"custom_id": f"faq-{i:04d}", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "gpt-4o-mini", "max_tokens": 120,
                               "messages": [{"role": "system", "content": "Answer in two sentences."},
                                            {"role": "user", "content": f"Why do {topic} matter?"}]}})
    elif kind == 1:  # bare request body with metadata
        lines.append({"custom_id": f"title-{i:04d}", "model": "gpt-4o-mini", "max_tokens": 30,
                      "messages": [{"role": "user", "content": f"Write a title for an essay on {topic}."}],
                      "metadata": {"topic": topic, "batch": "titles"}})
    elif kind == 2:  # shorthand, filled from --model/--system/--max-tokens
        lines.append({"prompt": f"List three surprising facts about {topic}.", "metadata": {"topic": topic}})
    else:  # embeddings
        lines.append({"custom_id": f"emb-{i:04d}", "method": "POST", "url": "/v1/embeddings",
                      "body": {"model": "text-embedding-3-small", "input": f"A short note about {topic} #{i}"}})
Path(__file__).with_name("demo.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
