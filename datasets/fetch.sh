#!/bin/sh
# datasets/fetch.sh: downloads the data and pretrained weights that cannot
# ship with mrt, on a machine with internet access.
#
#   sh datasets/fetch.sh                 everything below
#   sh datasets/fetch.sh cifar10 sst2    only the named items
#
# Items and what they become under $MRT_CACHE (default <checkout>/cache):
#   cifar10     cifar-10-batches-bin/   CIFAR-10 binary batches (md5-checked archive)
#   cifar100    cifar-100-binary/       CIFAR-100 binary batches (md5-checked archive)
#   sst2        SST-2/                  GLUE SST-2: train.tsv, dev.tsv, test.tsv
#   resnet34    weights/resnet34.safetensors   timm/resnet34.tv_in1k model.safetensors
#   resnet50    weights/resnet50.safetensors   timm/resnet50.tv_in1k model.safetensors
#   distilbert  distilbert-base-uncased/       model.safetensors, vocab.txt, config.json
#
# An item whose target exists is skipped. Every download goes to a ".part"
# file and every archive is unpacked into a staging folder, both renamed
# into place when complete, so an interrupted run leaves no half item.
# Needs curl or wget, tar, md5sum, and unzip or python3 for SST-2.

set -u

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${MRT_CACHE:-$root/cache}

CIFAR10_URL=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
CIFAR10_MD5=c32a1d4ab5d03f1284b67883e8d87530
CIFAR100_URL=https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz
CIFAR100_MD5=03b5dce01913d631647c71ecec9e9cb8
SST2_URL=https://dl.fbaipublicfiles.com/glue/data/SST-2.zip
HF=https://huggingface.co

fail() {
    echo "fetch: $*" >&2
    exit 1
}

# download URL FILE: fetches URL into FILE through FILE.part.
download() {
    echo "fetch: $1"
    mkdir -p "$(dirname "$2")" || fail "cannot create the folder of $2"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 -o "$2.part" "$1" || fail "download of $1 failed (curl); rerun to retry"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2.part" "$1" || fail "download of $1 failed (wget); rerun to retry"
    else
        fail "neither curl nor wget is installed (apt-get install curl)"
    fi
    mv "$2.part" "$2" || fail "cannot rename $2.part to $2"
}

# check_md5 FILE MD5: deletes FILE and fails unless its md5 matches.
check_md5() {
    sum=$(md5sum "$1" | cut -d' ' -f1)
    if [ "$sum" != "$2" ]; then
        rm -f "$1"
        fail "$1 has md5 $sum, expected $2 (corrupt download, deleted); rerun to retry"
    fi
}

# fetch_cifar NAME URL MD5 FOLDER: downloads, checks and unpacks one archive
# whose single top-level folder is FOLDER.
fetch_cifar() {
    [ -d "$cache/$4" ] && return 0
    archive="$cache/downloads/$(basename "$2")"
    [ -f "$archive" ] || download "$2" "$archive"
    check_md5 "$archive" "$3"
    staging="$cache/.staging.$1.$$"
    rm -rf "$staging"
    mkdir -p "$staging" || fail "cannot create $staging"
    tar -xzf "$archive" -C "$staging" || fail "unpacking $archive failed"
    [ -d "$staging/$4" ] || fail "$archive does not contain the folder $4"
    mv "$staging/$4" "$cache/$4" && rm -rf "$staging" && rm -f "$archive"
}

fetch_sst2() {
    [ -d "$cache/SST-2" ] && return 0
    archive="$cache/downloads/SST-2.zip"
    [ -f "$archive" ] || download "$SST2_URL" "$archive"
    staging="$cache/.staging.sst2.$$"
    rm -rf "$staging"
    mkdir -p "$staging" || fail "cannot create $staging"
    if command -v unzip >/dev/null 2>&1; then
        unzip -q "$archive" -d "$staging" || fail "unpacking $archive failed"
    else
        python3 -m zipfile -e "$archive" "$staging" || fail "unpacking $archive failed"
    fi
    for f in train.tsv dev.tsv test.tsv; do
        [ -f "$staging/SST-2/$f" ] || fail "$archive does not contain SST-2/$f"
    done
    mv "$staging/SST-2" "$cache/SST-2" && rm -rf "$staging" && rm -f "$archive"
}

# fetch_file REPO FILE TARGET: downloads one file of a Hugging Face model repository.
fetch_file() {
    [ -f "$3" ] && return 0
    download "$HF/$1/resolve/main/$2" "$3"
}

fetch_distilbert() {
    for f in model.safetensors vocab.txt config.json; do
        fetch_file distilbert/distilbert-base-uncased "$f" "$cache/distilbert-base-uncased/$f"
    done
}

items=${*:-cifar10 cifar100 sst2 resnet34 resnet50 distilbert}
for item in $items; do
    case $item in
    cifar10) fetch_cifar cifar10 "$CIFAR10_URL" "$CIFAR10_MD5" cifar-10-batches-bin ;;
    cifar100) fetch_cifar cifar100 "$CIFAR100_URL" "$CIFAR100_MD5" cifar-100-binary ;;
    sst2) fetch_sst2 ;;
    resnet34 | resnet50)
        fetch_file "timm/$item.tv_in1k" model.safetensors "$cache/weights/$item.safetensors"
        ;;
    distilbert) fetch_distilbert ;;
    *) fail "unknown item '$item' (expected cifar10, cifar100, sst2, resnet34, resnet50 or" \
        "distilbert)" ;;
    esac
done
