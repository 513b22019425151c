"""Google's Python SDK as two organizations sharing one gateway, for the isolation test.

Usage: isolation_calls.py BASE_URL KEY_A KEY_B
Org A uploads a file and makes a cache; org B, with its own key, tries to use them the way the
SDK offers. Prints a JSON object: for each call, {"ok": <result>} or {"error": {code, status,
message}}.
"""

import json
import sys
import tempfile

from google import genai
from google.genai import errors, types


def attempt(fn):
    try:
        return {"ok": fn()}
    except errors.APIError as e:
        return {"error": {"code": e.code, "status": e.status, "message": e.message}}


def main():
    base_url, key_a, key_b = sys.argv[1], sys.argv[2], sys.argv[3]
    opts = types.HttpOptions(base_url=base_url, api_version="v1beta")
    a = genai.Client(api_key=key_a, http_options=opts)
    b = genai.Client(api_key=key_b, http_options=opts)
    out = {}
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("acme's private notes")
        f.flush()
        file_a = a.files.upload(file=f.name, config=types.UploadFileConfig(display_name="sdk acme", mime_type="text/plain"))
    cache_a = a.caches.create(model="gemini-2.5-flash", config=types.CreateCachedContentConfig(display_name="sdk-acme-cache", contents=["a long document"]))
    out["a_file"] = file_a.name
    out["a_cache"] = cache_a.name
    out["a_get_file"] = attempt(lambda: a.files.get(name=file_a.name).name)
    out["a_list_files"] = attempt(lambda: [x.name for x in a.files.list()])
    out["b_get_file"] = attempt(lambda: b.files.get(name=file_a.name).name)
    out["b_delete_file"] = attempt(lambda: b.files.delete(name=file_a.name) and None)
    out["b_list_files"] = attempt(lambda: [x.name for x in b.files.list()])
    out["b_get_cache"] = attempt(lambda: b.caches.get(name=cache_a.name).name)
    out["b_generate_with_file"] = attempt(lambda: b.models.generate_content(model="gemini-2.5-flash", contents=[file_a, "summarize"]).text)
    out["b_generate_with_cache"] = attempt(lambda: b.models.generate_content(
        model="gemini-2.5-flash", contents="summarize", config=types.GenerateContentConfig(cached_content=cache_a.name)).text)
    out["a_generate_with_file"] = attempt(lambda: a.models.generate_content(model="gemini-2.5-flash", contents=[file_a, "summarize"]).text)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
