#!/usr/bin/env bash
# Builds the library and generates its Kotlin, Swift and Python bindings into
# target/bindings/{kotlin,swift,python}. PROFILE=release builds and reads a release library.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-debug}"
release=()
if [ "$profile" = release ]; then release=(--release); fi
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
case "$(uname -s)" in
    Darwin) library="libtether_ffi.dylib" ;;
    *) library="libtether_ffi.so" ;;
esac

# The generator first (it needs the `cli` feature), then the library without it, so the
# library left in target/ is the lean one the app ships.
cargo build -p ffi --features cli --bin uniffi-bindgen "${release[@]}"
cargo build -p ffi --lib "${release[@]}"

for language in kotlin swift python; do
    out="$target_dir/bindings/$language"
    rm -rf "$out"
    "$target_dir/$profile/uniffi-bindgen" generate --library "$target_dir/$profile/$library" \
        --language "$language" --out-dir "$out" --no-format --config ffi/bindgen.toml
    echo "$language: $out"
done
