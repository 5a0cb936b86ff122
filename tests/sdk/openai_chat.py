"""Drives deja with the official OpenAI Python SDK, changing only the base URL.

Reads one JSON job per stdin line ({"prompt", "stream"}) and prints one JSON result per line:
the text the SDK assembled, the finish reason, usage, and deja's cache headers; or the SDK's
error when it raised one.
"""

import json
import os
import sys

import openai

# A deja API key as the SDK's api_key, and a virtual key as a default header, when given.
virtual_key = os.environ.get("DEJA_VIRTUAL_KEY")
client = openai.OpenAI(
    base_url=sys.argv[1] + "/v1",
    api_key=os.environ.get("DEJA_API_KEY", "sk-deja-test"),
    default_headers={"x-portkey-virtual-key": virtual_key} if virtual_key else None,
    max_retries=0,
)

for line in sys.stdin:
    job = json.loads(line)
    args = dict(
        model="yi-lightning",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": job["prompt"]},
        ],
    )
    result = {}
    try:
        if job["stream"]:
            raw = client.chat.completions.with_raw_response.create(
                stream=True, stream_options={"include_usage": True}, **args
            )
            text, finish, usage = "", None, None
            for chunk in raw.parse():
                if chunk.usage is not None:
                    usage = chunk.usage.total_tokens
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
        else:
            raw = client.chat.completions.with_raw_response.create(**args)
            completion = raw.parse()
            text = completion.choices[0].message.content
            finish = completion.choices[0].finish_reason
            usage = completion.usage.total_tokens if completion.usage else None
        result = {
            "text": text,
            "finish": finish,
            "usage": usage,
            "cache": raw.headers.get("x-portkey-cache-status"),
            "similarity": raw.headers.get("x-deja-similarity"),
        }
    except openai.APIError as e:
        result = {"error": type(e).__name__, "message": e.message, "status": getattr(e, "status_code", None)}
    print(json.dumps(result, ensure_ascii=False), flush=True)
