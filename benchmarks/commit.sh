# Sourced by the benchmark scripts: `commit_paths MESSAGE PATH...` commits those paths alone (nothing else staged is
# taken), and only when they changed. Others may be committing in this working tree meanwhile (a session's own
# commits, another benchmark): while git's index lock is held it tries again, every 10 s, six times.
commit_paths() {
    local message=$1
    shift
    for try in 1 2 3 4 5 6; do
        git add -- "$@" && { git diff --cached --quiet -- "$@" || git commit -q -m "$message" -- "$@"; } && return
        sleep 10
    done
    echo "could not commit $* (git's index stayed locked)" >&2
    return 1
}
