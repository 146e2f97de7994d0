"""Every gateway endpoint through the openai SDK 1.x, as a user of that version calls them.

Usage: run_openai1.py BASE_URL CHAT_MODEL EMBED_MODEL, with the key in TOLLGATE_KEY. Prints one
JSON line: the usage the SDK reported for each call, and what a bad key gets.
"""

from __future__ import annotations

import json
import os
import sys

import openai


def main() -> None:
    base_url, chat, embed = sys.argv[1:4]
    client = openai.OpenAI(base_url=base_url, api_key=os.environ["TOLLGATE_KEY"])
    messages = [{"role": "user", "content": "hello from the 1.x SDK"}]
    answer = client.chat.completions.create(model=chat, messages=messages)
    streamed = list(
        client.chat.completions.create(
            model=chat,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    completion = client.completions.create(model=chat, prompt="once upon a time", max_tokens=8)
    response = client.responses.create(model=chat, input="describe a gate")
    vectors = client.embeddings.create(model=embed, input=["a", "b", "c"])
    models = [m.id for m in client.models.list()]
    try:
        openai.OpenAI(base_url=base_url, api_key="sk-tg-invented", max_retries=0).models.list()
        refused = ""
    except openai.AuthenticationError as exc:
        refused = exc.code or ""
    final = streamed[-1].usage
    print(
        json.dumps(
            {
                "chat": [answer.usage.prompt_tokens, answer.usage.completion_tokens]
                if answer.usage
                else None,
                "stream": [final.prompt_tokens, final.completion_tokens] if final else None,
                "completion": [completion.usage.prompt_tokens, completion.usage.completion_tokens]
                if completion.usage
                else None,
                "response": [response.usage.input_tokens, response.usage.output_tokens]
                if response.usage
                else None,
                "embedding": [vectors.usage.prompt_tokens, 0],
                "models": models,
                "refused": refused,
            }
        )
    )


if __name__ == "__main__":
    main()
