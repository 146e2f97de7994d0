"""Daft's own `prompt` and `embed_text` against a Tollgate gateway, as a Daft user runs them.

Usage: run_daft.py BASE_URL CHAT_MODEL EMBED_MODEL, with the key in TOLLGATE_KEY. Prints one
JSON line: what came back.
"""

from __future__ import annotations

import json
import os
import sys

import daft
from daft import col
from daft.functions import embed_text, prompt


def main() -> None:
    base_url, chat, embed = sys.argv[1:4]
    daft.set_provider("openai", base_url=base_url, api_key=os.environ["TOLLGATE_KEY"])
    questions = [f"question {i}: what does a toll gate do?" for i in range(int(sys.argv[4]))]
    frame = daft.from_pydict({"q": questions})
    by_responses = frame.with_column("a", prompt(col("q"), model=chat)).collect().to_pydict()
    by_chat = (
        frame.with_column("a", prompt(col("q"), model=chat, use_chat_completions=True))
        .collect()
        .to_pydict()
    )
    vectors = frame.with_column("e", embed_text(col("q"), model=embed)).collect().to_pydict()
    print(
        json.dumps(
            {
                "responses": [bool(a) for a in by_responses["a"]],
                "chat": [bool(a) for a in by_chat["a"]],
                "dimensions": sorted({len(v) for v in vectors["e"]}),
            }
        )
    )


if __name__ == "__main__":
    main()
