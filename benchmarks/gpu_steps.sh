# Sourced by the GPU scripts (gpu.sh, gpu_tune.sh): the data a lent machine receives, and each step of its call
# under its own time limit.

step() {  # step LIMIT_S TITLE COMMAND...: run one step under a time limit and say how it ended
    local limit=$1 title=$2
    shift 2
    echo "=== $title ($(date +%T), limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@"
    echo "=== $title: exit $? after $((SECONDS - start))s"
}

data_folder() {  # data_folder DATA DIR: DATA itself, or for a .tar.xz of an image folder, that folder unpacked in DIR
    if [[ $1 == *.tar.xz ]]; then
        mkdir -p "$2" && tar xJf "$1" -C "$2" && find "$2" -mindepth 1 -maxdepth 1 -type d | head -1
    else
        echo "$1"
    fi
}
