"""Google's Python SDK against the gateway until the first error, for the limit tests.

Usage: limit_calls.py BASE_URL API_KEY MODE N
MODE: generate | count | imagen2 | veo1
Prints {"ok": <calls that succeeded>, "error": {"code", "status", "message"} or null}.
"""

import json
import sys

from google import genai
from google.genai import errors, types


def main():
    base_url, key, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode in ("imagen2", "veo1"):
        client = genai.Client(vertexai=True, api_key=key, http_options=types.HttpOptions(base_url=base_url))
    else:
        client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url, api_version="v1beta"))
    ok, error = 0, None
    for _ in range(n):
        try:
            if mode == "generate":
                client.models.generate_content(model="gemini-2.5-flash", contents="why is the sky blue")
            elif mode == "count":
                client.models.count_tokens(model="gemini-2.5-flash", contents="why is the sky blue")
            elif mode == "imagen2":
                client.models.generate_images(model="imagen-4.0-generate-001", prompt="a cat",
                                              config=types.GenerateImagesConfig(number_of_images=2))
            elif mode == "veo1":
                client.models.generate_videos(model="veo-3.1-generate-001", prompt="a cat",
                                              config=types.GenerateVideosConfig(number_of_videos=1, duration_seconds=8))
            ok += 1
        except errors.APIError as e:
            error = {"code": e.code, "status": e.status, "message": e.message}
            break
    json.dump({"ok": ok, "error": error}, sys.stdout)


if __name__ == "__main__":
    main()
