"""Drives Google's own Python SDK (google-genai) against a base URL and prints what it returned.

Usage: calls.py BASE_URL API_KEY MODE   (MODE: gemini-v1, gemini-v1beta, vertex)

The Rust end-to-end tests run this once against the gateway (with a Tollgate key) and once
straight against the fake upstream (with the provider key) and compare the two outputs.
"""

import json
import os
import sys
import tempfile

from google import genai
from google.genai import errors, types


def dump(obj):
    if isinstance(obj, list):
        return [dump(o) for o in obj]
    return obj.model_dump(mode="json", exclude_none=True, exclude={"sdk_http_response"})


def error_of(fn):
    try:
        fn()
    except errors.APIError as e:
        return {"code": e.code, "status": e.status, "message": e.message}
    return {"code": None}


def gemini(base_url, api_key, version):
    client = genai.Client(api_key=api_key, http_options=types.HttpOptions(base_url=base_url, api_version=version))
    out = {}
    out["generate_content"] = dump(client.models.generate_content(model="gemini-2.5-flash", contents="why is the sky blue"))
    out["generate_content_stream"] = dump(list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="tell me a story")))
    out["count_tokens"] = dump(client.models.count_tokens(model="gemini-2.5-flash", contents="count these words"))
    out["embed_content"] = dump(client.models.embed_content(model="gemini-embedding-001", contents=["one", "two"]))
    out["image_output"] = dump(client.models.generate_content(model="gemini-2.5-flash-image", contents="a cat on a mat"))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("hello world")
    try:
        uploaded = client.files.upload(file=f.name, config=types.UploadFileConfig(display_name="hello.txt", mime_type="text/plain"))
    finally:
        os.unlink(f.name)
    out["upload"] = dump(uploaded)
    out["error_429"] = error_of(lambda: client.models.generate_content(model="error-429", contents="x"))
    out["error_500"] = error_of(lambda: client.models.generate_content(model="error-500", contents="x"))
    return out


def vertex(base_url, api_key):
    client = genai.Client(vertexai=True, api_key=api_key, http_options=types.HttpOptions(base_url=base_url))
    out = {}
    out["generate_content"] = dump(client.models.generate_content(model="gemini-2.5-flash", contents="why is the sky blue"))
    out["generate_content_stream"] = dump(list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="tell me a story")))
    out["generate_images"] = dump(client.models.generate_images(
        model="imagen-4.0-generate-001", prompt="a cat", config=types.GenerateImagesConfig(number_of_images=3)))
    op = client.models.generate_videos(
        model="veo-3.1-generate-001", prompt="a cat", config=types.GenerateVideosConfig(number_of_videos=2, duration_seconds=8))
    polls = 0
    while not op.done and polls < 5:
        op = client.operations.get(op)
        polls += 1
    out["generate_videos"] = dump(op)
    out["error_429"] = error_of(lambda: client.models.generate_content(model="error-429", contents="x"))
    return out


def main():
    base_url, api_key, mode = sys.argv[1:4]
    if mode == "vertex":
        out = vertex(base_url, api_key)
    else:
        out = gemini(base_url, api_key, mode.split("-", 1)[1])
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
