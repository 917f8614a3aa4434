# Sourced by the GPU scripts (gpu.sh, gpu_tune.sh): each step of a lent machine's call under its own time limit.

step() {  # step LIMIT_S TITLE COMMAND...: run one step under a time limit and say how it ended
    local limit=$1 title=$2
    shift 2
    echo "=== $title ($(date +%T), limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@"
    echo "=== $title: exit $? after $((SECONDS - start))s"
}
